#!/usr/bin/env bash
# The full SmolLM2-135M Q4_1 (98 MB, over the device tool's 64 MiB carry limit, so it travels
# in parts and is put together in /tmp first) as four local experts loaded at start-up:
# quantized and f16, on cuda:0 and on the CPU. Greedy, 32 tokens, 4 prompts each; prints
# where each GPU answer first differs from its CPU twin. Run after check.sh's set-up:
#   bash .gpu/full.sh MODEL.gguf        (OUT: folder for results; DEVICE_OVERRIDE=cpu: dry run;
#                                        CHAT_TEMPLATE=gemma for a GGUF without a template)
set -u
[ $# -ge 1 ] && [ -f "$1" ] || { echo "usage: full.sh MODEL.gguf (a file)" >&2; exit 2; }
MODEL=$(readlink -f "$1")
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT=${OUT:-$HERE/out}; mkdir -p "$OUT"
TMP=$(mktemp -d /tmp/triage-full.XXXXXX)
SITE=${TORCH_SITE:-/opt/torch/.venv/lib/python3.12/site-packages}
export LD_LIBRARY_PATH=${EXTRA_LD_PATH:+$EXTRA_LD_PATH:}$SITE/nvidia/cu13/lib:/usr/local/nvidia/lib64:/usr/local/nvidia/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export CUDA_CACHE_PATH=${CUDA_CACHE_PATH:-/tmp/triage-nvcache} CUDA_CACHE_MAXSIZE=2147483648 NO_COLOR=1
PY=${PY:-/opt/torch/.venv/bin/python3}; [ -x "$PY" ] || PY=python3
BIN=${TRIAGE_BIN:-}
. "$HERE/lib.sh"
if [ -z "$BIN" ]; then
  BIN=$TMP/triage
  unpack_triage "$HERE/triage.xz" "$BIN" "$PY"
fi
GPU=cuda:0; [ "${DEVICE_OVERRIDE:-}" = cpu ] && GPU=cpu
{
  printf '[server]\nshutdown_grace_ms = 2000\n[resilience]\nmax_attempts = 1\n'
  for e in "gpu-q $GPU quantized" "cpu-q cpu quantized" "gpu-f16 $GPU f16" "cpu-f16 cpu f16"; do
    set -- $e
    printf '[[experts]]\nname = "%s"\nkind = "local"\npath = "%s"\ndevice = "%s"\nweights = "%s"\ntimeouts = { first_byte_ms = 120000, total_ms = 150000 }\n' "$1" "$MODEL" "$2" "$3"
    [ -n "${CHAT_TEMPLATE:-}" ] && printf 'chat_template = "%s"\n' "$CHAT_TEMPLATE"
  done
} >"$TMP/full.toml"
PORT=$((20000 + RANDOM % 20000))
timeout 200 "$BIN" serve --config "$TMP/full.toml" --listen 127.0.0.1:$PORT >"$OUT/full-gateway.log" 2>&1 &
GW=$!
READY=no
for _ in $(seq 1 1200); do
  curl -sf http://127.0.0.1:$PORT/ready >/dev/null && { READY=yes; break; }
  kill -0 $GW 2>/dev/null || break
  sleep 0.1
done
[ $READY = yes ] || echo "gateway not ready (see $OUT/full-gateway.log); the requests below will fail"
"$PY" - "$PORT" "$OUT/full-results.txt" <<'PYEOF'
import json, sys, time, urllib.request
port, out = sys.argv[1], sys.argv[2]
prompts = ["What is the capital of France?", "Write a haiku about autumn leaves.",
           "Explain in one sentence what a hash table is.", "List three prime numbers greater than 10."]
experts = ["gpu-q", "cpu-q", "gpu-f16", "cpu-f16"]
def ask(model, prompt):
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": prompt}],
                       "max_tokens": 32, "temperature": 0, "stream": True}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", body, {"content-type": "application/json"})
    t, pieces = time.time(), []
    try:
        with urllib.request.urlopen(req, timeout=150) as r:
            for line in r:
                line = line.decode().strip()
                if line.startswith("data: ") and line != "data: [DONE]":
                    d = json.loads(line[6:])
                    for c in d.get("choices", []):
                        if c.get("delta", {}).get("content"):
                            pieces.append(c["delta"]["content"])
    except Exception as e:
        return None, f"{type(e).__name__}: {getattr(e, 'read', lambda: b'')()[:300]!r} {e}", time.time() - t
    return pieces, None, time.time() - t
res, lines = {}, []
for p in prompts:
    for e in experts:
        pieces, err, dt = ask(e, p)
        res[(e, p)] = pieces
        lines.append(f"{e:8} {dt:6.2f}s {p[:40]!r}: " + (err or repr("".join(pieces))))
verdict = []
for p in prompts:
    for g, c in (("gpu-q", "cpu-q"), ("gpu-f16", "cpu-f16"), ("gpu-q", "gpu-f16"), ("cpu-q", "cpu-f16")):
        a, b = res[(g, p)], res[(c, p)]
        if a is None or b is None:
            verdict.append(f"FAIL {g} vs {c} {p[:30]!r}: no answer"); continue
        n = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)
        if n is None and len(a) == len(b):
            verdict.append(f"SAME {g} vs {c} {p[:30]!r}: {len(a)}/{len(a)} tokens")
        else:
            n = min(len(a), len(b)) if n is None else n
            verdict.append(f"DIFF {g} vs {c} {p[:30]!r}: first difference at token {n + 1} ({a[n:n+1]} vs {b[n:n+1]})")
text = "\n".join(lines + [""] + verdict) + "\n"
open(out, "w").write(text); print(text)
PYEOF
kill -TERM $GW 2>/dev/null; wait $GW 2>/dev/null; rm -rf "$TMP"
