# Test stand-in for compose's redis:7-alpine (no registry here): Debian's redis-server on the bookworm base.
ARG BASE_IMAGE=localhost/l335q-base:bookworm
FROM ${BASE_IMAGE}
RUN apt-get update -q && apt-get install -y -q --no-install-recommends redis-server && rm -rf /var/lib/apt/lists/*
WORKDIR /data
CMD ["redis-server"]
