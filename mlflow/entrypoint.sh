#!/bin/sh
# Start `mlflow server` from environment variables (or Docker secrets, *_FILE).
#   MLFLOW_BACKEND_STORE_URI      postgresql+psycopg2://USER:PASSWORD@HOST:5432/mlflow (required)
#   MLFLOW_ARTIFACTS_DESTINATION  where artifacts live: /mlartifacts (a volume) or s3://bucket/path
#   MLFLOW_S3_ENDPOINT_URL        an S3-compatible endpoint (MinIO), with AWS_ACCESS_KEY_ID/_SECRET
#   MLFLOW_AUTH=basic             turn on basic authentication; the admin comes from
#   MLFLOW_ADMIN_USERNAME / MLFLOW_ADMIN_PASSWORD (or MLFLOW_ADMIN_PASSWORD_FILE), and
#   MLFLOW_FLASK_SERVER_SECRET_KEY signs its CSRF tokens (random when unset: one server only)
#   MLFLOW_WORKERS                server processes (default 1)
#   MLFLOW_HOST / MLFLOW_PORT     where to listen (default 0.0.0.0:5000)
set -eu

# VAR_FILE (a Docker secret) fills VAR when VAR is unset.
for name in MLFLOW_BACKEND_STORE_URI MLFLOW_ADMIN_USERNAME MLFLOW_ADMIN_PASSWORD \
    MLFLOW_FLASK_SERVER_SECRET_KEY AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY; do
    file=$(eval echo "\${${name}_FILE:-}")
    if [ -n "$file" ] && [ -z "$(eval echo "\${$name:-}")" ]; then
        export "$name=$(cat "$file")"
    fi
done
: "${MLFLOW_BACKEND_STORE_URI:?set MLFLOW_BACKEND_STORE_URI (or MLFLOW_BACKEND_STORE_URI_FILE)}"
: "${MLFLOW_ARTIFACTS_DESTINATION:=/mlartifacts}"
: "${MLFLOW_WORKERS:=1}"
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION="${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}"

set -- mlflow server \
    --backend-store-uri "$MLFLOW_BACKEND_STORE_URI" \
    --serve-artifacts --artifacts-destination "$MLFLOW_ARTIFACTS_DESTINATION" \
    --host "${MLFLOW_HOST:-0.0.0.0}" --port "${MLFLOW_PORT:-5000}" --workers "$MLFLOW_WORKERS" "$@"

if [ "${MLFLOW_AUTH:-}" = "basic" ]; then
    : "${MLFLOW_ADMIN_USERNAME:?basic auth needs MLFLOW_ADMIN_USERNAME}"
    : "${MLFLOW_ADMIN_PASSWORD:?basic auth needs MLFLOW_ADMIN_PASSWORD (or _FILE)}"
    config=/tmp/basic_auth.ini
    cat > "$config" <<INI
[mlflow]
default_permission = READ
database_uri = ${MLFLOW_AUTH_DATABASE_URI:-$MLFLOW_BACKEND_STORE_URI}
admin_username = ${MLFLOW_ADMIN_USERNAME}
admin_password = ${MLFLOW_ADMIN_PASSWORD}
INI
    chmod 600 "$config"
    export MLFLOW_AUTH_CONFIG_PATH="$config"
    if [ -z "${MLFLOW_FLASK_SERVER_SECRET_KEY:-}" ]; then
        MLFLOW_FLASK_SERVER_SECRET_KEY=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
        export MLFLOW_FLASK_SERVER_SECRET_KEY
    fi
    set -- "$@" --app-name basic-auth
fi
echo "starting: mlflow server (artifacts: $MLFLOW_ARTIFACTS_DESTINATION, workers: $MLFLOW_WORKERS, auth: ${MLFLOW_AUTH:-none})"
exec "$@"
