#!/usr/bin/env bash
# Gateway overhead benchmark: the mock OpenAI backend measured directly, through the
# reference axum+reqwest relay (passthru) and through triage, in one run, interleaved.
# bench/README.md explains it and records the numbers.
#
#   bench/gateway/run.sh                      # direct, passthru, triage
#   WITH_1T=1 bench/gateway/run.sh            # + triage on one tokio worker (port 8081)
#   WITH_LITELLM=1 bench/gateway/run.sh       # + LiteLLM (pip install litellm[proxy]: slow)
#
# The harness (mock backend, passthru, ssebench, bench.py) is not part of this repo: in
# this workplace it lives beside the checkout, in ../shared/bench. Point HARNESS elsewhere
# if it is somewhere else. It is copied to WORKDIR (it writes run/, logs/, mock/target/);
# the copy is reused on the next run so the mock is built once. FRESH=1 copies it anew.
#
# Env: HARNESS, WORKDIR, TRIAGE_BIN (default: build with cargo --release), OUT (results
# folder), BENCH_ARGS (the bench.sh options), FRESH, WITH_1T, WITH_NOTEL, BASELINE_BIN,
# WITH_LITELLM.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
HARNESS=${HARNESS:-$REPO/../shared/bench}
WORKDIR=${WORKDIR:-${TMPDIR:-/tmp}/triage-bench}
H=$WORKDIR/bench
CONFIG=$REPO/bench/gateway/triage-bench.toml
# Everything on CPU 0: the targets' latency budgets (tens of microseconds) are below the
# cross-vCPU wake-up cost of this VM, which the split layout would add (harness README).
BENCH_ARGS=${BENCH_ARGS:---layout shared -c 1,64 -d 10 -r 3 -w 3 --stream-concurrency 1,16}
OUT=${OUT:-$REPO/bench/results/$(date +%Y-%m-%d)-gateway}
TRIAGE_PORT=8080
TRIAGE_1T_PORT=8081
TRIAGE_NOTEL_PORT=8082
BASELINE_PORT=8083

[[ -d $HARNESS ]] || { echo "harness not found at $HARNESS (set HARNESS=...)" >&2; exit 2; }

# ---- harness copy and setup (setup.sh would also install LiteLLM; do its steps here)
if [[ ${FRESH:-0} == 1 ]]; then rm -rf "$H"; fi
if [[ ! -d $H ]]; then
  mkdir -p "$WORKDIR"
  cp -r "$HARNESS" "$WORKDIR/"
  chmod -R u+w "$H" # the shared copy is read-only; the harness writes into its folder
fi
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
(cd "$H/mock" && cargo build --release --quiet)
if [[ ${WITH_LITELLM:-0} == 1 && ! -x $H/venv/bin/litellm ]]; then
  python3 -m venv "$H/venv"
  "$H/venv/bin/pip" install -q 'litellm[proxy]'
fi

# ---- the gateway binary
if [[ -z ${TRIAGE_BIN:-} ]]; then
  (cd "$REPO" && cargo build --release --bin triage)
  TRIAGE_BIN=${CARGO_TARGET_DIR:-$REPO/target}/release/triage
fi
[[ -x $TRIAGE_BIN ]] || { echo "no triage binary at $TRIAGE_BIN" >&2; exit 2; }

# ---- start everything; stop.sh stops what run/*.pid names, ours included
trap '"$H/scripts/stop.sh" || true' EXIT
mkdir -p "$H/run" "$H/logs" "$OUT"
PROXY_CPUS=0 "$H/scripts/start-mock.sh"
PROXY_CPUS=0 "$H/scripts/start-passthru.sh"
if [[ ${WITH_LITELLM:-0} == 1 ]]; then PROXY_CPUS=0 "$H/scripts/start-litellm.sh"; fi

start_triage() { # name port [env...]
  local name=$1 port=$2 bin=${BIN:-$TRIAGE_BIN}; shift 2
  (cd "$REPO"; env "$@" nohup taskset -c 0 "$bin" serve --no-watch --config "$CONFIG" \
    --listen "127.0.0.1:$port" >"$H/logs/$name.log" 2>&1 & echo $! >"$H/run/$name.pid")
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$port/health" >/dev/null && return 0
    sleep 0.1
  done
  echo "$name did not start; see $H/logs/$name.log" >&2; tail -20 "$H/logs/$name.log" >&2; exit 1
}
# The default log level, as an operator runs it: `info` writes nothing per request
# (the log holds only the start-up lines), so logging is part of what is measured.
start_triage triage $TRIAGE_PORT RUST_LOG=info
TARGETS=(passthru=http://127.0.0.1:4100/v1 triage=http://127.0.0.1:$TRIAGE_PORT/v1)
if [[ ${WITH_1T:-0} == 1 ]]; then
  start_triage triage-1t $TRIAGE_1T_PORT RUST_LOG=info TOKIO_WORKER_THREADS=1
  TARGETS+=(triage-1t=http://127.0.0.1:$TRIAGE_1T_PORT/v1)
fi
if [[ ${WITH_NOTEL:-0} == 1 ]]; then
  start_triage triage-notel $TRIAGE_NOTEL_PORT RUST_LOG=info OTEL_SDK_DISABLED=true
  TARGETS+=(triage-notel=http://127.0.0.1:$TRIAGE_NOTEL_PORT/v1)
fi
if [[ -n ${BASELINE_BIN:-} ]]; then
  BIN=$BASELINE_BIN start_triage baseline $BASELINE_PORT RUST_LOG=info
  TARGETS+=(baseline=http://127.0.0.1:$BASELINE_PORT/v1)
fi
if [[ ${WITH_LITELLM:-0} == 1 ]]; then TARGETS+=(litellm=http://127.0.0.1:4000/v1); fi

# ---- idle RSS: after start-up settles, before any request
sleep 2
{
  echo "# idle RSS before any traffic (ps -o rss, KiB)"
  for f in "$H"/run/*.pid; do
    n=$(basename "$f" .pid)
    printf '%s %s\n' "$n" "$(ps -o rss= -p "$(cat "$f")" | tr -d ' ')"
  done
} | tee "$OUT/idle-rss.txt"

# ---- the run, with the machine's state around it
{
  echo "date: $(date -Is)"
  echo "commit: $(cd "$REPO" && git rev-parse --short HEAD)$(cd "$REPO" && git diff --quiet || echo ' (dirty)')"
  echo "binary: $TRIAGE_BIN ($(stat -c %s "$TRIAGE_BIN") bytes)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) vCPUs"
  echo "rustc: $(rustc --version)"
  echo "bench.sh $BENCH_ARGS ${TARGETS[*]}"
  echo "uptime before: $(uptime)"
} | tee "$OUT/machine.txt"
# shellcheck disable=SC2086
set +e
(cd "$H" && ./bench.sh $BENCH_ARGS -o "$OUT" "${TARGETS[@]}" >"$OUT/stdout.txt" 2>"$OUT/stderr.txt")
rc=$?
set -e
echo "uptime after: $(uptime)" | tee -a "$OUT/machine.txt"
{
  echo "# RSS after the run (ps -o rss, KiB)"
  for f in "$H"/run/*.pid; do
    n=$(basename "$f" .pid)
    printf '%s %s\n' "$n" "$(ps -o rss= -p "$(cat "$f")" | tr -d ' ')"
  done
} | tee "$OUT/after-rss.txt"
cat "$OUT/table.txt" 2>/dev/null || tail -30 "$OUT/stderr.txt"
exit $rc
