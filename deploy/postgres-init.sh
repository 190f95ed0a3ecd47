#!/bin/sh
# Run once by the postgres image on a new volume: one database for Optuna, one for MLflow.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<SQL
CREATE DATABASE optuna;
CREATE DATABASE mlflow;
SQL
