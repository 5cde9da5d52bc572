#!/usr/bin/env bash
# docker-compose.yml checked for real with podman-compose (a pinned release in a venv of its own):
#   1. `podman-compose config` parses the file alone and with the test override (compose.test.yml);
#   2. `up -d` with the override: locally built Redis and PostgreSQL stand-ins, the l335q image
#      (containers/build.sh), every service on the host network at ports of its own;
#   3. migrate exits 0, and redis, postgres, worker and api turn healthy by their own healthchecks;
#   4. `down -v`.
# Podman 4.3 runs healthchecks from systemd timers, and this sandbox has no systemd: the script runs each
# container's healthcheck itself (`podman healthcheck run`, the very command compose configured), and
# podman-compose 1.6 skips `service_healthy` waits on podman < 4.6 (it says so), and a second `up -d` of the whole
# file recreates the running services under containers that already depend on the old ones: so the services come
# up in depends_on order here, one `up -d --no-deps` at a time, each waited for (redis, postgres; migrate; worker, api).
# Last line: "compose check: ok (...)" or "compose check: FAILED: reason".
set -euo pipefail
WHAT="compose check"
source "$(dirname "$0")/../common.sh"
need_podman
started=$(date +%s)
HERE="$CONTAINERS_DIR/compose"
PROJECT=l335q-compose-test
LOGS="${L335Q_COMPOSE_LOGS:-/tmp/l335q-compose-check}"
VENV="${L335Q_COMPOSE_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/l335q/podman-compose}"
rm -rf "$LOGS" && mkdir -p "$LOGS"

if [ ! -x "$VENV/bin/podman-compose" ]; then
  say "podman-compose into $VENV"
  python3 -m venv "$VENV" && "$VENV/bin/pip" install -q podman-compose==1.6.0 >&2
fi
compose() { "$VENV/bin/podman-compose" -p "$PROJECT" -f "$REPO_DIR/docker-compose.yml" "$@"; }
test_compose() { compose -f "$HERE/compose.test.yml" "$@"; }
cleanup() {
  test_compose logs > "$LOGS/compose.log" 2>&1 || true
  test_compose down -v -t 10 > "$LOGS/down.log" 2>&1 || true
}

say "podman-compose config"
compose config > "$LOGS/config.yml" 2> "$LOGS/config.err" || die "config: $(tail -n2 "$LOGS/config.err")"
test_compose config > "$LOGS/config-test.yml" 2> "$LOGS/config-test.err" \
  || die "config with the override: $(tail -n2 "$LOGS/config-test.err")"

say "images: l335q, and the Redis and PostgreSQL stand-ins"
bash "$CONTAINERS_DIR/build.sh" > /dev/null || die "the l335q image did not build"
for svc in redis postgres; do
  podman build --network=host --build-arg BASE_IMAGE="$BASE" -t "localhost/l335q-compose-$svc:bookworm" \
    -f "$HERE/$svc.Dockerfile" "$HERE" > "$LOGS/build-$svc.log" 2>&1 || die "the $svc stand-in did not build"
done

container() { echo "${PROJECT}_$1_1"; }
migrated() {
  [ "$(podman container inspect --format '{{.State.Status}} {{.State.ExitCode}}' "$(container migrate)")" = "exited 0" ]
}
healthy() { podman healthcheck run "$(container "$1")" > /dev/null 2>&1; }
wait_for() {   # wait_for SECONDS WHAT COMMAND...
  local limit=$1 what=$2; shift 2
  for _ in $(seq "$limit"); do "$@" && return; sleep 1; done
  die "timed out after ${limit}s waiting for $what (logs in $LOGS)"
}

say "up -d: redis, postgres; migrate; worker, api"
trap cleanup EXIT
test_compose down -v -t 5 > /dev/null 2>&1 || true
test_compose up -d redis postgres > "$LOGS/up-services.log" 2>&1 || die "up -d: $(tail -n3 "$LOGS/up-services.log")"
for svc in redis postgres; do wait_for 120 "$svc to be healthy" healthy "$svc"; done
test_compose up -d --no-deps migrate > "$LOGS/up-migrate.log" 2>&1 || die "up -d migrate: $(tail -n3 "$LOGS/up-migrate.log")"
wait_for 180 "migrate to exit 0" migrated
test_compose up -d --no-deps worker api > "$LOGS/up.log" 2>&1 || die "up -d worker api: $(tail -n3 "$LOGS/up.log")"
for svc in worker api; do wait_for 240 "$svc to be healthy" healthy "$svc"; done
health=$(podman inspect --format '{{.State.Health.Status}}' "$(container worker)" "$(container api)" | tr '\n' ' ')
[ "$health" = "healthy healthy " ] || die "podman reports worker and api as: $health"
curl -sf --noproxy '*' http://127.0.0.1:18336/health > "$LOGS/health.json" || die "the API's /health did not answer"

echo "compose check: ok (config parsed; migrate exited 0; redis, postgres, worker, api healthy;" \
     "$(( $(date +%s) - started )) s)"
