# The agent image: every backup, restore, validation and prune Job runs it.
#
# It carries `dataguardian`, the PostgreSQL client tools of every supported major under
# /usr/lib/postgresql/<N>/bin (the agent picks the newest one not older than the server), the
# MariaDB client tools (which also talk to MySQL) and CA certificates. It runs as 65532 and
# writes only to mounted volumes (the Jobs mount an emptyDir at /tmp).
#
# Release builds list the majors and take the clients from the PostgreSQL project's apt
# repository (apt.postgresql.org, pgdg):
#   docker buildx build --platform linux/amd64,linux/arm64 -f images/agent.Dockerfile \
#     --build-arg PG_MAJORS="13 14 15 16 17" --build-arg PG_APT=pgdg \
#     --build-arg BASE=debian:bookworm-slim@sha256:<digest> --build-context bin=target/dist ...
# Here, where that repository is unreachable, PG_APT=debian installs Debian's own client
# (bookworm: 15) from the same Dockerfile. See docs/images.md.
ARG BASE=debian:bookworm-slim
FROM ${BASE}

ARG PG_MAJORS="15"
ARG PG_APT=debian
ARG VERSION=dev
ARG REVISION=unknown
ARG CREATED=unknown

RUN set -eux; \
    export DEBIAN_FRONTEND=noninteractive; \
    apt-get update -qq; \
    apt-get install -y -qq --no-install-recommends ca-certificates; \
    if [ "$PG_APT" = "pgdg" ]; then \
      apt-get install -y -qq --no-install-recommends curl gnupg; \
      install -d /usr/share/postgresql-common/pgdg; \
      curl -fsSLo /usr/share/postgresql-common/pgdg/apt.postgresql.org.asc https://www.postgresql.org/media/keys/ACCC4CF8.asc; \
      echo "deb [signed-by=/usr/share/postgresql-common/pgdg/apt.postgresql.org.asc] https://apt.postgresql.org/pub/repos/apt bookworm-pgdg main" > /etc/apt/sources.list.d/pgdg.list; \
      apt-get update -qq; \
      apt-get purge -y -qq curl gnupg; \
    fi; \
    pkgs="mariadb-client"; \
    for major in $PG_MAJORS; do pkgs="$pkgs postgresql-client-$major"; done; \
    apt-get install -y -qq --no-install-recommends $pkgs; \
    apt-get autoremove -y -qq; \
    rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/apt /var/log/dpkg.log; \
    for major in $PG_MAJORS; do test -x /usr/lib/postgresql/$major/bin/pg_dump; done; \
    mariadb-dump --version

# The host-built binary (here) or the release pipeline's (target/dist): one program, both roles.
COPY dataguardian /usr/local/bin/dataguardian

LABEL org.opencontainers.image.title="dataguardian-agent" \
      org.opencontainers.image.description="DataGuardian backup/restore agent with PostgreSQL and MariaDB client tools" \
      org.opencontainers.image.source="https://github.com/dataguardian/dataguardian" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      io.dataguardian.postgres-majors="${PG_MAJORS}"

ENV PG_MAJORS="${PG_MAJORS}"
USER 65532:65532
WORKDIR /tmp
ENTRYPOINT ["/usr/local/bin/dataguardian"]
