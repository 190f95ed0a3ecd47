#!/bin/sh
# The worker image's entrypoint (services worker, dashboard and storage-proxy):
# `automl "$@"`, with its passwords read from files (Compose secrets) rather than from
# environment values `docker inspect` would show.
#   AUTOML_STORAGE                 used as it is when set; otherwise, with AUTOML_DB_HOST set,
#   AUTOML_DB_HOST, AUTOML_DB_PORT (5432), AUTOML_DB_USER (automl), AUTOML_DB_NAME (optuna)
#   and AUTOML_DB_PASSWORD_FILE    make the PostgreSQL URL (password percent-encoded)
#   MLFLOW_TRACKING_PASSWORD_FILE  MLflow's password, with MLFLOW_TRACKING_USERNAME
set -eu
# shellcheck source=deploy/secrets.sh
. "$(dirname "$0")/secrets.sh"

if [ -z "${AUTOML_STORAGE:-}" ] && [ -n "${AUTOML_DB_HOST:-}" ]; then
    secret_read AUTOML_DB_PASSWORD
    AUTOML_STORAGE=$(postgres_url "${AUTOML_DB_USER:-automl}" "$AUTOML_DB_PASSWORD" \
        "$AUTOML_DB_HOST" "${AUTOML_DB_PORT:-5432}" "${AUTOML_DB_NAME:-optuna}")
    # automl reads it from the environment (it masks the password in what it prints).
    export AUTOML_STORAGE
    unset AUTOML_DB_PASSWORD
fi
if [ -n "${MLFLOW_TRACKING_PASSWORD:-}${MLFLOW_TRACKING_PASSWORD_FILE:-}" ]; then
    secret_read MLFLOW_TRACKING_PASSWORD
    # The MLflow client reads the variable, not a file.
    export MLFLOW_TRACKING_PASSWORD
    unset MLFLOW_TRACKING_PASSWORD_FILE
fi
exec automl "$@"
