#!/usr/bin/env bash
# Build the l335q image with podman, without a registry: the base is a Debian bookworm root filesystem made
# with mmdebstrap (made once, kept as $BASE), the Python packages come from pip. Local package indexes
# (directories with a simple/ index, $L335Q_LOCAL_INDEXES, default /opt/pypi /opt/pypi-more) are mounted
# into the build and searched before PyPI, so the PyTorch wheels are not downloaded again; the host's CA
# bundle ($PIP_CERT, else Debian's /etc/ssl/certs/ca-certificates.crt: a network that re-signs TLS is trusted
# there) is mounted and used by pip in the build too.
# Prints the build's seconds and the image's size (MB) as its last line: "build_s=N size_mb=N".
set -euo pipefail
WHAT="container build"
source "$(dirname "$0")/common.sh"
need_podman
start=$(date +%s)

if ! podman image exists "$BASE"; then
  say "base image $BASE: mmdebstrap bookworm + python3 (once; kept between runs)"
  mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates \
    --aptopt='APT::Install-Recommends "false"' bookworm - | podman import --quiet - "$BASE" >/dev/null
fi

mounts=() indexes=()
for dir in ${L335Q_LOCAL_INDEXES-/opt/pypi /opt/pypi-more}; do
  if [ -d "$dir/simple" ]; then mounts+=(-v "$dir:$dir:ro"); indexes+=("file://$dir/simple"); fi
done
cert=()
ca="${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}"
if [ -f "$ca" ]; then
  mounts+=(-v "$ca:/run/l335q-build-ca.pem:ro"); cert=(--build-arg PIP_CERT=/run/l335q-build-ca.pem)
fi

say "building $IMAGE from $BASE (local indexes: ${indexes[*]:-none})"
podman build --network=host --layers "${mounts[@]}" \
  --build-arg BASE_IMAGE="$BASE" --build-arg PIP_EXTRA_INDEX_URL="${indexes[*]}" \
  "${cert[@]}" -t "$IMAGE" "$REPO_DIR" >&2 || die "podman build failed"
build_s=$(( $(date +%s) - start ))
size_mb=$(( $(podman image inspect --format '{{.Size}}' "$IMAGE") / 1000000 ))
echo "build_s=$build_s size_mb=$size_mb"
