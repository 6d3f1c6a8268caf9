#!/usr/bin/env bash
# Where a proxied request's CPU goes: perf samples of triage and of the passthru reference
# relay while wrk drives each one alone (shared layout: everything on CPU 0), then a flat
# profile by symbol. Uses the harness copy that bench/gateway/run.sh left in WORKDIR.
#
#   bench/gateway/profile.sh            # needs perf (Debian: linux-perf)
#
# Env: WORKDIR, TRIAGE_BIN, OUT, CONC (default 1), SECS (default 10).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
WORKDIR=${WORKDIR:-${TMPDIR:-/tmp}/triage-bench}
H=$WORKDIR/bench
TRIAGE_BIN=${TRIAGE_BIN:-${CARGO_TARGET_DIR:-$REPO/target}/release/triage}
OUT=${OUT:-$REPO/bench/results/$(date +%Y-%m-%d)-gateway}
CONC=${CONC:-1}
SECS=${SECS:-10}
[[ -x $H/mock/target/release/mock-openai ]] || { echo "run bench/gateway/run.sh first" >&2; exit 2; }
command -v perf >/dev/null || { echo "perf not found" >&2; exit 2; }

trap '"$H/scripts/stop.sh" || true' EXIT
mkdir -p "$H/run" "$H/logs" "$OUT"
MOCK_CPUS=0 "$H/scripts/start-mock.sh"
PROXY_CPUS=0 "$H/scripts/start-passthru.sh"
(cd "$REPO"; nohup taskset -c 0 "$TRIAGE_BIN" serve --no-watch --config bench/gateway/triage-bench.toml \
  --listen 127.0.0.1:8080 >"$H/logs/triage.log" 2>&1 & echo $! >"$H/run/triage.pid")
for _ in $(seq 100); do curl -sf http://127.0.0.1:8080/health >/dev/null && break; sleep 0.1; done

export BENCH_BODY='{"model":"mock","messages":[{"role":"user","content":"Say hello."}],"max_tokens":32}'
export BENCH_KEY=sk-bench-master
for t in triage:8080 passthru:4100; do
  name=${t%%:*} port=${t##*:} pid=$(cat "$H/run/$name.pid")
  url=http://127.0.0.1:$port/v1/chat/completions
  (cd "$H" && taskset -c 0 wrk -t1 -c"$CONC" -d3s -s wrk-post.lua "$url" >/dev/null) # warm the pools
  perf record -q -F 1999 -g -p "$pid" -o "$OUT/perf-$name.data" -- sleep "$SECS" &
  perfpid=$!
  (cd "$H" && taskset -c 0 wrk -t1 -c"$CONC" -d"${SECS}s" -s wrk-post.lua "$url" | tail -1) \
    | tee "$OUT/perf-$name-wrk.txt"
  wait $perfpid
  perf report -q -i "$OUT/perf-$name.data" --no-children --sort dso,symbol --percent-limit 0.7 \
    --stdio -g none 2>/dev/null >"$OUT/perf-$name.txt"
  perf report -q -i "$OUT/perf-$name.data" --no-children --sort dso --stdio -g none 2>/dev/null \
    >"$OUT/perf-$name-dso.txt"
  # Self time grouped by what the code does (symbol-name patterns, first match wins).
  perf report -q -i "$OUT/perf-$name.data" --no-children --sort dso,symbol --stdio -g none 2>/dev/null \
    | python3 "$REPO/bench/gateway/group.py" >"$OUT/perf-$name-groups.txt"
  rm -f "$OUT/perf-$name.data"
  cat "$OUT/perf-$name-groups.txt"
  echo "== $name: top symbols ($OUT/perf-$name.txt)"
  head -25 "$OUT/perf-$name.txt"
done
