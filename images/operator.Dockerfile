# The operator image: the `dataguardian` binary, the shared libraries it links, CA
# certificates, a passwd entry for 65532 and the dpkg status entries of the packages those files
# come from — nothing else (no shell, no package manager).
# Runs as 65532 with a read-only root filesystem.
#
# Release path (docs/images.md): the same file with BASE pinned by digest and the binary from
# the release pipeline's Rust builder stage, built for linux/amd64 and linux/arm64 with buildx.
ARG BASE=debian:bookworm-slim
FROM ${BASE} AS collect
RUN set -eux; \
    export DEBIAN_FRONTEND=noninteractive; \
    apt-get update -qq; \
    apt-get install -y -qq --no-install-recommends ca-certificates; \
    rm -rf /var/lib/apt/lists/*
COPY dataguardian /out/usr/local/bin/dataguardian
# Exactly the libraries the binary links (and the dynamic loader), with their paths.
RUN set -eux; \
    mkdir -p /out/etc/ssl/certs /out/tmp; \
    cp /etc/ssl/certs/ca-certificates.crt /out/etc/ssl/certs/; \
    for lib in $(ldd /out/usr/local/bin/dataguardian | grep -o '/[^ ]*'); do \
      mkdir -p "/out$(dirname "$lib")"; cp -L "$lib" "/out$lib"; \
    done; \
    echo 'nonroot:x:65532:65532:nonroot:/nonexistent:/usr/sbin/nologin' > /out/etc/passwd; \
    echo 'nonroot:x:65532:' > /out/etc/group; \
    chmod 1777 /out/tmp

# The Debian packages those files come from (and ca-certificates), as dpkg status entries in
# the layout SBOM tools read in package-manager-free images (/var/lib/dpkg/status.d/<package>):
# `make sbom` lists them.
RUN set -eux; \
    mkdir -p /out/var/lib/dpkg/status.d; \
    for lib in $(ldd /out/usr/local/bin/dataguardian | grep -o '/[^ ]*'); do \
      real="$(readlink -f "$lib")"; \
      dpkg -S "$lib" 2>/dev/null || dpkg -S "$real" 2>/dev/null || dpkg -S "${real#/usr}"; \
    done | sed 's/: .*//' | tr ',' '\n' | sed 's/^ *//; s/:.*//' | sort -u > /tmp/packages; \
    echo ca-certificates >> /tmp/packages; \
    for pkg in $(sort -u /tmp/packages); do \
      dpkg-query -s "$pkg" > "/out/var/lib/dpkg/status.d/$pkg"; \
    done; \
    test -s /out/var/lib/dpkg/status.d/libc6

FROM scratch
ARG VERSION=dev
ARG REVISION=unknown
ARG CREATED=unknown
COPY --from=collect /out/ /
LABEL org.opencontainers.image.title="dataguardian-operator" \
      org.opencontainers.image.description="DataGuardian backup operator for Kubernetes" \
      org.opencontainers.image.source="https://github.com/dataguardian/dataguardian" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}"
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/dataguardian"]
CMD ["operator"]
