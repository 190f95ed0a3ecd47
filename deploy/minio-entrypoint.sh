#!/bin/sh
# The minio service's entrypoint (profile s3, mounted read-only beside secrets.sh): MinIO
# falls back to minioadmin/minioadmin without a password, so an empty or placeholder root
# password is refused first; then the image's own entrypoint, which reads the secret itself.
set -eu
# shellcheck source=deploy/secrets.sh
. "$(dirname "$0")/secrets.sh"
# MinIO reads MINIO_ROOT_PASSWORD_FILE as a name under /run/secrets.
file=
if [ -z "${MINIO_ROOT_PASSWORD:-}" ]; then
    file=${MINIO_ROOT_PASSWORD_FILE:-}
    case $file in '' | /*) ;; *) file=/run/secrets/$file ;; esac
fi
secret_read MINIO_ROOT_PASSWORD "$file"
exec /usr/bin/docker-entrypoint.sh "$@"
