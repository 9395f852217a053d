#!/bin/sh
# kube-sim stand-in for the official mariadb image's docker-entrypoint.sh.
# Starts a throwaway MariaDB bound to the pod IP, with its data directory inside the pod's
# directory, honouring MARIADB_ROOT_PASSWORD / MYSQL_ROOT_PASSWORD (and _FILE),
# MARIADB_ALLOW_EMPTY_ROOT_PASSWORD, MARIADB_DATABASE / MYSQL_DATABASE and
# MARIADB_USER / MARIADB_PASSWORD (or the MYSQL_ names).
# The server is exec'd in the foreground so the stop signal reaches it.
set -eu

: "${SIM_POD_DIR:?must run under the kube-sim runner}"
: "${SIM_POD_IP:?must run under the kube-sim runner}"

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
sql_escape() { printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e "s/'/\\\\'/g"; }
ident_escape() { printf '%s' "$1" | sed 's/`/``/g'; }

if [ "$#" -eq 0 ]; then set -- mariadbd; fi
case "$1" in -*) set -- mariadbd "$@" ;; esac
case "$1" in
mariadbd | mysqld) shift ;;
*) exec "$@" ;;
esac

file_env() {
	name="$1"
	eval "file=\${${name}_FILE:-}"
	if [ -n "$file" ]; then eval "$name=\$(cat \"\$file\")"; fi
}
file_env MARIADB_ROOT_PASSWORD
file_env MYSQL_ROOT_PASSWORD
file_env MARIADB_PASSWORD
file_env MYSQL_PASSWORD
ROOT_PASSWORD="${MARIADB_ROOT_PASSWORD:-${MYSQL_ROOT_PASSWORD:-}}"
ALLOW_EMPTY="${MARIADB_ALLOW_EMPTY_ROOT_PASSWORD:-${MYSQL_ALLOW_EMPTY_PASSWORD:-}}"
DATABASE="${MARIADB_DATABASE:-${MYSQL_DATABASE:-}}"
USER_NAME="${MARIADB_USER:-${MYSQL_USER:-}}"
USER_PASSWORD="${MARIADB_PASSWORD:-${MYSQL_PASSWORD:-}}"

DATADIR="$(host_path /var/lib/mysql)"
RUNDIR="$SIM_POD_DIR/run/mysqld"
mkdir -p "$DATADIR" "$RUNDIR"
RUN_AS=""
if [ "$(id -u)" = 0 ]; then
	chown mysql:mysql "$DATADIR" "$RUNDIR"
	RUN_AS="--user=mysql"
fi

INIT_FILE="$RUNDIR/init.sql"
if [ ! -d "$DATADIR/mysql" ]; then
	if [ -z "$ROOT_PASSWORD" ] && [ -z "$ALLOW_EMPTY" ]; then
		echo 'error: database is uninitialized and password option is not specified' >&2
		echo '  You need to specify one of MARIADB_ROOT_PASSWORD, MARIADB_ALLOW_EMPTY_ROOT_PASSWORD' >&2
		exit 1
	fi
	mariadb-install-db --no-defaults $RUN_AS --datadir="$DATADIR" \
		--auth-root-authentication-method=normal --skip-test-db >/dev/null
	pw="$(sql_escape "$ROOT_PASSWORD")"
	(
		umask 077
		{
			# Like the official image: only root@localhost and root@'%' remain.
			printf '%s\n' "DELETE FROM mysql.global_priv WHERE User='root' AND Host NOT IN ('localhost', '%');"
			printf '%s\n' "FLUSH PRIVILEGES;"
			printf '%s\n' "CREATE USER IF NOT EXISTS 'root'@'%' IDENTIFIED BY '$pw';"
			printf '%s\n' "GRANT ALL ON *.* TO 'root'@'%' WITH GRANT OPTION;"
			printf '%s\n' "ALTER USER 'root'@'localhost' IDENTIFIED BY '$pw';"
			if [ -n "$DATABASE" ]; then
				printf '%s\n' "CREATE DATABASE IF NOT EXISTS \`$(ident_escape "$DATABASE")\`;"
			fi
			if [ -n "$USER_NAME" ]; then
				u="$(sql_escape "$USER_NAME")"
				printf '%s\n' "CREATE USER IF NOT EXISTS '$u'@'%' IDENTIFIED BY '$(sql_escape "$USER_PASSWORD")';"
				if [ -n "$DATABASE" ]; then
					printf '%s\n' "GRANT ALL ON \`$(ident_escape "$DATABASE")\`.* TO '$u'@'%';"
				fi
			fi
			printf '%s\n' "FLUSH PRIVILEGES;"
		} >"$INIT_FILE"
	)
	if [ "$(id -u)" = 0 ]; then chown mysql:mysql "$INIT_FILE"; fi
	echo "kube-sim mariadb: initialized $DATADIR"
fi

INIT_ARG=""
if [ -f "$INIT_FILE" ]; then INIT_ARG="--init-file=$INIT_FILE"; fi
# shellcheck disable=SC2086 # RUN_AS is empty or one word
exec mariadbd --no-defaults $RUN_AS --datadir="$DATADIR" ${INIT_ARG:+"$INIT_ARG"} \
	--bind-address="$SIM_POD_IP" --port="${MARIADB_PORT:-3306}" \
	--socket="$RUNDIR/mysqld.sock" --pid-file="$RUNDIR/mysqld.pid" \
	--tmpdir="$SIM_POD_DIR/tmp" --skip-name-resolve "$@"
