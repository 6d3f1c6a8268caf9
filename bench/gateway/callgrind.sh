#!/usr/bin/env bash
# Instructions per proxied request, counted by callgrind: repeatable where wall-clock
# numbers on this shared VM are not (the same binary and load give the same count whatever
# else the machine is doing). bench/README.md "Ninth session" explains and records it.
#
#   bench/gateway/callgrind.sh                    # triage (built here) and passthru
#   bench/gateway/callgrind.sh /path/to/triage    # another triage build (no target-cpu=native)
#
# Each target runs under `valgrind --tool=callgrind` on CPU 0, the harness's mock backend on
# CPU 1, wrk (c=64) on CPU 1. Counting starts after a 3 s warm-up (`callgrind_control -z`)
# and stops after SECS seconds of load (`-d`): the dump holds only the measured requests.
# Profiles stay in OUT (callgrind_annotate them for where the instructions go).
#
# valgrind 3.19 stops on instructions that `target-cpu=native` emits here (SIGILL), so
# triage is built for the baseline x86-64 target in its own target folder (a full build
# the first time: ~13 min on 2 cores). Counts are of user-space instructions only.
#
# Env: HARNESS, WORKDIR (as run.sh), SECS (default 10), OUT (default /tmp/triage-callgrind),
# STREAM (1: streamed requests, "per request" is then per stream of 22 events),
# CG_TARGET_DIR (default ${TMPDIR:-/tmp}/triage-cg-target).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
HARNESS=${HARNESS:-$REPO/../shared/bench}
WORKDIR=${WORKDIR:-${TMPDIR:-/tmp}/triage-bench}
H=$WORKDIR/bench
SECS=${SECS:-10}
OUT=${OUT:-${TMPDIR:-/tmp}/triage-callgrind}
CG_TARGET_DIR=${CG_TARGET_DIR:-${TMPDIR:-/tmp}/triage-cg-target}
CONFIG=$REPO/bench/gateway/triage-bench.toml

command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind; }
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
if [[ ! -d $H ]]; then
  mkdir -p "$WORKDIR"
  cp -r "$HARNESS" "$WORKDIR/"
  chmod -R u+w "$H"
fi
(cd "$H/mock" && cargo build --release --quiet)

TRIAGE=${1:-}
if [[ -z $TRIAGE ]]; then
  # RUSTFLAGS replaces .cargo/config.toml's target-cpu=native; -g names inlined frames.
  (cd "$REPO" && RUSTFLAGS=-g CARGO_TARGET_DIR=$CG_TARGET_DIR cargo build --release --bin triage)
  TRIAGE=$CG_TARGET_DIR/release/triage
fi

mkdir -p "$OUT" "$H/run" "$H/logs"
MOCK_PID=
cleanup() { [[ -n $MOCK_PID ]] && kill "$MOCK_PID" 2>/dev/null || true; }
trap cleanup EXIT
MOCK_ADDR=127.0.0.1:18000 MOCK_THREADS=1 taskset -c 1 "$H/mock/target/release/mock-openai" >"$OUT/mock.log" 2>&1 &
MOCK_PID=$!

# STREAM=1 counts streamed requests instead (the mock sends its 22 events at once).
if [[ ${STREAM:-0} == 1 ]]; then
  export BENCH_BODY='{"model":"mock","messages":[{"role":"user","content":"Say hello."}],"max_tokens":32,"stream":true}'
else
  export BENCH_BODY='{"model":"mock","messages":[{"role":"user","content":"Say hello."}],"max_tokens":32}'
fi
export BENCH_KEY=sk-bench-master

count() { # name port command...
  local name=$1 port=$2; shift 2
  rm -f "$OUT/$name".out*
  taskset -c 0 valgrind --tool=callgrind --callgrind-out-file="$OUT/$name.out" "$@" >"$OUT/$name.log" 2>&1 &
  local pid=$!
  for _ in $(seq 300); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.2; done
  (cd "$H" && taskset -c 1 wrk -t1 -c64 -d3s -s wrk-post.lua "http://127.0.0.1:$port/v1/chat/completions" >/dev/null)
  callgrind_control -z "$pid" >/dev/null 2>&1
  local res
  res=$(cd "$H" && taskset -c 1 wrk -t1 -c64 -d"${SECS}"s -s wrk-post.lua "http://127.0.0.1:$port/v1/chat/completions" | grep WRKJSON)
  callgrind_control -d "$pid" >/dev/null 2>&1
  sleep 1
  kill "$pid"; wait "$pid" 2>/dev/null || true
  local dump ir
  dump=$(ls -t "$OUT/$name".out.* | head -1)
  ir=$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}')
  python3 - "$name" "$ir" "$res" <<'PY'
import json, sys
name, ir, res = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3].split(" ", 1)[1])
errs = sum(v for k, v in res.items() if k.startswith("err_"))
print(f"{name:10s} requests {res['requests']:6d} errors {errs}  instructions {ir:,}  per request {ir // res['requests']:,}")
PY
}

{
  echo "# $(date -Is) $(cd "$REPO" && git rev-parse --short HEAD) triage=$TRIAGE stream=${STREAM:-0}"
  PASSTHRU_ADDR=127.0.0.1:4101 PASSTHRU_UPSTREAM=http://127.0.0.1:18000 PASSTHRU_THREADS=1 \
    count passthru 4101 "$H/mock/target/release/passthru"
  (cd "$REPO" && count triage 8090 "$TRIAGE" serve --no-watch --config "$CONFIG" --listen 127.0.0.1:8090)
} | tee -a "$OUT/summary.txt"
