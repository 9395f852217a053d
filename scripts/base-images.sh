#!/usr/bin/env bash
# Makes the base images the Dockerfiles start FROM, on a Docker Engine that cannot pull:
# `debootstrap --variant=minbase bookworm` into a temp dir, then `docker import` under the name
# the Dockerfiles use (debian:bookworm-slim). In a registry-connected pipeline the same
# Dockerfiles pull the real image instead; nothing here is needed there.
#
# Idempotent: an image that already exists is skipped. Needs root (debootstrap) and Debian's
# mirror (apt's own sources are reused; DG_DEBIAN_MIRROR overrides).
set -euo pipefail

command -v docker >/dev/null || { echo "base-images: docker is required" >&2; exit 1; }
docker info >/dev/null 2>&1 || { echo "base-images: the Docker Engine is not running" >&2; exit 1; }

mirror="${DG_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
security="${DG_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"

make_debian() {
  local tag="$1" suite="$2"
  if docker image inspect "$tag" >/dev/null 2>&1; then
    echo "base-images: $tag exists"
    return
  fi
  if ! command -v debootstrap >/dev/null; then
    echo "base-images: apt-get install debootstrap"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  fi
  local root
  root="$(mktemp -d /var/tmp/dg-rootfs.XXXXXX)"
  trap 'rm -rf "$root"' RETURN
  echo "base-images: debootstrap $suite into $root"
  debootstrap --variant=minbase "$suite" "$root" "$mirror" >"$root.log" 2>&1 || {
    tail -20 "$root.log" >&2; rm -f "$root.log"; exit 1; }
  rm -f "$root.log"
  cat >"$root/etc/apt/sources.list" <<EOF
deb $mirror $suite main
deb $mirror $suite-updates main
deb $security $suite-security main
EOF
  # As the official slim images: no docs or man pages, no apt caches, no machine-id.
  cat >"$root/etc/dpkg/dpkg.cfg.d/docker-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
EOF
  cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
APT::Install-Recommends "false";
EOF
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/usr/share/doc/* \
    "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/var/log/*.log
  : >"$root/etc/machine-id"
  echo "base-images: docker import $tag"
  tar --numeric-owner -C "$root" -c . | docker import \
    --change 'CMD ["bash"]' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    - "$tag" >/dev/null
}

make_debian debian:bookworm-slim bookworm
echo "base-images: ok"
