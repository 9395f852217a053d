#!/usr/bin/env bash
# Builds the project's images on the local Docker Engine (no registry needed):
#   ghcr.io/dataguardian/dataguardian:<version>           the agent image every Job runs
#   ghcr.io/dataguardian/dataguardian-operator:<version>  the operator image
#   postgres:15, mariadb:10.11                            TEST ONLY sandbox stand-ins (images/test/)
# from the host-built binary (`--profile debug|release`, default release, or `--binary PATH`). Base images come from
# scripts/base-images.sh. The project images are rebuilt every time (Docker's layer cache keeps
# the package layers); the test images only when missing (`--force` rebuilds them).
# Release pipelines use the same Dockerfiles with buildx; see docs/images.md.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
force=0
binary=""
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile="$2"; shift 2 ;;
    --force) force=1; shift ;;
    --binary) binary="$2"; shift 2 ;;
    *) echo "usage: $0 [--profile debug|release] [--binary PATH] [--force]" >&2; exit 2 ;;
  esac
done

version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
registry="${DG_IMAGE_REGISTRY:-ghcr.io/dataguardian}"
pg_majors="${DG_PG_MAJORS:-15}"
revision="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
created="$(date -u +%Y-%m-%dT%H:%M:%SZ)"

scripts/base-images.sh

if [ -z "$binary" ]; then
  if [ "$profile" = release ]; then
    cargo build --release --bin dataguardian
  else
    cargo build --bin dataguardian
  fi
  binary="target/$profile/dataguardian"
fi
ctx="target/image-context/$$"
rm -rf "$ctx" && mkdir -p "$ctx"
trap 'rm -rf "$ctx"' EXIT
cp "$binary" "$ctx/dataguardian"

build() {
  local tag="$1" file="$2" dir="$3"; shift 3
  echo "images: building $tag"
  docker build --network host -q -f "$file" -t "$tag" "$@" "$dir" >/dev/null 2>"$ctx/build.log" || {
    cat "$ctx/build.log" >&2; exit 1; }
}
labels=(--build-arg "VERSION=$version" --build-arg "REVISION=$revision" --build-arg "CREATED=$created")
build "$registry/dataguardian:$version" images/agent.Dockerfile "$ctx" \
  --build-arg "PG_MAJORS=$pg_majors" "${labels[@]}"
build "$registry/dataguardian-operator:$version" images/operator.Dockerfile "$ctx" "${labels[@]}"

for spec in postgres:15:postgres mariadb:10.11:mariadb; do
  tag="${spec%:*}"; name="${spec##*:}"
  if [ "$force" = 0 ] && docker image inspect "$tag" >/dev/null 2>&1; then
    echo "images: $tag exists"
    continue
  fi
  build "$tag" "images/test/$name.Dockerfile" images/test
done
echo "images: ok"
