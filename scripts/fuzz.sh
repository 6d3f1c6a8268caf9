#!/usr/bin/env bash
# Builds the cargo-fuzz targets in fuzz/ and runs each for a fixed time; exits non-zero if
# any target crashes (a panic, a failed assertion, a timeout or running out of memory).
#
#   scripts/fuzz.sh [seconds per target] [target ...]
#
# CI (scripts/test.sh) runs every target for FUZZ_CI_SECONDS; bench/fuzz/run.sh runs the
# long campaign. Each target keeps its growing corpus in fuzz/corpus/<target>/ (not
# committed) and starts from the committed seeds in fuzz/seeds/<target>/; the config
# target also starts from the repository's real config files. A crash's input lands in
# fuzz/artifacts/<target>/ and is printed; make it a test in tests/it/fuzz.rs.
#
# Environment:
#   FUZZ_PROFILE   release (default) or dev: dev builds in about half the time and runs
#                  slower; CI uses it (see the README's "Fuzzing").
#   FUZZ_SANITIZER none (default) or address. The crate denies unsafe code, so the bugs
#                  fuzzing can find in it are panics, which need no sanitizer; ASan
#                  would also check the dependencies' unsafe code at about half the speed.
#   FUZZ_JOBS      libFuzzer processes per target (default 1); more share one corpus.
#   FUZZ_PARALLEL  1 runs the targets at the same time instead of one after another.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

# The cargo-fuzz release this was written against; `--locked` builds it with the
# dependency versions it was released with.
CARGO_FUZZ_VERSION=0.13.2
# A timeout this long means a hang: the slowest input of a campaign takes well under 1 s.
UNIT_TIMEOUT_S=30
# libFuzzer's default; the HTTP target's process (runtime, ledger, app) sits near 100 MB.
RSS_LIMIT_MB=2048

seconds="${1:-30}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(chat_request sse_relay config http)
profile="${FUZZ_PROFILE:-release}"
sanitizer="${FUZZ_SANITIZER:-none}"
jobs="${FUZZ_JOBS:-1}"

if [ "$(cargo fuzz --version 2>/dev/null || true)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
  echo "fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --quiet
fi

# cargo-fuzz passes nightly-only compiler flags. A nightly toolchain is used when one is
# installed; otherwise stable is told to accept them (RUSTC_BOOTSTRAP=1, the switch the
# Rust project's own bootstrap uses), which is what a fresh CI machine with only stable does.
# FUZZ_TOOLCHAIN=stable forces the second path where nightly is installed.
toolchain=()
if [ "${FUZZ_TOOLCHAIN:-}" != stable ] && rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  toolchain=(+nightly)
else
  export RUSTC_BOOTSTRAP=1
fi

flags=(--fuzz-dir fuzz --sanitizer "$sanitizer")
[ "$profile" = dev ] && flags+=(--dev)

echo "fuzz: building the targets (${toolchain[*]:-stable + RUSTC_BOOTSTRAP=1}, $profile, sanitizer $sanitizer)"
start=$(date +%s)
cargo "${toolchain[@]}" fuzz build "${flags[@]}"
echo "fuzz: build took $(($(date +%s) - start)) s"

dict_of() {
  case "$1" in
    chat_request | http) echo fuzz/dict/json.dict ;;
    sse_relay) echo fuzz/dict/sse.dict ;;
    config) echo fuzz/dict/toml.dict ;;
  esac
}

# Runs one target; prints its summary line, or the failure with the crashing input.
fuzz_one() {
  local t="$1" corpus="fuzz/corpus/$1" log="fuzz/logs/$1.log" rc
  mkdir -p "$corpus" "fuzz/artifacts/$t"
  if [ "$t" = config ]; then
    # The real config files are the best seeds: every shipped policy and deployment config.
    for f in policies/*.toml deploy/triage.toml bench/gateway/triage-bench.toml; do
      cp "$f" "$corpus/real-$(echo "$f" | tr / -)"
    done
  fi
  # Only this run's crashes count; earlier ones stay in the folder for their tests.
  touch "$log.start"
  echo "fuzz: running $t for $seconds s ($jobs job(s)); log in $log"
  set +e
  cargo "${toolchain[@]}" fuzz run "${flags[@]}" "$t" "$corpus" "fuzz/seeds/$t" -- \
    -max_total_time="$seconds" -timeout="$UNIT_TIMEOUT_S" -rss_limit_mb="$RSS_LIMIT_MB" \
    -dict="$(dict_of "$t")" -print_final_stats=1 -artifact_prefix="fuzz/artifacts/$t/" \
    $([ "$jobs" -gt 1 ] && echo "-fork=$jobs") >"$log" 2>&1
  rc=$?
  set -e
  local runs rate cov files kib crashes
  runs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | awk '{s += $2} END {print s + 0}')
  rate=$(grep -oE 'stat::average_exec_per_sec: *[0-9]+' "$log" | awk '{s += $2} END {print s + 0}')
  cov=$(grep -o 'cov: [0-9]* ft: [0-9]*' "$log" | tail -1)
  files=$(find "$corpus" -type f | wc -l)
  kib=$(($(find "$corpus" -type f -exec cat {} + | wc -c) / 1024))
  crashes=$(find "fuzz/artifacts/$t" -type f -newer "$log.start" | wc -l)
  printf '%-13s %12s %8s %7s %8s %8s  %s\n' "$t" "$runs" "$rate" "$files" "$kib" "$crashes" "$cov" >"fuzz/logs/$t.summary"
  if [ "$rc" -ne 0 ] || [ "$crashes" -ne 0 ]; then
    echo "fuzz: $t FAILED (libFuzzer exit $rc); the end of its log:"
    tail -40 "$log"
    find "fuzz/artifacts/$t" -type f -newer "$log.start" | while read -r a; do
      echo "fuzz: input $a (reproduce: cargo ${toolchain[*]} fuzz run ${flags[*]} $t $a):"
      head -c 2000 "$a" | od -c | head -40
    done
    return 1
  fi
}

mkdir -p fuzz/logs
rm -f fuzz/logs/*.summary
failed=()
if [ "${FUZZ_PARALLEL:-0}" = 1 ]; then
  # All targets at once: on a shared machine this is how a campaign fits in its time.
  pids=()
  for t in "${targets[@]}"; do
    fuzz_one "$t" &
    pids+=($!)
  done
  for i in "${!targets[@]}"; do
    wait "${pids[$i]}" || failed+=("${targets[$i]}")
  done
else
  for t in "${targets[@]}"; do
    fuzz_one "$t" || failed+=("$t")
  done
fi
# The HTTP target's ledgers, one per process (see fuzz_targets/http.rs).
rm -rf "${TMPDIR:-/tmp}"/triage-fuzz-http-* 2>/dev/null || true

printf '%-13s %12s %8s %7s %8s %8s  %s\n' target inputs exec/s corpus KiB crashes coverage
for t in "${targets[@]}"; do
  cat "fuzz/logs/$t.summary" 2>/dev/null || true
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: crashes in ${failed[*]}"
  exit 1
fi
