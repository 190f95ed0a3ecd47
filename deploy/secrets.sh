# shellcheck shell=sh
# Passwords for the entrypoints (sourced, POSIX sh: the postgres, MinIO, MLflow and worker
# images all run it). A password comes from VAR or from the file VAR_FILE names (a Compose
# secret, so that `docker inspect` shows a path, not the password), and one that protects
# nothing (empty, short, a placeholder copied from an example) stops the container before
# anything starts: one line on stderr, exit 1, the value never printed.
#
#   secret_read NAME [FILE]   NAME (not exported) from NAME, or from FILE / NAME_FILE; checked
#   secret_load NAME [FILE]   the same without the check, for values that are not passwords
#   secret_check NAME VALUE   the check alone

# The one line, then exit: a sourcing entrypoint stops here, before it starts anything.
secret_refuse() {
    printf 'refusing to start: %s\n' "$*" >&2
    exit 1
}

secret_load() {
    eval "_secret_value=\${$1:-}"
    # An explicit FILE argument (even empty) replaces NAME_FILE.
    if [ "$#" -ge 2 ]; then _secret_file=$2; else eval "_secret_file=\${$1_FILE:-}"; fi
    if [ -n "$_secret_file" ]; then
        # Both set is a mistake either way; refusing beats guessing which one is stale.
        [ -z "$_secret_value" ] || secret_refuse "$1 and a secret file ($_secret_file) are both set; keep one"
        [ -r "$_secret_file" ] || secret_refuse "$1: the secret file $_secret_file cannot be read by uid $(id -u) (missing, or not readable by others: see deploy/make-secrets.sh)"
        _secret_value=$(cat "$_secret_file")
        _secret_origin=" (from $_secret_file)"
    else
        _secret_origin=
    fi
    eval "$1=\$_secret_value"
    unset _secret_value _secret_file
}

secret_check() {
    _secret_lower=$(printf '%s' "$2" | tr '[:upper:]' '[:lower:]')
    # "Password123!" is still "password": placeholders with digits or symbols appended.
    _secret_stem=$_secret_lower
    while :; do
        case $_secret_stem in *[!a-z]) _secret_stem=${_secret_stem%?} ;; *) break ;; esac
    done
    case $_secret_lower in
        '') _secret_why="is empty" ;;
        *change?me* | *changeme* | *changeit* | *example* | *placeholder* | *replace?me*)
            _secret_why="is a placeholder" ;;
        *)
            case $_secret_stem in
                password | passw?rd | admin | administrator | secret | minio | minioadmin | \
                    postgres | postgresql | mlflow | automl | root | letmein | qwerty*)
                    _secret_why="is a placeholder" ;;
                *) _secret_why= ;;
            esac
            ;;
    esac
    if [ -z "$_secret_why" ]; then
        if [ "${#2}" -lt 12 ]; then
            _secret_why="is shorter than 12 characters"
        else
            case $2 in *'
'*) _secret_why="contains a line break" ;; esac
        fi
    fi
    unset _secret_lower _secret_stem
    [ -z "$_secret_why" ] || secret_refuse "$1${3:-} $_secret_why; put a strong password in its secret file (deploy/make-secrets.sh creates random ones)"
    unset _secret_why
}

secret_read() {
    secret_load "$@"
    eval "secret_check \"\$1\" \"\${$1}\" \"\$_secret_origin\""
}

# A PostgreSQL URL for SQLAlchemy with the user and password percent-encoded (an @, / or %
# in a password would otherwise change the URL's meaning); the password goes through stdin,
# not argv, so that `ps` does not show it. postgres_url USER PASSWORD HOST PORT DATABASE
postgres_url() {
    printf '%s\n%s' "$1" "$2" | python3 -c '
import sys
from urllib.parse import quote
user, password = (quote(part, safe="") for part in sys.stdin.read().split("\n", 1))
host, port, database = sys.argv[1:]
print(f"postgresql+psycopg2://{user}:{password}@{host}:{port}/{database}")
' "$3" "$4" "$5"
}
