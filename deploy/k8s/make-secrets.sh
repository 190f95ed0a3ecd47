#!/bin/sh
# The Secret deploy/k8s needs, automl-secrets (keys postgres_password and
# mlflow_admin_password), made from the same files as the compose deployment's:
# deploy/make-secrets.sh first creates the missing ones with random values (./secrets, or
# DIR, or AUTOML_SECRETS_DIR), every one is checked (deploy/secrets.sh: no empty, short or
# placeholder password), then the namespace (AUTOML_NAMESPACE, default automl) is created if
# missing, with the "restricted" Pod Security level enforced, and the Secret in it. An
# existing Secret is never replaced: PostgreSQL and MLflow store a password on first start
# only, so change it there first, then delete the Secret and run this again.
#   deploy/k8s/make-secrets.sh [--dry-run] [DIR]
# --dry-run prints the Secret's manifest (the values base64-encoded) instead, and needs no
# cluster.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=deploy/secrets.sh
. "$here/../secrets.sh"

dry_run=
if [ "${1:-}" = --dry-run ]; then
    dry_run=1
    shift
fi
dir=${1:-${AUTOML_SECRETS_DIR:-$here/../../secrets}}
namespace=${AUTOML_NAMESPACE:-automl}
name=automl-secrets

sh "$here/../make-secrets.sh" "$dir" >&2
for key in postgres_password mlflow_admin_password; do
    secret_read "$key" "$dir/$key"
done
manifest=$(kubectl create secret generic "$name" --namespace "$namespace" \
    --from-file=postgres_password="$dir/postgres_password" \
    --from-file=mlflow_admin_password="$dir/mlflow_admin_password" \
    --dry-run=client --output=yaml)
if [ -n "$dry_run" ]; then
    printf '%s\n' "$manifest"
    exit 0
fi

if ! kubectl get namespace "$namespace" >/dev/null 2>&1; then
    kubectl create namespace "$namespace"
    kubectl label namespace "$namespace" pod-security.kubernetes.io/enforce=restricted
fi
if kubectl --namespace "$namespace" get secret "$name" >/dev/null 2>&1; then
    echo "kept    secret $namespace/$name (delete it to replace it)"
else
    printf '%s\n' "$manifest" | kubectl create --filename=-
fi
