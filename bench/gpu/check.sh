#!/usr/bin/env bash
# GPU check of triage's `cuda` feature. Run from the repo root: `bash .gpu/check.sh` (bench/gpu/prepare.sh fills .gpu/).
# Writes at most 8 files to $OUT (summary.txt, results.txt, gateway.log, experts.txt,
# env.txt, configs.txt) and prints the summary. Bounded: every step has a timeout, no request
# starts after $BUDGET_S seconds (default 150), none runs past BUDGET_S+20, plus a 40 s torch
# check only if a GPU request failed: worst case ~3.5 min, expected well under 1 min.
#
# Knobs (all optional):
#   DEVICE_OVERRIDE=cpu   run every "cuda:0" expert on the CPU instead (dry run without a GPU)
#   TORCH_SITE=DIR        site-packages holding nvidia/*/lib (default: the torch venv's)
#   EXTRA_LD_PATH=DIRS    prepended to LD_LIBRARY_PATH (e.g. a stub libcuda for a dry run)
#   PY=python3            interpreter for the analysis (default: the torch venv's, else python3)
#   TRIAGE_BIN=PATH       binary to run (default .gpu/triage, or .gpu/triage.xz unpacked)
#   PORT=N                gateway port (default: random in 20000-39999)
#   FORCE_PYCURL=1        use the Python stand-in for curl (what runs where curl is missing)
set -u
START=$(date +%s)
BUDGET_S=${BUDGET_S:-150}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT=${OUT:-$HERE/out}
mkdir -p "$OUT"
TMP=$(mktemp -d /tmp/triage-gpu.XXXXXX)
RES=$OUT/results.txt ENVF=$OUT/env.txt GWLOG=$OUT/gateway.log EXP=$OUT/experts.txt
: >"$RES"; : >"$ENVF"; : >"$GWLOG"; : >"$EXP"
MANIFEST=$TMP/manifest.tsv
: >"$MANIFEST"
GW_PID=""
PORT=${PORT:-$((20000 + RANDOM % 20000))}
BASE=http://127.0.0.1:$PORT

log() { echo "$*" | tee -a "$RES"; }
elapsed() { echo $(( $(date +%s) - START )); }
in_budget() { [ "$(elapsed)" -lt "$BUDGET_S" ]; }
remaining() { echo $((BUDGET_S + 20 - $(elapsed))); }  # hard end for anything still running

stop_gateway() {
  if [ -n "$GW_PID" ] && kill -0 "$GW_PID" 2>/dev/null; then
    kill -TERM "$GW_PID" 2>/dev/null
    for _ in $(seq 1 50); do kill -0 "$GW_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$GW_PID" 2>/dev/null
  fi
  GW_PID=""
}
cleanup() { stop_gateway; rm -rf "$TMP"; }
trap cleanup EXIT
trap 'echo "interrupted" >>"$RES"; exit 130' INT TERM

# ---------------------------------------------------------------- environment
{
  echo "== date: $(date -u +%FT%TZ)  host: $(hostname)  elapsed $(elapsed)s"
  echo "== git: $(git rev-parse HEAD 2>/dev/null) $(git status --short 2>/dev/null | wc -l) changed"
  echo "== nvidia-smi"
  timeout 20 nvidia-smi 2>&1 || echo "nvidia-smi failed (rc $?)"
  timeout 20 nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used,compute_cap --format=csv 2>&1
  echo "== cpu: $(grep -m1 'model name' /proc/cpuinfo)"
  missing=""
  for f in avx2 fma f16c bmi1 bmi2 lzcnt movbe; do
    case "$f" in lzcnt) flag=abm;; *) flag=$f;; esac
    grep -qw "$flag" /proc/cpuinfo || missing="$missing $f"
  done
  echo "x86-64-v3 features missing:${missing:- none}"
} >>"$ENVF" 2>&1
GPU_NAME=$(timeout 20 nvidia-smi --query-gpu=name,driver_version,compute_cap --format=csv,noheader 2>/dev/null | head -1)
DRIVER_CUDA=$(timeout 20 nvidia-smi 2>/dev/null | grep -o 'CUDA Version: [0-9.]*' | head -1)
[ -n "$GPU_NAME" ] && GPU_NAME="$GPU_NAME, $DRIVER_CUDA (needs >= 13.0: PTX ISA 9.0, libcudart 13)"

PY=${PY:-/opt/torch/.venv/bin/python3}
[ -x "$PY" ] || PY=$(command -v python3 || true)
echo "== python: $PY" >>"$ENVF"

# ---------------------------------------------------------------- libraries
# The binary has DT_NEEDED libcuda.so.1 (driver), libcudart.so.13, libcublas.so.13 and
# libcurand.so.10 (cudarc's `dynamic-linking`, chosen by candle-core; libcublas pulls in
# libcublasLt.so.13; libnvrtc is searched too, in case). Built against the 13.0.0/13.0.48/10.4.0
# wheels, so any CUDA 13.x of these works. Pip packages first, then the usual system places.
TORCH_SITE=${TORCH_SITE:-/opt/torch/.venv/lib/python3.12/site-packages}
NEEDED="libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libnvrtc.so.13"
LIBDIRS=""
add_dir() { case ":$LIBDIRS:" in *":$1:"*) ;; *) LIBDIRS=${LIBDIRS:+$LIBDIRS:}$1;; esac; }
SHIM=$TMP/lib; mkdir -p "$SHIM"
for so in $NEEDED; do
  base=${so%%.so*}
  hit=$(find "$TORCH_SITE/nvidia" /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
          /usr/lib/x86_64-linux-gnu /usr/lib64 -maxdepth 4 -name "$so" 2>/dev/null | head -1)
  if [ -n "$hit" ]; then
    add_dir "$(dirname "$hit")"; echo "lib $so -> $hit" >>"$ENVF"
  else
    # Fallback: another file of the same library (e.g. only libfoo.so.13.0.1): link it under the soname.
    alt=$(find "$TORCH_SITE/nvidia" /usr/local/cuda/lib64 /usr/lib/x86_64-linux-gnu -maxdepth 4 \
            -name "$base.so*" 2>/dev/null | sort | head -1)
    if [ -n "$alt" ]; then ln -sf "$alt" "$SHIM/$so"; add_dir "$SHIM"; echo "lib $so -> (shim) $alt" >>"$ENVF"
    else echo "lib $so NOT FOUND" >>"$ENVF"; fi
  fi
done
LDCONFIG=$(command -v ldconfig || echo /sbin/ldconfig)
if ! "$LDCONFIG" -p 2>/dev/null | grep -q 'libcuda\.so\.1 '; then
  hit=$(find /usr/lib/x86_64-linux-gnu /usr/lib64 /usr/local/nvidia/lib64 /usr/local/nvidia/lib \
          /usr/lib/wsl/lib /run/nvidia -maxdepth 3 -name 'libcuda.so.1' 2>/dev/null | head -1)
  if [ -n "$hit" ]; then add_dir "$(dirname "$hit")"; echo "lib libcuda.so.1 -> $hit" >>"$ENVF"
  else echo "lib libcuda.so.1 not in ldconfig cache nor found (the driver's library)" >>"$ENVF"; fi
else
  echo "lib libcuda.so.1 -> $("$LDCONFIG" -p | grep -m1 'libcuda\.so\.1 ' | sed 's/.*=> //')" >>"$ENVF"
fi
echo "pip packages: $(ls -d "$TORCH_SITE"/nvidia_*.dist-info "$TORCH_SITE"/torch-*.dist-info 2>/dev/null | xargs -n1 basename 2>/dev/null | sed 's/.dist-info//' | tr '\n' ' ')" >>"$ENVF"
export LD_LIBRARY_PATH=${EXTRA_LD_PATH:+$EXTRA_LD_PATH:}$LIBDIRS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH" >>"$ENVF"

# ---------------------------------------------------------------- binary
BIN=${TRIAGE_BIN:-$HERE/triage}
if [ ! -x "$BIN" ] && [ -f "$HERE/triage.xz" ]; then
  BIN=$TMP/triage
  . "$HERE/lib.sh"
  unpack_triage "$HERE/triage.xz" "$BIN" "$PY"
fi
{
  echo "== binary: $BIN ($(stat -c %s "$BIN" 2>/dev/null) bytes, sha256 $(sha256sum "$BIN" 2>/dev/null | cut -c1-16))"
  echo "== ldd"; timeout 10 ldd "$BIN" 2>&1
  echo "== --version"; timeout 10 "$BIN" --version 2>&1; echo "rc $?"
} >>"$ENVF" 2>&1
if command -v ldd >/dev/null; then LDD_MISSING=$(timeout 10 ldd "$BIN" 2>&1 | grep -c 'not found'); else LDD_MISSING=unknown; fi

# ---------------------------------------------------------------- configs
# candle ships PTX (sm_90a, ISA 9.0) that the driver JIT-compiles on each module load (~25 s of
# ptxas for all modules on the build host); every cuda expert load makes a new candle device, so
# make sure the driver's JIT cache is writable and large enough that only the first load pays.
export CUDA_CACHE_PATH=${CUDA_CACHE_PATH:-/tmp/triage-nvcache} CUDA_CACHE_MAXSIZE=${CUDA_CACHE_MAXSIZE:-2147483648}
mkdir -p "$CUDA_CACHE_PATH"; echo "CUDA_CACHE_PATH=$CUDA_CACHE_PATH ($(du -sh "$CUDA_CACHE_PATH" 2>/dev/null | cut -f1) before)" >>"$ENVF"
export TRIAGE_MODELS_DIR=$HERE NO_COLOR=1 RUST_BACKTRACE=0  # 1 puts (symbol-less) backtraces into API error messages
for c in gpu gpu-direct; do
  if [ "${DEVICE_OVERRIDE:-}" = cpu ]; then sed 's/"cuda:0"/"cpu"/' "$HERE/$c.toml" >"$TMP/$c.toml"
  else cp "$HERE/$c.toml" "$TMP/$c.toml"; fi
done
{ for c in gpu gpu-direct; do echo "===== $c.toml (as run)"; cat "$TMP/$c.toml"; done; } >"$OUT/configs.txt"

# ---------------------------------------------------------------- gateway and requests
if [ -n "${FORCE_PYCURL:-}" ] || ! command -v curl >/dev/null; then
  # No curl: the few options used here, in Python (-s -N -m T -o F -w '%{http_code} ...' -H -d URL).
  echo "curl missing: using a Python stand-in" >>"$ENVF"
  curl() {
    "$PY" - "$@" <<'PYEOF'
import sys, time, urllib.request, urllib.error
a = sys.argv[1:]; url = a[-1]; to = 30.0; out = None; data = None; fmt = None; hdr = {}
i = 0
while i < len(a) - 1:
    if a[i] == "-m": to = float(a[i + 1]); i += 1
    elif a[i] == "-o": out = a[i + 1]; i += 1
    elif a[i] == "-w": fmt = a[i + 1]; i += 1
    elif a[i] == "-d": data = a[i + 1].encode(); i += 1
    elif a[i] == "-H": k, v = a[i + 1].split(":", 1); hdr[k.strip()] = v.strip(); i += 1
    i += 1
t0 = time.time(); code = 0; body = b""; first = None
try:
    with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=hdr), timeout=to) as r:
        code = r.status; first = time.time() - t0; body = r.read()
except urllib.error.HTTPError as e:
    code = e.code; first = time.time() - t0; body = e.read()
except Exception:
    pass
if out: open(out, "wb").write(body)
elif out is None: sys.stdout.buffer.write(body)
if fmt:
    tt = time.time() - t0
    sys.stdout.write(fmt.replace("%{http_code}", "%03d" % code).replace("%{time_total}", "%.6f" % tt)
                     .replace("%{time_starttransfer}", "%.6f" % (first or tt)).replace("\\n", "\n"))
sys.exit(0 if code else 7)
PYEOF
  }
fi
start_gateway() { # CONFIG PHASE
  echo "===== phase $2: $BIN serve --config $1 --listen 127.0.0.1:$PORT (t=$(elapsed)s)" >>"$GWLOG"
  timeout "$(remaining)" "$BIN" serve --config "$1" --listen "127.0.0.1:$PORT" --no-watch >>"$GWLOG" 2>&1 &
  GW_PID=$!
  while [ "$(remaining)" -gt 5 ]; do
    if ! kill -0 "$GW_PID" 2>/dev/null; then
      wait "$GW_PID"; log "gateway ($2) exited during start-up, rc $?"
      { grep -E '^Error|ERROR|panicked' "$GWLOG" | tail -1 | grep . || tail -1 "$GWLOG"; } | cut -c1-400 >"$TMP/start_fail_$2.txt"
      GW_PID=""; return 1
    fi
    curl -s -m 2 -o /dev/null "$BASE/admin/experts" && { log "gateway ($2) up after $(elapsed)s total"; return 0; }
    sleep 0.2
  done
  echo "not answering within the time budget" >"$TMP/start_fail_$2.txt"
  log "gateway ($2) not answering within the time budget"; return 1
}

PROMPT_1="What is the capital of France?"
PROMPT_2="Write a haiku about the sea."
PROMPT_3="List three prime numbers."

N=0
req() { # PHASE EXPERT VISIT PROMPT_NO MODE(ns|s) REP TIMEOUT
  local phase=$1 expert=$2 visit=$3 pn=$4 mode=$5 rep=$6 to=${7:-60}
  N=$((N + 1))
  local f="$TMP/r$N.body" stream=false http="000" tt="" ttfb=""
  [ "$mode" = s ] && stream=true
  [ "$to" -gt "$(remaining)" ] && to=$(remaining)
  if [ -n "$GW_PID" ] && kill -0 "$GW_PID" 2>/dev/null && in_budget && [ "$to" -ge 5 ]; then
    local prompt_var="PROMPT_$pn"
    local body
    body=$("$PY" -c 'import json,sys; print(json.dumps({"model":sys.argv[1],"temperature":0,"max_tokens":16,"stream":sys.argv[3]=="true","messages":[{"role":"user","content":sys.argv[2]}]}))' \
      "$expert" "${!prompt_var}" "$stream")
    read -r http tt ttfb < <(curl -s -N -m "$to" -o "$f" -w '%{http_code} %{time_total} %{time_starttransfer}\n' \
      -H 'content-type: application/json' -d "$body" "$BASE/v1/chat/completions")
  else
    echo "(skipped: gateway down or time budget spent)" >"$f"
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$phase" "$expert" "$visit" "$pn" "$mode" "$rep" "${http:-000}" "${tt:-}" "${ttfb:-}" "$f" >>"$MANIFEST"
  echo "[t=$(elapsed)s] $phase $expert visit=$visit P$pn $mode rep=$rep -> http ${http:-000} in ${tt:-?}s" | tee -a "$RES"
}

visit() { # PHASE EXPERT VISIT FULL(1|0)
  if [ "$4" = 1 ]; then
    req "$1" "$2" "$3" 1 ns 1 120; req "$1" "$2" "$3" 1 ns 2 60
    req "$1" "$2" "$3" 1 s 1 60; req "$1" "$2" "$3" 2 s 1 60; req "$1" "$2" "$3" 3 s 1 60
  else
    req "$1" "$2" "$3" 1 ns 1 120; req "$1" "$2" "$3" 1 s 1 60
  fi
}

snap() { # NAME
  curl -s -m 10 "$BASE/admin/experts" >"$TMP/snap_$1.json" 2>/dev/null || echo '{}' >"$TMP/snap_$1.json"
  { echo "===== /admin/experts $1 (t=$(elapsed)s)"; cat "$TMP/snap_$1.json"; echo
    timeout 10 "$BIN" experts --gateway "$BASE" 2>&1; echo; } >>"$EXP"
}

gpu_mem() { # LABEL
  { echo "== nvidia-smi $1 (gateway pid $GW_PID)"
    timeout 10 nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv 2>&1
    timeout 10 nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv 2>&1; } >>"$ENVF"
}

log "== GPU: ${GPU_NAME:-none}  device override: ${DEVICE_OVERRIDE:-none}  port $PORT"
if start_gateway "$TMP/gpu.toml" tiered; then
  snap before
  visit tiered gpu-q 1 1
  snap after_gpu_q
  gpu_mem "after gpu-q"
  visit tiered cpu-q 1 1
  visit tiered gpu-f16 1 1
  gpu_mem "after gpu-f16"
  visit tiered cpu-f16 1 1
  snap after_cpu_f16
  visit tiered gpu-q 2 0
  snap after_gpu_q_again
  visit tiered gpu-f16 2 0
  snap after
fi
stop_gateway
if in_budget && start_gateway "$TMP/gpu-direct.toml" direct; then
  snap direct
  visit direct gpu-q 1 0
  visit direct gpu-f16 1 0
  gpu_mem "direct phase"
fi
stop_gateway

# ---------------------------------------------------------------- analysis
# A GPU expert that failed: does PyTorch see the GPU from here? (tells the environment from the binary)
if [ "${DEVICE_OVERRIDE:-}" != cpu ] && { ! grep -q . "$MANIFEST" || awk -F'\t' '$2 ~ /^gpu/ && $7 != "200"' "$MANIFEST" | grep -q .; }; then
  { echo "== torch sanity check (a GPU request failed)"
    timeout 40 env -u LD_LIBRARY_PATH "$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available()); x = torch.ones(1024, device="cuda"); print("sum on GPU:", (x @ x).item(), torch.cuda.get_device_name(0))' 2>&1 | tail -5
  } >>"$ENVF"
fi
echo "== gateway log: $(grep -c ' ERROR ' "$GWLOG") ERROR lines, $(grep -c ' WARN ' "$GWLOG") WARN lines; panics: $(grep -c 'panicked' "$GWLOG")" >>"$RES"
"$PY" "$HERE/analyze.py" "$MANIFEST" "$TMP" "$LDD_MISSING" "${DEVICE_OVERRIDE:-}" "${GPU_NAME:-}" "$(elapsed)" \
  >"$OUT/summary.txt" 2>>"$RES" || echo "FAIL analysis: analyze.py failed (see results.txt)" >>"$OUT/summary.txt"
cat "$OUT/summary.txt" >>"$RES"
cat "$OUT/summary.txt"
