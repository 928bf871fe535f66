# Local stand-in for postgres:16-alpine, built by deploy/local-base-images.sh from Debian's
# packages when Docker Hub cannot be reached. Debian bookworm ships PostgreSQL 15: the stand-in
# runs 15 (fine for a fresh volume; do not point it at a data folder of a real 16).
# Like the official image: POSTGRES_USER / POSTGRES_DB / POSTGRES_PASSWORD on first start,
# password (scram-sha-256) authentication for network clients, data in
# /var/lib/postgresql/data, `postgres -c name=value` arguments, pg_isready on PATH.
FROM spheroid-hpo/debian-minbase:bookworm

ENV LANG=C.UTF-8 \
    PGDATA=/var/lib/postgresql/data \
    PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
RUN mkdir -p /etc/postgresql-common \
    && echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.conf \
    && apt-get update \
    && apt-get install -y --no-install-recommends postgresql-15 postgresql-client-15 \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p "$PGDATA" /var/run/postgresql \
    && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql \
    && chmod 700 "$PGDATA" && chmod 2775 /var/run/postgresql

COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
VOLUME /var/lib/postgresql/data
EXPOSE 5432
STOPSIGNAL SIGINT
LABEL spheroid-hpo.stand-in="postgres:16-alpine from Debian bookworm packages, PostgreSQL 15 (deploy/local-base-images.sh)"
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["postgres"]
