# One image for the worker, the HTTP API and the CLI (entrypoint `l335q`):
#   docker build -t l335q .
#   docker run --rm --gpus all -e L335Q_DATABASE_URL=... -e L335Q_BROKER_URL=... l335q worker
# PyTorch and torchvision come from pip at the versions pinned in requirements-torch.txt (the one pin the
# Makefile and CI read too); their Linux wheels bring CUDA and cuDNN, so a plain Python base serves both CPU and
# GPU hosts (a GPU host needs only its NVIDIA driver and the container toolkit).
# BASE_IMAGE: any Debian-like image with Python 3.11+ (tomllib) and its venv module; containers/smoke.sh builds on a
# bookworm root filesystem made with mmdebstrap (no registry there).
# PIP_EXTRA_INDEX_URL: extra package indexes (e.g. local `file://` ones mounted into the build with `-v`);
# PIP_CERT: a CA bundle for a network that re-signs TLS (mounted the same way). Both only for the build.
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}
ARG PIP_EXTRA_INDEX_URL=
ARG PIP_CERT=

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH \
    L335Q_DATA=/data \
    XDG_DATA_HOME=/data

# PyTorch first, in a layer of its own: the largest (GBs), and it changes only with requirements-torch.txt.
WORKDIR /opt/l335q
COPY requirements-torch.txt ./
RUN python3 -m venv /opt/venv && pip install -r requirements-torch.txt
# Then the other dependencies (a layer that survives code edits), then the project itself.
COPY pyproject.toml ./
# (no RUN heredoc: buildah 1.28, Debian 12's podman, does not know them)
RUN python -c 'import tomllib; deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]; \
print("\n".join(d for d in deps if d.split(">")[0].split("=")[0].strip() not in ("torch", "torchvision")))' \
    > /tmp/requirements.txt && pip install -r /tmp/requirements.txt -c requirements-torch.txt && rm /tmp/requirements.txt
COPY alembic.ini ./
COPY l335q ./l335q
COPY worker ./worker
COPY api ./api
COPY cli ./cli
COPY migrations ./migrations
COPY examples ./examples
RUN pip install --no-deps --no-build-isolation . && l335q --help > /dev/null \
 \
 && python -c "from l335q.data.images import SAMPLES, load_image; [load_image('sample:' + n) for n in SAMPLES]"

# Non-root user; Fashion-MNIST lives on the /data volume (put the four .gz files of the original release
# there, or mount them read-only at /usr/share/datasets/fashion-mnist, or let the first job that needs them
# download them into /data/l335q when the machine is online).
RUN useradd --create-home --uid 1000 --shell /usr/sbin/nologin l335q \
 && mkdir -p /data && chown l335q:l335q /data
VOLUME ["/data"]
USER l335q
WORKDIR /home/l335q

EXPOSE 8335
ENTRYPOINT ["l335q"]
CMD ["--help"]
