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
# docs/disaster-recovery.md restores without DataGuardian with the standard tools; the test that
# runs those commands (tests/disaster_recovery.rs) needs them: age, jq (and the aws CLI, below).
command -v age >/dev/null 2>&1 || need_apt+=(age)
command -v jq >/dev/null 2>&1 || need_apt+=(jq)
command -v valgrind >/dev/null 2>&1 || need_apt+=(valgrind)   # the CI performance gate (tests/perf_gate.rs)
# restic: `make bench` measures K8up's way (`pg_dump | restic backup --stdin`) beside ours.
command -v restic >/dev/null 2>&1 || need_apt+=(restic)
# Lua 5.1, Argo CD's Lua dialect: tests/argocd_health.rs runs the health checks with it.
command -v lua5.1 >/dev/null 2>&1 || need_apt+=(lua5.1)
# Base images for the Docker Engine, which cannot pull (scripts/base-images.sh).
command -v debootstrap >/dev/null 2>&1 || need_apt+=(debootstrap)
[ -x /usr/lib/postgresql/15/bin/initdb ] || need_apt+=(postgresql-15)
# The chart renderer (tools/helm-template: Helm's template engine, built in GOPATH mode from
# Debian's Go libraries; no helm binary and no Go module proxy are needed).
command -v go >/dev/null 2>&1 || need_apt+=(golang-go)
for pkg_dir in github.com/Masterminds/sprig:golang-github-masterminds-sprig-dev \
               sigs.k8s.io/yaml:golang-k8s-sigs-yaml-dev \
               github.com/xeipuuv/gojsonschema:golang-github-xeipuuv-gojsonschema-dev \
               github.com/gobwas/glob:golang-github-gobwas-glob-dev; do
  [ -d "/usr/share/gocode/src/${pkg_dir%%:*}" ] || need_apt+=("${pkg_dir##*:}")
done
command -v kubectl >/dev/null 2>&1 || { echo "kubectl is required (v1.32 is preinstalled on this kind of machine)" >&2; exit 1; }

if [ ${#need_apt[@]} -gt 0 ]; then
  echo "install-deps: apt-get install ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
# The Debian package may start a system MariaDB; tests start their own on free loopback ports.

# Upstream Kubernetes JSON schemas for the rendered chart and kustomize base (tests/chart.rs).
if ! command -v kubernetes-validate >/dev/null 2>&1; then
  echo "install-deps: pip install kubernetes-validate"
  python3 -m pip install -q 'kubernetes-validate>=1.32,<2'
fi
# The SMTP server of the e-mail notification tests (testkit::SmtpServer).
if ! python3 -c 'import aiosmtpd' >/dev/null 2>&1; then
  echo "install-deps: pip install aiosmtpd"
  python3 -m pip install -q 'aiosmtpd>=1.4.6,<2'
fi
# The aws CLI: docs/disaster-recovery.md unwraps a KMS-wrapped data key with `aws kms decrypt`
# (tests/disaster_recovery.rs runs it against moto).
# In a virtualenv of its own: awscli pins exact botocore versions that moto's boto3 must not
# fight over.
if ! command -v aws >/dev/null 2>&1; then
  echo "install-deps: awscli in its own virtualenv (/opt/dg-awscli)"
  python3 -m venv /opt/dg-awscli
  /opt/dg-awscli/bin/pip install -q 'awscli>=1.32,<2'
  ln -sf /opt/dg-awscli/bin/aws /usr/local/bin/aws
fi
if ! command -v moto_server >/dev/null 2>&1; then
  echo "install-deps: pip install moto[server]"
  python3 -m pip install -q 'moto[server]>=5.2.2,<6'
fi
# A fast S3-compatible server that enforces SigV4 and lacks the S3 checksum extension: the agent
# tests confirm uploads against it (ETag, read-back), and `make bench` uses it so the server is
# not the bottleneck. Built from crates.io (a few minutes, once).
if ! command -v s3s-fs >/dev/null 2>&1; then
  echo "install-deps: cargo install s3s-fs@0.14.1"
  cargo install --quiet --locked --features binary s3s-fs@0.14.1
fi
# A PostgreSQL newer than the agent's bundled client (Debian's 15): PostgreSQL 16 server and
# client binaries from the pgserver wheel on PyPI, for the client-version tests (ClientTooOld,
# picking the newest bundled major). Unpacked where the postgres OS user can run them.
PG16_DIR=/opt/dataguardian-test/postgresql-16
if [ ! -x "$PG16_DIR/bin/postgres" ]; then
  echo "install-deps: PostgreSQL 16 (pgserver wheel) into $PG16_DIR"
  tmp="$(mktemp -d)"
  python3 -m pip download -q --no-deps --only-binary=:all: -d "$tmp" 'pgserver==0.1.4'
  python3 -m zipfile -e "$tmp"/pgserver-*.whl "$tmp/x"
  # The binaries find their libpq at $ORIGIN/../../../pgserver.libs: keep the wheel's layout.
  wheel_dir="$(dirname "$PG16_DIR")/pgserver-0.1.4"
  rm -rf "$wheel_dir" "$PG16_DIR" && mkdir -p "$wheel_dir"
  cp -r "$tmp/x/pgserver" "$tmp/x/pgserver.libs" "$wheel_dir/"
  chmod -R a+rX "$wheel_dir" && chmod a+x "$wheel_dir"/pgserver/pginstall/bin/*
  ln -s "$wheel_dir/pgserver/pginstall" "$PG16_DIR"
  rm -rf "$tmp"
fi
# Supply-chain tools, built from crates.io at pinned versions: cargo-deny (`make deny`; 0.20 reads
# the current RustSec advisory format) and cargo-cyclonedx (`make sbom`). Skipped when that
# version is already installed.
cargo_tool() {
  local crate="$1" version="$2"
  if ! cargo install --list 2>/dev/null | grep -q "^$crate v$version:"; then
    echo "install-deps: cargo install $crate@$version"
    cargo install -q --locked "$crate@$version"
  fi
}
cargo_tool cargo-deny 0.20.2
cargo_tool cargo-cyclonedx 0.5.9
echo "install-deps: ok"
