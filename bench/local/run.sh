#!/usr/bin/env bash
# Local-expert tokens/s next to llama.cpp, same GGUF files, same thread counts, one script
# (see README.md here). Prints markdown rows:
# | model | engine | threads | streams | prompt tokens | prompt tok/s | decode tok/s |
#
#   LLAMACPP_PY=/work/llamacpp-venv/bin/python RUNS=5 THREADS="1 2" bash bench/local/run.sh
#
# ENGINES picks what runs: `ours` (this project's kernels), `candle` (candle's own kernels,
# TRIAGE_QUANT_KERNELS=candle) and `llamacpp` (skipped when LLAMACPP_PY is unset).
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${RUNS:-5}
THREADS=${THREADS:-"1 2"}
STREAMS=${STREAMS:-1,4}
ENGINES=${ENGINES:-"ours candle llamacpp"}
BENCH=${BENCH:-target/release/examples/local_bench}
MODELS=("models/smollm2-135m-instruct-q4_1.gguf|" "models/gemma-3-270m-q4_k_m.gguf|gemma")

echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), load average: $(cut -d' ' -f1-3 /proc/loadavg)"
for t in $THREADS; do
  for entry in "${MODELS[@]}"; do
    model=${entry%%|*}
    template=${entry##*|}
    for engine in $ENGINES; do
      case $engine in
        ours|candle)
          args=("$model" --threads "$t" --runs "$RUNS" --streams "$STREAMS")
          [ -n "$template" ] && args+=(--template "$template")
          if [ "$engine" = candle ]; then export TRIAGE_QUANT_KERNELS=candle; else unset TRIAGE_QUANT_KERNELS; fi
          "$BENCH" "${args[@]}" | sed "s/| Quantized |/| $engine |/"
          ;;
        llamacpp)
          [ -n "${LLAMACPP_PY:-}" ] || continue
          "$LLAMACPP_PY" bench/local/llamacpp.py "$model" --threads "$t" --runs "$RUNS" --streams "$STREAMS"
          ;;
      esac
    done
  done
done
echo "# done $(date -u '+%H:%M UTC'), load average: $(cut -d' ' -f1-3 /proc/loadavg)"
