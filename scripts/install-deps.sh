#!/usr/bin/env bash
# Installs everything the tests, the demo and the benchmarks need on a fresh Debian 12 machine
# (Rust, PostgreSQL 15 and kubectl are expected to be there already). Idempotent: tools that are
# already present are not reinstalled.
set -euo pipefail

need_apt=()
command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || need_apt+=(mariadb-server)
command -v mariadb >/dev/null 2>&1 || need_apt+=(mariadb-client)
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
command -v zstd >/dev/null 2>&1 || need_apt+=(zstd)
[ -x /usr/lib/postgresql/15/bin/initdb ] || need_apt+=(postgresql-15)
command -v kubectl >/dev/null 2>&1 || { echo "kubectl is required (v1.32 is preinstalled on this kind of machine)" >&2; exit 1; }

if [ ${#need_apt[@]} -gt 0 ]; then
  echo "install-deps: apt-get install ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
# The Debian package may start a system MariaDB; tests start their own on free loopback ports.

if ! command -v moto_server >/dev/null 2>&1; then
  echo "install-deps: pip install moto[server]"
  python3 -m pip install -q 'moto[server]>=5.2.2,<6'
fi
echo "install-deps: ok"
