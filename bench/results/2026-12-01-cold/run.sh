#!/usr/bin/env bash
# The cold-regime measurement (bench/README.md, "Eleventh session"): per-request CPU time
# (from /proc/PID/task/*/schedstat, user + kernel) and the client's first-recv p50, with
# 0, 1 and 5 ms of idle between requests, for the mock, passthru, triage and triage with
# OTEL_SDK_DISABLED=true. Everything runs on CPU 0; start them as bench/gateway/run.sh does
# (mock 18000, passthru 4100, triage 8080, triage without telemetry 8082) and pass the
# run/ folder with their pid files.
set -euo pipefail
RUN=${1:?run/ folder with mock.pid passthru.pid triage.pid triage-notel.pid}
HERE=$(cd "$(dirname "$0")" && pwd)
STREAM=${STREAM:-0}
for round in 1 2 3; do
  for gap in 0 0.001 0.005; do
    for t in mock:18000 passthru:4100 triage:8080 triage-notel:8082; do
      name=${t%%:*}; port=${t##*:}
      echo -n "round $round $name "
      taskset -c 0 python3 "$HERE/cpu.py" "$STREAM" 400 "$port" "$(cat "$RUN/$name.pid")" "$gap"
    done
  done
done
