#!/usr/bin/env python3
"""Regenerate the embedded default training data under models/assets/data/.

Produces, byte-for-byte deterministically:
  gsm_symbolic.jsonl  {"question", "cot", "answer"} rows from reasoning-gym's
                      'gsm_symbolic' generator (size=2000, seed=42)
  text.jsonl          {"text"} paragraphs of "In the Year 2889" (Jules and
                      Michel Verne, public domain), shipped inside the
                      reasoning-gym wheel as reasoning_gym/data/in_the_year_2889.txt

Requires only the standard library and reasoning-gym==0.1.25:
  python3 -m venv /tmp/ds-venv
  /tmp/ds-venv/bin/pip install reasoning-gym==0.1.25
  /tmp/ds-venv/bin/python scripts/make-dataset.py [--out-dir DIR]
"""
import argparse
import importlib.metadata
import importlib.resources
import json
import os
import re
import sys

import reasoning_gym

RG_VERSION = "0.1.25"
GENERATOR = "gsm_symbolic"
SIZE = 2000
SEED = 42
TEXT_RESOURCE = ("data", "in_the_year_2889.txt")
MIN_PARAGRAPH_CHARS = 40

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(REPO_ROOT, "models", "assets", "data")


def write_jsonl(path, rows):
    # newline="\n" keeps '\n' line endings on every platform.
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for obj in rows:
            f.write(json.dumps(obj, ensure_ascii=False))
            f.write("\n")


def gsm_rows():
    ds = reasoning_gym.create_dataset(GENERATOR, size=SIZE, seed=SEED)
    rows, dropped = [], []
    for i in range(len(ds)):
        x = ds[i]
        answer = str(x["answer"])
        full = x["metadata"]["answer_cot"]
        lines = full.rstrip().split("\n")
        last = lines[-1].strip() if lines else ""
        if not last.startswith("####"):
            dropped.append((i, "no trailing '#### <answer>' line"))
            continue
        final = last[len("####"):].strip()
        if final != answer:
            dropped.append((i, f"'#### {final}' != answer {answer!r}"))
            continue
        cot = "\n".join(lines[:-1]).strip()
        rows.append({"question": x["question"], "cot": cot, "answer": answer})
    return rows, dropped


def text_rows():
    res = importlib.resources.files("reasoning_gym").joinpath(*TEXT_RESOURCE)
    raw = res.read_text(encoding="utf-8").replace("\r\n", "\n").replace("\r", "\n")
    lines = raw.split("\n")
    start = next((i for i, l in enumerate(lines) if l.startswith("*** START OF")), None)
    end = next((i for i, l in enumerate(lines) if l.startswith("*** END OF")), None)
    lo = start + 1 if start is not None else 0
    hi = end if end is not None else len(lines)
    body = "\n".join(lines[lo:hi])
    rows, dropped_short, dropped_pg = [], 0, 0
    for para in re.split(r"\n[ \t]*\n", body):
        text = " ".join(para.split())
        if not text:
            continue
        if len(text) < MIN_PARAGRAPH_CHARS:
            dropped_short += 1
            continue
        # Remaining Gutenberg boilerplate inside the markers, e.g.
        # "End of Project Gutenberg's In the Year 2889, ..." -- removed so the
        # derived text carries no Project Gutenberg references (licence 1.C).
        if "Project Gutenberg" in text:
            dropped_pg += 1
            continue
        rows.append({"text": text})
    return rows, dropped_short, dropped_pg


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out-dir", default=DEFAULT_OUT)
    args = ap.parse_args()

    have = importlib.metadata.version("reasoning-gym")
    if have != RG_VERSION:
        sys.exit(f"need reasoning-gym=={RG_VERSION}, found {have}")

    os.makedirs(args.out_dir, exist_ok=True)

    gsm, dropped = gsm_rows()
    write_jsonl(os.path.join(args.out_dir, "gsm_symbolic.jsonl"), gsm)
    print(f"gsm_symbolic.jsonl: {len(gsm)} rows, {len(dropped)} dropped", file=sys.stderr)
    for i, why in dropped:
        print(f"  dropped item {i}: {why}", file=sys.stderr)

    text, short, pg = text_rows()
    write_jsonl(os.path.join(args.out_dir, "text.jsonl"), text)
    print(f"text.jsonl: {len(text)} rows ({short} paragraphs < {MIN_PARAGRAPH_CHARS} chars "
          f"and {pg} Gutenberg boilerplate paragraphs dropped)", file=sys.stderr)


if __name__ == "__main__":
    main()
