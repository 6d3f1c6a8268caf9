#!/usr/bin/env python3
"""Writes routers/default/data/<category>_shapes.jsonl from the prompts in this folder.

The prompts are written for this project (none is copied or paraphrased from a public
benchmark). They add the *shapes* in which benchmark-style questions arrive, which the
conversational prompts of data/<category>.jsonl lack: multiple-choice questions with
lettered options across many subjects, numeric physics problems, short-answer knowledge
questions, word and competition math, function signatures with docstrings, "what does
this program print", puzzle formats (dates, swaps, directions, tables, orderings,
validity of arguments), extraction from a given text into a given format, and follow-up
turns. Each item is its own question; the only templating is the layout of an option
list, picked per item by a seeded RNG, so a run is reproducible:

    python3 routers/default/gen/build.py
"""

import json
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import batch2  # noqa: E402
import batch3  # noqa: E402
import batch5  # noqa: E402
import coding_math  # noqa: E402
import extraction_writing  # noqa: E402
import reasoning_general  # noqa: E402
import stem_humanities  # noqa: E402

SEED = 20241130
LETTERS = "ABCDEFGH"


def mc(rng: random.Random, q: str, options: list, subject: str) -> str:
    """One multiple-choice question in one of the layouts people paste them in."""
    style = rng.randrange(7)
    if style == 0:
        opts = "\n".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(options))
        return f"{q}\n{opts}"
    if style == 1:
        opts = "\n".join(f"({LETTERS[i]}) {o}" for i, o in enumerate(options))
        return f"{q}\n{opts}"
    if style == 2:
        opts = "  ".join(f"{LETTERS[i]}) {o}" for i, o in enumerate(options))
        return f"{q} {opts}"
    if style == 3:
        opts = "\n".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(options))
        return f"The following is a multiple choice question about {subject}.\n\n{q}\n{opts}\nAnswer:"
    if style == 4:
        opts = "\n".join(f"- {o}" for o in options)
        return f"{q}\nOptions:\n{opts}"
    if style == 5:
        opts = "\n".join(f"{LETTERS[i]}: {o}" for i, o in enumerate(options))
        return f"Pick the correct answer and explain briefly.\n{q}\n{opts}"
    opts = ", ".join(f"({LETTERS[i].lower()}) {o}" for i, o in enumerate(options))
    return f"{q} Choices: {opts}"


def follow_up(first: str, second: str) -> dict:
    return {
        "messages": [
            {"role": "user", "content": first},
            {"role": "assistant", "content": "(answer)"},
            {"role": "user", "content": second},
        ]
    }


def main() -> None:
    rng = random.Random(SEED)
    out_dir = HERE.parent / "data"
    # Batches from the fifth on lay out their option lists with their own RNG, so that
    # adding one leaves every earlier prompt exactly as it was.
    later = {batch5: random.Random(SEED + 4)}
    items = {}
    for module in (stem_humanities, coding_math, reasoning_general, extraction_writing, batch2, batch3, batch5):
        for category, entries in module.ITEMS.items():
            items.setdefault(category, []).extend((later.get(module, rng), e) for e in entries)
    seen = set()
    for category in sorted(items):
        rows = []
        for layout_rng, e in items[category]:
            if isinstance(e, str):
                rec = {"prompt": e.strip()}
            elif e[0] == "mc":
                _, subject, q, options = e
                rec = {"prompt": mc(layout_rng, q.strip(), options, subject)}
            elif e[0] == "follow":
                rec = follow_up(e[1].strip(), e[2].strip())
            else:
                raise ValueError(f"unknown item kind {e[0]!r}")
            key = json.dumps(rec, sort_keys=True).lower()
            if key in seen:
                raise ValueError(f"duplicate item in {category}: {key[:80]}")
            seen.add(key)
            rec["category"] = category
            rows.append(rec)
        path = out_dir / f"{category}_shapes.jsonl"
        with path.open("w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        print(f"{path.name}: {len(rows)}")


if __name__ == "__main__":
    main()
