#!/bin/sh
# kube-sim stand-in for the official postgres image's docker-entrypoint.sh.
# Starts a throwaway PostgreSQL (the host's major version $PG_MAJOR) bound to the pod IP, with
# its data directory inside the pod's directory, honouring POSTGRES_PASSWORD(_FILE),
# POSTGRES_USER, POSTGRES_DB, POSTGRES_HOST_AUTH_METHOD and POSTGRES_INITDB_ARGS.
# The server is exec'd in the foreground (as the postgres user) so the stop signal reaches it.
set -eu

PG_MAJOR="${PG_MAJOR:-15}"
PGBIN="${PGBIN:-/usr/lib/postgresql/$PG_MAJOR/bin}"
: "${SIM_POD_DIR:?must run under the kube-sim runner}"
: "${SIM_POD_IP:?must run under the kube-sim runner}"

# Container paths that no volume maps live under the pod's private root.
is_mapped() {
	env | sed -n 's/^SIM_MOUNT_[A-Z0-9_]*=//p' | while IFS= read -r dir; do
		case "$1" in "$dir" | "$dir"/*) echo yes; break ;; esac
	done
}
host_path() {
	case "$1" in
	"$SIM_POD_DIR" | "$SIM_POD_DIR"/*) printf '%s' "$1" ;;
	*) if [ -n "$(is_mapped "$1")" ]; then printf '%s' "$1"; else printf '%s' "$SIM_POD_DIR/root$1"; fi ;;
	esac
}

as_postgres() {
	if [ "$(id -u)" = 0 ]; then
		setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"
	else
		"$@"
	fi
}

if [ "$#" -eq 0 ]; then set -- postgres; fi
case "$1" in -*) set -- postgres "$@" ;; esac
if [ "$1" != postgres ]; then
	exec "$@"
fi
shift

PGDATA="$(host_path "${PGDATA:-/var/lib/postgresql/data}")"
SOCKDIR="$SIM_POD_DIR/run/postgresql"
mkdir -p "$PGDATA" "$SOCKDIR"
if [ "$(id -u)" = 0 ]; then chown postgres:postgres "$PGDATA" "$SOCKDIR"; fi
chmod 700 "$PGDATA"

if [ -n "${POSTGRES_PASSWORD_FILE:-}" ]; then
	POSTGRES_PASSWORD="$(cat "$POSTGRES_PASSWORD_FILE")"
fi
POSTGRES_USER="${POSTGRES_USER:-postgres}"
POSTGRES_DB="${POSTGRES_DB:-$POSTGRES_USER}"

if [ ! -s "$PGDATA/PG_VERSION" ]; then
	if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "${POSTGRES_HOST_AUTH_METHOD:-}" != trust ]; then
		echo 'Error: Database is uninitialized and superuser password is not specified.' >&2
		echo '       You must specify POSTGRES_PASSWORD to a non-empty value for the superuser.' >&2
		exit 1
	fi
	AUTH="${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}"
	PWFILE="$SIM_POD_DIR/run/postgresql/.pwfile"
	(umask 077 && printf '%s\n' "${POSTGRES_PASSWORD:-}" >"$PWFILE")
	if [ "$(id -u)" = 0 ]; then chown postgres:postgres "$PWFILE"; fi
	# shellcheck disable=SC2086 # POSTGRES_INITDB_ARGS is a word list, as in the official image
	as_postgres "$PGBIN/initdb" -D "$PGDATA" -U "$POSTGRES_USER" --pwfile="$PWFILE" \
		--auth-local=trust --auth-host="$AUTH" --no-sync ${POSTGRES_INITDB_ARGS:-} >/dev/null
	rm -f "$PWFILE"
	printf 'host all all all %s\n' "$AUTH" >>"$PGDATA/pg_hba.conf"
	if [ "$POSTGRES_DB" != postgres ]; then
		quoted="$(printf '%s' "$POSTGRES_DB" | sed 's/"/""/g')"
		printf 'CREATE DATABASE "%s";\n' "$quoted" |
			as_postgres "$PGBIN/postgres" --single -D "$PGDATA" -c fsync=off -c unix_socket_directories="$SOCKDIR" postgres >/dev/null
	fi
	echo "kube-sim postgres: initialized $PGDATA"
fi

exec setpriv --reuid=postgres --regid=postgres --init-groups -- \
	"$PGBIN/postgres" -D "$PGDATA" \
	-c listen_addresses="$SIM_POD_IP" \
	-c port="${PGPORT:-5432}" \
	-c unix_socket_directories="$SOCKDIR" \
	"$@"
