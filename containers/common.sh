# Sourced by the scripts in containers/: podman as it works on these machines (containers/README.md says why).
#   podman 4.3 (Debian 12) with containers.conf (default ulimits off, the runc runtime); host networking.
CONTAINERS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(dirname "$CONTAINERS_DIR")"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$CONTAINERS_DIR/containers.conf}"

IMAGE="${L335Q_IMAGE:-localhost/l335q:latest}"
BASE="${L335Q_BASE_IMAGE:-localhost/l335q-base:bookworm}"

say() { echo "--- $*" >&2; }
die() { echo "${WHAT:-containers}: FAILED: $*" >&2; exit 1; }

# Debian's podman, runc, mmdebstrap and curl (root on Debian: installed on first use).
need_podman() {
  local missing=()
  for tool in podman runc mmdebstrap curl; do command -v "$tool" >/dev/null || missing+=("$tool"); done
  [ ${#missing[@]} = 0 ] && return
  [ "$(id -u)" = 0 ] || die "${missing[*]} needed (apt-get install ${missing[*]})"
  say "installing ${missing[*]} (apt)"
  export DEBIAN_FRONTEND=noninteractive
  { apt-get install -y -q "${missing[@]}" || { apt-get update -q && apt-get install -y -q "${missing[@]}"; }; } >/dev/null
}
