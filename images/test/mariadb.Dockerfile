# TEST ONLY: a local stand-in for the official `mariadb:10.11` image (no registry here), built
# from Debian's MariaDB 10.11 with the official image's contract: MARIADB_ROOT_PASSWORD(_FILE)
# (and the MYSQL_ names), MARIADB_DATABASE, MARIADB_USER/PASSWORD, user `mysql` = 999,
# `mariadbd` as the default command, extra options passed through.
ARG BASE=debian:bookworm-slim
FROM ${BASE}
RUN set -eux; \
    groupadd -r -g 999 mysql; \
    useradd -r -g mysql -u 999 -d /var/lib/mysql -s /usr/sbin/nologin mysql; \
    export DEBIAN_FRONTEND=noninteractive; \
    apt-get update -qq; \
    apt-get install -y -qq --no-install-recommends mariadb-server; \
    rm -rf /var/lib/apt/lists/* /var/lib/mysql/*; \
    mkdir -p /var/lib/mysql /run/mysqld; \
    chown -R mysql:mysql /var/lib/mysql /run/mysqld
COPY mariadb-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
EXPOSE 3306
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["mariadbd"]
