#!/usr/bin/env bash
# `make sbom`: CycloneDX 1.5 SBOMs (JSON) into target/sbom/ (DG_SBOM_DIR overrides):
#   dataguardian.cdx.json, kubectl-dataguardian.cdx.json  the crates compiled into each binary
#                                                         (cargo-cyclonedx; no dev or build deps)
#   image-dataguardian.cdx.json                           the Debian packages of the agent image
#   image-dataguardian-operator.cdx.json                  the Debian packages of the operator image
# then checks that each lists what it must (scripts/sbom-check.py). The image SBOMs read the
# dpkg database out of the image (/var/lib/dpkg/status, or status.d/ in the operator image,
# which has no package manager); images missing on the Docker Engine are built first with
# scripts/build-images.sh --profile debug (the packages do not depend on the profile).
#   --binaries-only   only the crate SBOMs (no Docker needed)
set -euo pipefail
cd "$(dirname "$0")/.."

out="${DG_SBOM_DIR:-target/sbom}"
binaries_only=0
case "${1:-}" in
  --binaries-only) binaries_only=1 ;;
  "") ;;
  *) echo "usage: $0 [--binaries-only]" >&2; exit 2 ;;
esac
command -v cargo-cyclonedx >/dev/null 2>&1 || {
  echo "sbom: cargo-cyclonedx is not installed (scripts/install-deps.sh installs it)" >&2
  exit 1
}
mkdir -p "$out"

# cargo-cyclonedx writes <bin>_bin.cdx.json beside each package's Cargo.toml: move the product's
# two binaries out, drop the test tools' (kube-sim, sync-chart).
generated=(dataguardian_bin.cdx.json kubectl-dataguardian_bin.cdx.json
           sim/kube-sim_bin.cdx.json testkit/sync-chart_bin.cdx.json)
trap 'rm -f "${generated[@]}"' EXIT
cargo cyclonedx --format json --spec-version 1.5 --describe binaries --no-build-deps -q
mv dataguardian_bin.cdx.json "$out/dataguardian.cdx.json"
mv kubectl-dataguardian_bin.cdx.json "$out/kubectl-dataguardian.cdx.json"
echo "sbom: $out/dataguardian.cdx.json, $out/kubectl-dataguardian.cdx.json"

if [ "$binaries_only" = 1 ]; then
  python3 scripts/sbom-check.py --binaries-only "$out"
  exit
fi

version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
registry="${DG_IMAGE_REGISTRY:-ghcr.io/dataguardian}"
for name in dataguardian dataguardian-operator; do
  docker image inspect "$registry/$name:$version" >/dev/null 2>&1 || {
    echo "sbom: $registry/$name:$version is missing: scripts/build-images.sh --profile debug"
    scripts/build-images.sh --profile debug
  }
done

# Both images start FROM the same Debian base: its release codename qualifies every purl.
codename="$(docker run --rm --entrypoint sh debian:bookworm-slim -c '. /etc/os-release; echo "$VERSION_CODENAME"')"
tmp="$(mktemp -d)"
trap 'rm -f "${generated[@]}"; rm -rf "$tmp"; [ -z "${cid:-}" ] || docker rm -f "$cid" >/dev/null 2>&1 || true' EXIT
for name in dataguardian dataguardian-operator; do
  image="$registry/$name:$version"
  cid="$(docker create "$image")"
  mkdir -p "$tmp/$name"
  docker cp -q "$cid:/var/lib/dpkg" "$tmp/$name/"
  docker rm -f "$cid" >/dev/null
  cid=""
  digest="$(docker image inspect --format '{{.Id}}' "$image")"
  python3 scripts/sbom-check.py --deb "$tmp/$name/dpkg" "$image" "$digest" "$version" "$codename" \
    > "$out/image-$name.cdx.json"
  echo "sbom: $out/image-$name.cdx.json"
done

python3 scripts/sbom-check.py "$out"
