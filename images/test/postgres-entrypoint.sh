#!/bin/sh
# TEST ONLY: the official postgres image's entrypoint contract, for images/test/postgres.Dockerfile.
set -eu
if [ "$#" -eq 0 ]; then set -- postgres; fi
case "$1" in -*) set -- postgres "$@" ;; esac
if [ "$1" != postgres ]; then exec "$@"; fi
shift
if [ -n "${POSTGRES_PASSWORD_FILE:-}" ]; then POSTGRES_PASSWORD="$(cat "$POSTGRES_PASSWORD_FILE")"; fi
POSTGRES_USER="${POSTGRES_USER:-postgres}"
POSTGRES_DB="${POSTGRES_DB:-$POSTGRES_USER}"
mkdir -p "$PGDATA"
chmod 700 "$PGDATA" 2>/dev/null || true
if [ ! -s "$PGDATA/PG_VERSION" ]; then
	if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "${POSTGRES_HOST_AUTH_METHOD:-}" != trust ]; then
		echo 'Error: Database is uninitialized and superuser password is not specified.' >&2
		exit 1
	fi
	AUTH="${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}"
	PWFILE="$(mktemp)"
	printf '%s\n' "${POSTGRES_PASSWORD:-}" >"$PWFILE"
	# shellcheck disable=SC2086 # a word list, as in the official image
	initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile="$PWFILE" --auth-local=trust \
		--auth-host="$AUTH" --no-sync ${POSTGRES_INITDB_ARGS:-} >/dev/null
	rm -f "$PWFILE"
	printf 'host all all all %s\n' "$AUTH" >>"$PGDATA/pg_hba.conf"
	if [ "$POSTGRES_DB" != postgres ]; then
		printf 'CREATE DATABASE "%s";\n' "$(printf '%s' "$POSTGRES_DB" | sed 's/"/""/g')" |
			postgres --single -D "$PGDATA" -c fsync=off postgres >/dev/null
	fi
	echo "postgres (test image): initialized $PGDATA"
fi
exec postgres -D "$PGDATA" "$@"
