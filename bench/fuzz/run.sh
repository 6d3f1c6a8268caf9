#!/usr/bin/env bash
# The long fuzzing campaign (bench/README.md, "Fuzzing"): every cargo-fuzz target for
# MINUTES minutes each (default 10), one after another, on a release build. Prints, per
# target, the inputs tried, exec/s, the corpus it ended with and the crashes; the whole
# output goes to bench/results/<date>-fuzz/run.log.
#
#   bench/fuzz/run.sh [minutes per target] [target ...]
#
# The corpora in fuzz/corpus/ carry over from run to run, so a second campaign starts
# where the first stopped. FUZZ_JOBS=2 runs two libFuzzer processes per target.
set -euo pipefail
cd "$(dirname "$0")/../.."
minutes="${1:-10}"
shift || true
out="bench/results/$(date -u +%Y-%m-%d)-fuzz"
mkdir -p "$out"
echo "fuzz campaign: $minutes min per target, $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)" | tee "$out/run.log"
FUZZ_PROFILE=release scripts/fuzz.sh $((minutes * 60)) "$@" 2>&1 | tee -a "$out/run.log"
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$out/run.log"
