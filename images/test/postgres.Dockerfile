# TEST ONLY: a local stand-in for the official `postgres:15` image (no registry here), built
# from Debian's PostgreSQL 15 with the official image's contract: POSTGRES_PASSWORD(_FILE),
# POSTGRES_USER, POSTGRES_DB, POSTGRES_HOST_AUTH_METHOD, POSTGRES_INITDB_ARGS, PGDATA, user
# `postgres` = 999, `postgres` as the default command, extra `-c` settings passed through.
ARG BASE=debian:bookworm-slim
FROM ${BASE}
RUN set -eux; \
    groupadd -r -g 999 postgres; \
    useradd -r -g postgres -u 999 -d /var/lib/postgresql -s /bin/bash postgres; \
    export DEBIAN_FRONTEND=noninteractive; \
    apt-get update -qq; \
    apt-get install -y -qq --no-install-recommends postgresql-15; \
    rm -rf /var/lib/apt/lists/*; \
    mkdir -p /var/lib/postgresql/data /var/run/postgresql; \
    chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql
ENV PG_MAJOR=15 PATH=/usr/lib/postgresql/15/bin:$PATH PGDATA=/var/lib/postgresql/data
COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
STOPSIGNAL SIGINT
EXPOSE 5432
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["postgres"]
