"""Trim a GGUF (SmolLM2, Gemma 3) to its first K blocks and first N vocabulary entries.

Quantization types are kept as stored (tensor bytes copied verbatim; the tied
token_embd/output matrix keeps its first N rows). The BPE tokenizer stays valid:
SmolLM2's merge k creates token 252+k, so the first N tokens are closed under the
first N-252 merges; merges whose parts or result fall outside are dropped.
usage: trim.py SRC DST BLOCKS VOCAB
"""
import sys
import numpy as np
import gguf

src, dst, K, N = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
r = gguf.GGUFReader(src)
arch = r.fields["general.architecture"].contents()
w = gguf.GGUFWriter(dst, arch)

def strs(f):
    return [bytes(f.parts[i]).decode("utf-8") for i in f.data]

tokens = strs(r.fields["tokenizer.ggml.tokens"])
keep = set(tokens[:N])
# A BPE vocabulary (SmolLM2) keeps the merges among kept tokens; an SPM one (Gemma 3) has none.
merges = [m for m in strs(r.fields["tokenizer.ggml.merges"])
          if all(p in keep for p in m.split(" ", 1)) and m.replace(" ", "", 1) in keep] \
    if "tokenizer.ggml.merges" in r.fields else []

for key, f in r.fields.items():
    if key.startswith("GGUF.") or key == "general.architecture":
        continue
    vt = f.types[0]
    if key == f"{arch}.block_count":
        w.add_key_value(key, K, vt)
    elif key == f"{arch}.vocab_size":
        w.add_key_value(key, N, vt)
    elif key == "tokenizer.ggml.tokens":
        w.add_key_value(key, tokens[:N], vt, f.types[1])
    elif key == "tokenizer.ggml.merges":
        w.add_key_value(key, merges, vt, f.types[1])
    elif key in ("tokenizer.ggml.token_type", "tokenizer.ggml.scores"):
        w.add_key_value(key, f.contents()[:N], vt, f.types[1])
    elif key == "general.name":
        w.add_key_value(key, f.contents() + f" (first {K} blocks, {N} tokens)", vt)
    elif vt == gguf.GGUFValueType.ARRAY:
        w.add_key_value(key, f.contents(), vt, f.types[1])
    else:
        w.add_key_value(key, f.contents(), vt)

for t in r.tensors:
    if t.name.startswith("blk.") and int(t.name.split(".")[1]) >= K:
        continue
    data = np.asarray(t.data)
    if t.name in ("token_embd.weight", "output.weight"):
        assert data.shape[0] == len(tokens), (t.name, data.shape)
        data = data[:N]
    qt = t.tensor_type
    w.add_tensor(t.name, np.ascontiguousarray(data), raw_dtype=qt)
    print(t.name, qt.name, data.shape, file=sys.stderr)

w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
print(f"{dst}: {K} blocks, {N} tokens, {len(merges)} merges")
