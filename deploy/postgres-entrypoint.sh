#!/bin/sh
# The postgres service's entrypoint (mounted read-only beside secrets.sh): the official
# image would initialise a new volume with whatever POSTGRES_PASSWORD_FILE holds, so a
# placeholder or empty password is refused first. The official entrypoint then reads the
# file itself; the password is not passed on in the environment.
set -eu
# shellcheck source=deploy/secrets.sh
. "$(dirname "$0")/secrets.sh"
secret_read POSTGRES_PASSWORD
exec docker-entrypoint.sh "$@"
