#!/bin/sh
# Create the Compose secrets docker-compose.yml needs, each a random password, in ./secrets
# (beside docker-compose.yml; AUTOML_SECRETS_DIR or the first argument names another folder).
# Existing files are never touched: to rotate one, change it where it is used, then replace
# the file. PostgreSQL and MLflow store their password on first start only.
#   deploy/make-secrets.sh [DIR]
set -eu
dir=${1:-${AUTOML_SECRETS_DIR:-$(cd "$(dirname "$0")/.." && pwd)/secrets}}

# The folder is what keeps other users of this machine out: created 0700, and made 0700
# again when it exists. The files in it are readable by others on purpose: Compose mounts
# a secret file with its owner and mode from this machine, and the mlflow and worker
# containers read it as uid 10001, which is not this machine's user.
umask 077
mkdir -p "$dir"
chmod 700 "$dir"
for name in postgres_password mlflow_admin_password minio_root_password; do
    file=$dir/$name
    if [ -e "$file" ]; then
        echo "kept    $file"
        continue
    fi
    # 16 random bytes as 32 hex digits: 128 bits, within MinIO's 40-character limit, and
    # nothing a URL, a shell or an ini file would read specially.
    value=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
    # noclobber: if the file appeared meanwhile, fail rather than overwrite it.
    (set -C && printf '%s' "$value" >"$file")
    chmod 644 "$file"
    echo "created $file"
done
