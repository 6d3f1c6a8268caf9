"""llama.cpp on the same GGUF files, as the measuring stick for bench/local (see README.md).

Uses llama-cpp-python's low-level bindings (the C API), so what is timed is llama.cpp's own
decode plus its greedy sampler, as our benchmark times the engine plus its sampler:

    python bench/local/llamacpp.py MODEL.gguf --threads 2 [--runs 5] [--streams 1,4]

Prints one markdown table row per stream count, medians over --runs:
| model | threads | streams | prompt tokens | prompt tok/s | decode tok/s |
Prompt: the sentence bench/local/main.rs repeats; decode: 64 greedy tokens after a short
prompt. With 4 streams, the 4 prompts (and then the 4 next tokens) go in one batch, as
llama-server does with 4 slots: aggregate tokens/s.
"""

import argparse
import ctypes
import os
import statistics
import time

import llama_cpp as L

PREFILL_SENTENCE = "The quick brown fox jumps over the lazy dog near the river bank. "
PREFILL_REPEATS = 18
DECODE_PROMPT = "Tell me a long story about a dragon."
DECODE_TOKENS = 64
CONTEXT = 4096
# llama.cpp logs every load step to stderr; kept at module level so ctypes keeps it alive.
_QUIET = L.llama_log_callback(lambda level, text, user: None)


def tokenize(vocab, text):
    raw = text.encode()
    buf = (L.llama_token * (len(raw) + 16))()
    n = L.llama_tokenize(vocab, raw, len(raw), buf, len(buf), True, False)
    if n < 0:
        raise RuntimeError("tokenize failed")
    return list(buf[:n])


def clear(ctx):
    L.llama_memory_clear(L.llama_get_memory(ctx), True)


def decode(ctx, batch, items):
    """items: (token, pos, seq, want_logits). Returns the batch indices with logits."""
    for i, (tok, pos, seq, logits) in enumerate(items):
        batch.token[i] = tok
        batch.pos[i] = pos
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = seq
        batch.logits[i] = logits
    batch.n_tokens = len(items)
    rc = L.llama_decode(ctx, batch)
    if rc != 0:
        raise RuntimeError(f"llama_decode returned {rc}")


def prefill(ctx, batch, prompt, streams):
    """Seconds to process `streams` copies of `prompt` (one sequence each)."""
    clear(ctx)
    items = []
    for s in range(streams):
        items += [(t, p, s, p == len(prompt) - 1) for p, t in enumerate(prompt)]
    start = time.perf_counter()
    decode(ctx, batch, items)
    return time.perf_counter() - start


def generate(ctx, batch, sampler, prompt, streams):
    """Tokens/s of DECODE_TOKENS greedy steps after `prompt`, over all streams."""
    clear(ctx)
    items = []
    for s in range(streams):
        items += [(t, p, s, p == len(prompt) - 1) for p, t in enumerate(prompt)]
    decode(ctx, batch, items)
    # Logit rows of the last prompt token of each stream, in batch order.
    last = [(s + 1) * len(prompt) - 1 for s in range(streams)]
    pos = len(prompt)
    start = time.perf_counter()
    for step in range(DECODE_TOKENS):
        toks = [L.llama_sampler_sample(sampler, ctx, idx) for idx in last]
        decode(ctx, batch, [(t, pos, s, True) for s, t in enumerate(toks)])
        last = list(range(streams))
        pos += 1
    return DECODE_TOKENS * streams / (time.perf_counter() - start)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--streams", default="1,4")
    args = ap.parse_args()
    streams_list = [int(s) for s in args.streams.split(",")]
    max_streams = max(streams_list)

    L.llama_backend_init()
    L.llama_log_set(_QUIET, ctypes.c_void_p())
    model = L.llama_model_load_from_file(args.model.encode(), L.llama_model_default_params())
    cp = L.llama_context_default_params()
    cp.n_ctx = CONTEXT * max_streams
    cp.n_batch = CONTEXT
    cp.n_ubatch = 512
    cp.n_seq_max = max_streams
    cp.n_threads = args.threads
    cp.n_threads_batch = args.threads
    ctx = L.llama_init_from_model(model, cp)
    vocab = L.llama_model_get_vocab(model)
    batch = L.llama_batch_init(CONTEXT, 0, max_streams)
    sampler = L.llama_sampler_init_greedy()

    long_prompt = tokenize(vocab, PREFILL_SENTENCE * PREFILL_REPEATS)
    short_prompt = tokenize(vocab, DECODE_PROMPT)
    generate(ctx, batch, sampler, short_prompt, 1)  # warm-up
    name = os.path.basename(args.model)
    for streams in streams_list:
        pp, tg = [], []
        for _ in range(args.runs):
            pp.append(len(long_prompt) * streams / prefill(ctx, batch, long_prompt, streams))
            tg.append(generate(ctx, batch, sampler, short_prompt, streams))
        print(f"| {name} | llama.cpp | {args.threads} | {streams} | {len(long_prompt)} | "
              f"{statistics.median(pp):.0f} | {statistics.median(tg):.1f} |", flush=True)


if __name__ == "__main__":
    main()
