#!/bin/sh
# Start `mlflow server` from environment variables; passwords from files (Compose secrets).
#   MLFLOW_DB_HOST, MLFLOW_DB_PORT (5432), MLFLOW_DB_USER (automl), MLFLOW_DB_NAME (mlflow)
#   and MLFLOW_DB_PASSWORD_FILE   the PostgreSQL backend store, or instead
#   MLFLOW_BACKEND_STORE_URI      the whole URI (or MLFLOW_BACKEND_STORE_URI_FILE)
#   MLFLOW_ARTIFACTS_DESTINATION  where artifacts live: /mlartifacts (a volume) or s3://bucket/path
#   MLFLOW_S3_ENDPOINT_URL        an S3-compatible endpoint (MinIO), with AWS_ACCESS_KEY_ID and
#                                 AWS_SECRET_ACCESS_KEY(_FILE), read for s3:// destinations only
#   MLFLOW_AUTH                   basic (the default) or none; none only when MLFLOW_BIND (the
#                                 address the port is published on) is the loopback address
#   MLFLOW_ADMIN_USERNAME (admin) / MLFLOW_ADMIN_PASSWORD_FILE   the basic-auth admin
#   MLFLOW_DEFAULT_PERMISSION     what other users may do unless granted (NO_PERMISSIONS)
#   MLFLOW_FLASK_SERVER_SECRET_KEY(_FILE)  signs CSRF tokens (random when unset: one server only)
#   MLFLOW_WORKERS                server processes (default 1)
#   MLFLOW_HOST / MLFLOW_PORT     where to listen in the container (default 0.0.0.0:5000)
set -eu
# secrets.sh lies beside this script in the image, in deploy/ in a checkout.
here=$(dirname "$0")
# shellcheck source=deploy/secrets.sh
if [ -r "$here/secrets.sh" ]; then . "$here/secrets.sh"; else . "$here/../deploy/secrets.sh"; fi

# Refusals first: nothing below may start when the server would be open to anyone.
: "${MLFLOW_AUTH:=basic}"
case $MLFLOW_AUTH in
    basic) ;;
    none)
        # Inside a container the server listens on every interface; what decides who can
        # reach it is the address Compose publishes the port on, hence MLFLOW_BIND.
        exposed=${MLFLOW_BIND:-${MLFLOW_HOST:-0.0.0.0}}
        case $exposed in
            127.0.0.1 | localhost | ::1 | '[::1]') ;;
            *) secret_refuse "MLFLOW_AUTH=none with the server published on $exposed; keep MLFLOW_AUTH=basic, or publish on MLFLOW_BIND=127.0.0.1 only" ;;
        esac
        ;;
    *) secret_refuse "MLFLOW_AUTH must be basic or none, not '$MLFLOW_AUTH'" ;;
esac
if [ "$MLFLOW_AUTH" = basic ]; then
    secret_load MLFLOW_ADMIN_USERNAME
    : "${MLFLOW_ADMIN_USERNAME:=admin}"
    : "${MLFLOW_DEFAULT_PERMISSION:=NO_PERMISSIONS}"
    case $MLFLOW_DEFAULT_PERMISSION in
        NO_PERMISSIONS | READ | USE | EDIT | MANAGE) ;;
        *) secret_refuse "MLFLOW_DEFAULT_PERMISSION must be NO_PERMISSIONS, READ, USE, EDIT or MANAGE" ;;
    esac
    secret_read MLFLOW_ADMIN_PASSWORD
fi

secret_load MLFLOW_BACKEND_STORE_URI
if [ -z "$MLFLOW_BACKEND_STORE_URI" ]; then
    [ -n "${MLFLOW_DB_HOST:-}" ] ||
        secret_refuse "set MLFLOW_DB_HOST, MLFLOW_DB_USER, MLFLOW_DB_NAME and MLFLOW_DB_PASSWORD_FILE (or MLFLOW_BACKEND_STORE_URI)"
    secret_read MLFLOW_DB_PASSWORD
    MLFLOW_BACKEND_STORE_URI=$(postgres_url "${MLFLOW_DB_USER:-automl}" "$MLFLOW_DB_PASSWORD" \
        "$MLFLOW_DB_HOST" "${MLFLOW_DB_PORT:-5432}" "${MLFLOW_DB_NAME:-mlflow}")
fi
# In the environment rather than on the command line, where `ps` would show its password.
export MLFLOW_BACKEND_STORE_URI
: "${MLFLOW_ARTIFACTS_DESTINATION:=/mlartifacts}"
export MLFLOW_ARTIFACTS_DESTINATION
: "${MLFLOW_WORKERS:=1}"
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION="${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}"
case $MLFLOW_ARTIFACTS_DESTINATION in
    s3://*)
        secret_load AWS_ACCESS_KEY_ID
        if [ -n "${AWS_SECRET_ACCESS_KEY:-}${AWS_SECRET_ACCESS_KEY_FILE:-}" ]; then
            secret_read AWS_SECRET_ACCESS_KEY
            export AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
        fi
        ;;
esac

set -- mlflow server --serve-artifacts \
    --host "${MLFLOW_HOST:-0.0.0.0}" --port "${MLFLOW_PORT:-5000}" --workers "$MLFLOW_WORKERS" "$@"

if [ "$MLFLOW_AUTH" = basic ]; then
    # configparser reads % as interpolation: a percent-encoded password in the URI, or a %
    # in a password, must be written as %%.
    ini() { printf '%s' "$1" | sed 's/%/%%/g'; }
    umask 077
    config=$(mktemp "${TMPDIR:-/tmp}/basic_auth.XXXXXX")
    cat >"$config" <<INI
[mlflow]
default_permission = $MLFLOW_DEFAULT_PERMISSION
database_uri = $(ini "${MLFLOW_AUTH_DATABASE_URI:-$MLFLOW_BACKEND_STORE_URI}")
admin_username = $(ini "$MLFLOW_ADMIN_USERNAME")
admin_password = $(ini "$MLFLOW_ADMIN_PASSWORD")
INI
    export MLFLOW_AUTH_CONFIG_PATH="$config"
    secret_load MLFLOW_FLASK_SERVER_SECRET_KEY
    if [ -z "$MLFLOW_FLASK_SERVER_SECRET_KEY" ]; then
        MLFLOW_FLASK_SERVER_SECRET_KEY=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
    fi
    export MLFLOW_FLASK_SERVER_SECRET_KEY
    set -- "$@" --app-name basic-auth
fi
echo "starting: mlflow server (artifacts: $MLFLOW_ARTIFACTS_DESTINATION, workers: $MLFLOW_WORKERS, auth: $MLFLOW_AUTH)"
exec "$@"
