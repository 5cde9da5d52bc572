#!/usr/bin/env bash
# `make container-test`: the image built (containers/build.sh) and run for real, each service in its own
# container (host network) against this machine's PostgreSQL (a fresh database) and Redis (its own db number):
#   1. `l335q db upgrade`, a worker, the API (token set) in containers; Fashion-MNIST copied onto a named volume
#      by the image's non-root user (uid 1000), as the Dockerfile tells users to;
#   2. a small inr-init grid (a `sample:` image from inside the image) and a small cls-compare, submitted and
#      waited for from a client container; `l335q status` / `l335q results` read them back; the API answers
#      with the token only and its web view lists both submissions;
#   3. `podman stop` (SIGTERM) of the worker mid-job: the job checkpoints and is handed back; a second worker
#      container resumes it from the checkpoint and it ends done once (attempts, no duplicated metric rows);
#   4. a worker container without the data volume: a cls job fails fast with a one-line "Fashion-MNIST not found".
# Last line: "container smoke: ok (...measured figures...)", or "container smoke: FAILED: reason" and exit 1.
# Settings: L335Q_TEST_PG (server URL, default postgresql://postgres@127.0.0.1:5432), L335Q_TEST_REDIS
# (default redis://127.0.0.1:6379), L335Q_SMOKE_PORT (the API's, default 18335), FMNIST_DIR.
set -euo pipefail
WHAT="container smoke"
source "$(dirname "$0")/common.sh"
started=$(date +%s)

PG="${L335Q_TEST_PG:-postgresql://postgres@127.0.0.1:5432}"
DB=l335q_container
REDIS="${L335Q_TEST_REDIS:-redis://127.0.0.1:6379}/9"
PORT="${L335Q_SMOKE_PORT:-18335}"
FMNIST_DIR="${FMNIST_DIR:-/usr/share/datasets/fashion-mnist}"
QUEUE=l335q-smoke
VOLUME=l335q-smoke-data
TOKEN="smoke-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
LOGS="${L335Q_SMOKE_LOGS:-/tmp/l335q-container-smoke}"
SPECS="$LOGS/specs"
ENV=(-e L335Q_DATABASE_URL="$PG/$DB" -e L335Q_BROKER_URL="$REDIS")

# ------------------------------------------------------------------------------------------------ helpers
containers=()
cleanup() {
  for c in "${containers[@]}"; do podman logs "$c" > "$LOGS/$c.log" 2>&1 || true; done
  [ ${#containers[@]} = 0 ] || podman rm -f -v -t 5 "${containers[@]}" >/dev/null 2>&1 || true
  podman volume rm -f "$VOLUME" >/dev/null 2>&1 || true
  psql "$PG/postgres" -qAtc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
}
fail() { echo "(logs in $LOGS)" >&2; die "$*"; }
trap cleanup EXIT

# `l335q ARGS` in a one-shot container (the specs folder mounted read-only at /specs), ended after $WAIT_S
l335q() {
  timeout "${WAIT_S:-300}" podman run --rm --network=host "${ENV[@]}" -v "$SPECS:/specs:ro" "$IMAGE" "$@"
}

# a long-running service container: start NAME [podman run options] -- l335q ARGS
start() {
  local name=$1; shift; local opts=()
  while [ "$1" != -- ]; do opts+=("$1"); shift; done; shift
  podman rm -f -v "$name" >/dev/null 2>&1 || true
  podman run -d --name "$name" --network=host "${ENV[@]}" "${opts[@]}" "$IMAGE" "$@" >/dev/null
  containers+=("$name")
}

# wait_for SECONDS WHAT COMMAND...: poll until COMMAND succeeds
wait_for() {
  local limit=$1 what=$2; shift 2
  for _ in $(seq "$limit"); do "$@" >/dev/null 2>&1 && return; sleep 1; done
  fail "timed out after ${limit}s waiting for $what"
}

sql() { psql "$PG/$DB" -qAtc "$1"; }
api() { curl -sS --noproxy '*' -o "$LOGS/api.out" -w '%{http_code}' "$@"; }
running() { [ "$(podman container inspect --format '{{.State.Running}}' "$1")" = true ] || fail "container $1 exited"; }

# ------------------------------------------------------------------------------------------------ 0. build
rm -rf "$LOGS" && mkdir -p "$SPECS"
pg_isready -q -d "$PG/postgres" || die "PostgreSQL is not answering at $PG"
redis-cli -u "$REDIS" ping >/dev/null || die "Redis is not answering at $REDIS"
[ -f "$FMNIST_DIR/train-images-idx3-ubyte.gz" ] || die "no Fashion-MNIST in $FMNIST_DIR (apt-get install dataset-fashion-mnist)"
built=$(bash "$CONTAINERS_DIR/build.sh") || die "the image did not build"
eval "$(tail -n1 <<< "$built")"     # build_s=N size_mb=N
[ "$(podman run --rm --entrypoint id "$IMAGE" -u)" = 1000 ] || fail "the image does not run as uid 1000"

say "fresh database $DB, Redis db ${REDIS##*/} flushed, data volume $VOLUME"
psql "$PG/postgres" -qAtc "DROP DATABASE IF EXISTS $DB WITH (FORCE)"
psql "$PG/postgres" -qAtc "CREATE DATABASE $DB"
redis-cli -u "$REDIS" flushdb >/dev/null
podman volume rm -f "$VOLUME" >/dev/null 2>&1 || true
podman run --rm --network=none -v "$VOLUME:/data" -v "$FMNIST_DIR:/src:ro" --entrypoint sh "$IMAGE" \
  -c 'cp /src/*-ubyte.gz /data/ && ls /data' > "$LOGS/volume.txt" || fail "uid 1000 cannot write the data volume"

cat > "$SPECS/inr.yaml" <<'EOF'
task: inr-init
title: container smoke inr
image: sample:grass
resolution: 12
initialiser: [default, mean-colour]
seeds: "0-1"
steps: 30
depth: 2
width: 16
device: cpu
EOF
cat > "$SPECS/cls.yaml" <<'EOF'
task: cls-compare
title: container smoke cls
seeds: [0]
epochs: 1
train_subset: 500
test_subset: 500
batch_size: 100
device: cpu
EOF
cat > "$SPECS/long.yaml" <<'EOF'
task: cls-compare
title: container smoke sigterm
seeds: [0]
epochs: 3
train_subset: 2000
test_subset: 500
batch_size: 50
device: cpu
EOF

# ------------------------------------------------------------------------------------------------ 1. services
say "db upgrade, worker, API (each its own container)"
l335q db upgrade > "$LOGS/migrate.log" 2>&1 || fail "l335q db upgrade: $(tail -n1 "$LOGS/migrate.log")"
start w1 -v "$VOLUME:/data" -e L335Q_CHECKPOINT_S=3600 -- worker --queues "$QUEUE" --device cpu --name w1@%h
start nodata -- worker --queues "$QUEUE-nodata" --device cpu --name nodata@%h
start api -e L335Q_API_TOKEN="$TOKEN" -- api --host 127.0.0.1 --port "$PORT"
wait_for 120 "the API's /health" curl -sf --noproxy '*' "http://127.0.0.1:$PORT/health"
running w1; running nodata

# ------------------------------------------------------------------------------------------------ 2. a small grid
say "submitting a small inr-init grid and a small cls-compare, waiting"
t=$(date +%s)
for spec in inr cls; do
  WAIT_S=900 l335q submit "/specs/$spec.yaml" --queue "$QUEUE" --wait > "$LOGS/submit-$spec.out" \
    2> "$LOGS/submit-$spec.err" || fail "submit $spec.yaml: $(tail -n2 "$LOGS/submit-$spec.err")"
done
grid_s=$(( $(date +%s) - t ))
inr_id=$(head -n1 "$LOGS/submit-inr.out"); cls_id=$(head -n1 "$LOGS/submit-cls.out")
l335q status "$cls_id" | tee "$LOGS/status.txt" | grep -Eq "^ *$cls_id +cls-compare +1 jobs: 1 done" \
  || fail "status of $cls_id: $(cat "$LOGS/status.txt")"
l335q results --task inr-init --submission "$inr_id" --format csv > "$LOGS/results-inr.csv"
l335q results --task cls-compare --submission "$cls_id" --format csv > "$LOGS/results-cls.csv"
[ "$(wc -l < "$LOGS/results-inr.csv")" -ge 3 ] || fail "inr-init results: $(cat "$LOGS/results-inr.csv")"
grep -qi cnn "$LOGS/results-cls.csv" || fail "cls-compare results: $(cat "$LOGS/results-cls.csv")"

say "the API with and without the token, the web view"
[ "$(api "http://127.0.0.1:$PORT/submissions")" = 401 ] || fail "the API answered without the token"
[ "$(api -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$PORT/submissions/$cls_id")" = 200 ] \
  || fail "GET /submissions/$cls_id with the token: $(cat "$LOGS/api.out")"
grep -q '"done"' "$LOGS/api.out" || fail "the API's view of $cls_id: $(cat "$LOGS/api.out")"
[ "$(api -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$PORT/")" = 200 ] || fail "the web view: $(cat "$LOGS/api.out")"
for id in "$inr_id" "$cls_id"; do
  grep -q "data-submission=\"$id\"" "$LOGS/api.out" || fail "the web view does not list submission $id"
done

# ------------------------------------------------------------------------------------------------ 3. SIGTERM
say "podman stop of the worker mid-job, a second worker finishes the job"
l335q submit /specs/long.yaml --queue "$QUEUE" > "$LOGS/submit-long.out" 2>/dev/null
long_id=$(head -n1 "$LOGS/submit-long.out")
job=$(sql "SELECT id FROM jobs WHERE submission_id = $long_id")
training() { [ "$(sql "SELECT state = 'running' AND coalesce((progress::jsonb->>'stage')::int, 0) >= 1
                       FROM jobs WHERE id = $job")" = t ]; }
wait_for 300 "job $job to train its CNN" training
t=$(date +%s)
podman stop -t 120 w1 >/dev/null
stop_s=$(( $(date +%s) - t ))
[ "$(sql "SELECT state FROM jobs WHERE id = $job")" = queued ] || fail "job $job not handed back after SIGTERM: \
$(sql "SELECT state, attempts, error FROM jobs WHERE id = $job")"
podman logs w1 2>&1 | grep -qi checkpoint || fail "worker w1's log says nothing of a checkpoint"
start w2 -v "$VOLUME:/data" -- worker --queues "$QUEUE" --device cpu --name w2@%h
done_once() { [ "$(sql "SELECT state FROM jobs WHERE id = $job")" = done ]; }
wait_for 600 "job $job to finish on w2" done_once
podman logs w2 2>&1 | grep -q "resuming from its checkpoint" || fail "w2 did not resume job $job from its checkpoint"
read -r attempts dups <<< "$(sql "SELECT attempts, (SELECT count(*) - count(DISTINCT (seed, step, name)) FROM metrics
                                 WHERE job_id = $job) FROM jobs WHERE id = $job" | tr '|' ' ')"
[ "$dups" = 0 ] || fail "job $job has $dups duplicated metric rows"

# ------------------------------------------------------------------------------------------------ 4. no data
say "a cls job on the worker without the data volume"
t=$(date +%s)
if l335q submit /specs/cls.yaml --fresh --queue "$QUEUE-nodata" --wait > "$LOGS/submit-nodata.out" 2> "$LOGS/submit-nodata.err"
then
  fail "a cls job without Fashion-MNIST succeeded"
fi
nodata_s=$(( $(date +%s) - t ))
error=$(sql "SELECT error FROM jobs WHERE submission_id = $(head -n1 "$LOGS/submit-nodata.out")")
[[ "$error" == *"Fashion-MNIST not found"* && "$error" != *$'\n'* ]] || fail "no-data job's error: $error"

jobs_done=$(sql "SELECT count(*) FROM jobs WHERE state = 'done'")
echo "container smoke: ok (build ${build_s} s, image ${size_mb} MB, ${jobs_done} jobs done, grid ${grid_s} s," \
     "SIGTERM: handed back in ${stop_s} s and resumed once (attempts ${attempts}), no data: failed in ${nodata_s} s" \
     "with one line, total $(( $(date +%s) - started )) s)"
