# Test stand-in for compose's postgres:16-alpine (no registry here): Debian's PostgreSQL on the bookworm base,
# initialised on first start from POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB like the official image.
ARG BASE_IMAGE=localhost/l335q-base:bookworm
FROM ${BASE_IMAGE}
RUN apt-get update -q && apt-get install -y -q --no-install-recommends postgresql && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /var/lib/postgresql/data && chown postgres:postgres /var/lib/postgresql/data
COPY postgres-entry.sh /usr/local/bin/postgres-entry
ENV PGDATA=/var/lib/postgresql/data
USER postgres
ENTRYPOINT ["/usr/local/bin/postgres-entry"]
