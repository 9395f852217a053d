#!/usr/bin/env bash
# `make deny`: cargo-deny's licenses, bans, sources and advisories checks (deny.toml), offline.
# Advisories come from the RustSec snapshot ../shared/advisory-db.bundle (a git bundle beside the
# repository, DG_ADVISORY_BUNDLE to override), cloned into target/advisory-dbs under the
# directory name cargo-deny gives the default RustSec URL; nothing is fetched.
set -euo pipefail
cd "$(dirname "$0")/.."

bundle="${DG_ADVISORY_BUNDLE:-../shared/advisory-db.bundle}"
# cargo-deny 0.20 keeps the RustSec database of https://github.com/RustSec/advisory-db here.
db="target/advisory-dbs/advisory-db-3157b0e258782691"

command -v cargo-deny >/dev/null 2>&1 || {
  echo "deny: cargo-deny is not installed (scripts/install-deps.sh installs it)" >&2
  exit 1
}
[ -f "$bundle" ] || { echo "deny: no advisory database bundle at $bundle" >&2; exit 1; }

# Re-clone when the bundle's head differs from the clone's (a newer snapshot was dropped in).
want="$(git bundle list-heads "$bundle" | awk '$2 == "HEAD" || $2 ~ /refs\/heads\// {print $1; exit}')"
have="$(git -C "$db" rev-parse HEAD 2>/dev/null || true)"
if [ -z "$want" ] || [ "$want" != "$have" ]; then
  rm -rf "$db"
  mkdir -p "$(dirname "$db")"
  git clone -q "$bundle" "$db"
fi
echo "deny: RustSec snapshot $(git -C "$db" log -1 --format='%h of %cs')"

# cargo-deny reads the metadata of every target platform's crates; a machine that has only built
# for its own platform lacks some (e.g. android_system_properties), and --offline cannot get them.
# Fetch them from crates.io first (the lockfile's exact versions); advisories stay offline.
cargo fetch --locked -q

exec cargo deny --offline check --hide-inclusion-graph "$@"
