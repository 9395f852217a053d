#!/bin/sh
# TEST ONLY: the official mariadb image's entrypoint contract, for images/test/mariadb.Dockerfile.
set -eu
if [ "$#" -eq 0 ]; then set -- mariadbd; fi
case "$1" in -*) set -- mariadbd "$@" ;; esac
case "$1" in mariadbd | mysqld) shift ;; *) exec "$@" ;; esac
file_env() { eval "f=\${$1_FILE:-}"; if [ -n "$f" ]; then eval "$1=\$(cat \"\$f\")"; fi; }
file_env MARIADB_ROOT_PASSWORD; file_env MYSQL_ROOT_PASSWORD; file_env MARIADB_PASSWORD; file_env MYSQL_PASSWORD
ROOT_PASSWORD="${MARIADB_ROOT_PASSWORD:-${MYSQL_ROOT_PASSWORD:-}}"
DATABASE="${MARIADB_DATABASE:-${MYSQL_DATABASE:-}}"
USER_NAME="${MARIADB_USER:-${MYSQL_USER:-}}"
USER_PASSWORD="${MARIADB_PASSWORD:-${MYSQL_PASSWORD:-}}"
sql_escape() { printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e "s/'/\\\\'/g"; }
ident_escape() { printf '%s' "$1" | sed 's/`/``/g'; }
INIT_FILE=/run/mysqld/init.sql
if [ ! -d /var/lib/mysql/mysql ]; then
	if [ -z "$ROOT_PASSWORD" ] && [ -z "${MARIADB_ALLOW_EMPTY_ROOT_PASSWORD:-}" ]; then
		echo 'error: database is uninitialized and password option is not specified' >&2
		exit 1
	fi
	mariadb-install-db --no-defaults --datadir=/var/lib/mysql \
		--auth-root-authentication-method=normal --skip-test-db >/dev/null
	pw="$(sql_escape "$ROOT_PASSWORD")"
	(
		umask 077
		{
			echo "DELETE FROM mysql.global_priv WHERE User='root' AND Host NOT IN ('localhost', '%');"
			echo "FLUSH PRIVILEGES;"
			echo "CREATE USER IF NOT EXISTS 'root'@'%' IDENTIFIED BY '$pw';"
			echo "GRANT ALL ON *.* TO 'root'@'%' WITH GRANT OPTION;"
			echo "ALTER USER 'root'@'localhost' IDENTIFIED BY '$pw';"
			if [ -n "$DATABASE" ]; then echo "CREATE DATABASE IF NOT EXISTS \`$(ident_escape "$DATABASE")\`;"; fi
			if [ -n "$USER_NAME" ]; then
				u="$(sql_escape "$USER_NAME")"
				echo "CREATE USER IF NOT EXISTS '$u'@'%' IDENTIFIED BY '$(sql_escape "$USER_PASSWORD")';"
				if [ -n "$DATABASE" ]; then echo "GRANT ALL ON \`$(ident_escape "$DATABASE")\`.* TO '$u'@'%';"; fi
			fi
			echo "FLUSH PRIVILEGES;"
		} >"$INIT_FILE"
	)
	echo "mariadb (test image): initialized /var/lib/mysql"
fi
INIT_ARG=""
if [ -f "$INIT_FILE" ]; then INIT_ARG="--init-file=$INIT_FILE"; fi
exec mariadbd --no-defaults --datadir=/var/lib/mysql ${INIT_ARG:+"$INIT_ARG"} \
	--socket=/run/mysqld/mysqld.sock --pid-file=/run/mysqld/mysqld.pid --tmpdir=/tmp \
	--skip-name-resolve "$@"
