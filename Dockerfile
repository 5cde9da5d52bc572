# One image for the worker, the HTTP API and the CLI (entrypoint `l335q`):
#   docker build -t l335q .
#   docker run --rm --gpus all -e L335Q_DATABASE_URL=... -e L335Q_BROKER_URL=... l335q worker
# The base image brings CUDA, cuDNN, PyTorch and torchvision; pip keeps them (the project pins neither).
ARG BASE_IMAGE=pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime
FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    L335Q_DATA=/data \
    XDG_DATA_HOME=/data

WORKDIR /opt/l335q
# Dependencies first (a layer that survives code edits), then the project itself.
COPY pyproject.toml ./
RUN python - <<'PY' > /tmp/requirements.txt && pip install -r /tmp/requirements.txt && rm /tmp/requirements.txt
import tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
print("\n".join(d for d in deps if d.split(">")[0].split("=")[0].strip() not in ("torch", "torchvision")))
PY
COPY alembic.ini ./
COPY l335q ./l335q
COPY worker ./worker
COPY api ./api
COPY cli ./cli
COPY migrations ./migrations
COPY examples ./examples
RUN pip install --no-deps . && l335q --help > /dev/null

# Non-root user; Fashion-MNIST lives on the /data volume (put the four .gz files of the original release
# there, or let the first job that needs them download them into /data/l335q when the machine is online).
RUN useradd --create-home --uid 1000 --shell /usr/sbin/nologin l335q \
 && mkdir -p /data && chown l335q:l335q /data
VOLUME ["/data"]
USER l335q
WORKDIR /home/l335q

EXPOSE 8335
ENTRYPOINT ["l335q"]
CMD ["--help"]
