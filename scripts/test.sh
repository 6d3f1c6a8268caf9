#!/usr/bin/env bash
# Runs every test the project has, after installing what they need:
#   the model weights (scripts/setup.sh), a Python venv with the official openai SDK,
#   Prometheus (Debian's package) for the dashboard test, then cargo test (unit + integration, real models), clippy and rustfmt,
#   and a brief cargo-fuzz run of every fuzz target.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

scripts/setup.sh

if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import openai' 2>/dev/null; then
  echo "test: creating .venv with the openai SDK"
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check 'openai>=1.40'
fi
export TRIAGE_PYTHON="$root/.venv/bin/python"

# The telemetry test scrapes the gateway with a real Prometheus and runs every query of
# deploy/grafana/dashboards/*.json against it.
if ! command -v prometheus >/dev/null 2>&1; then
  echo "test: installing prometheus"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked -- --test-threads="${TEST_THREADS:-2}"

# Every cargo-fuzz target for a short fixed time on a dev build (no optimisation: it builds
# in 9 CPU-minutes, 12.5 min wall on this busy 2-core box at load 12-15, where the release
# + ASan build took 36 CPU-minutes); any crash fails CI. The long campaign is
# bench/fuzz/run.sh.
FUZZ_PROFILE=dev scripts/fuzz.sh "${FUZZ_CI_SECONDS:-30}"
