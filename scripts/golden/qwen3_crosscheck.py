#!/usr/bin/env python3
"""Cross-checks models/tests/golden/qwen3.json (made by the JS implementation, qwen3_golden.mjs)
against the Python `tokenizers` package (HuggingFace, Rust core via PyO3).

How it was run (CPython 3.11.7, tokenizers 0.22.2):

    scripts/fetch-assets.sh
    python3 -m venv /tmp/qwen3-venv && /tmp/qwen3-venv/bin/pip install 'tokenizers==0.22.2'
    /tmp/qwen3-venv/bin/python scripts/golden/qwen3_crosscheck.py \
        --tokenizer .assets/qwen3/tokenizer.json --golden models/tests/golden/qwen3.json

For every case it re-encodes `text` with encode(text, add_special_tokens=False) and decodes with
decode(ids, skip_special_tokens=False), and compares ids, decoded text and the roundtrip flag;
it also checks the tokenizer's sha256, vocab size (with added tokens) and the special ids.
Prints the agreement count; exits 1 on any disagreement.
"""
import argparse
import hashlib
import json
import sys

import tokenizers
from tokenizers import Tokenizer


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer", default=".assets/qwen3/tokenizer.json")
    ap.add_argument("--golden", default="models/tests/golden/qwen3.json")
    a = ap.parse_args()

    with open(a.golden, encoding="utf-8") as f:
        golden = json.load(f)
    with open(a.tokenizer, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    problems = []
    if sha != golden["tokenizer"]["sha256"]:
        problems.append(f"sha256 of {a.tokenizer} is {sha}, golden says {golden['tokenizer']['sha256']}")

    tok = Tokenizer.from_file(a.tokenizer)
    vs = tok.get_vocab_size(with_added_tokens=True)
    if vs != golden["vocab_size_with_added"]:
        problems.append(f"vocab_size_with_added: python {vs}, golden {golden['vocab_size_with_added']}")
    for s, i in golden["special"].items():
        if tok.token_to_id(s) != i:
            problems.append(f"special {s}: python {tok.token_to_id(s)}, golden {i}")

    agree = 0
    for c in golden["cases"]:
        ids = tok.encode(c["text"], add_special_tokens=False).ids
        dec = tok.decode(ids, skip_special_tokens=False)
        bad = []
        if ids != c["ids"]:
            bad.append(f"ids python {ids} != golden {c['ids']}")
        if dec != c["decoded"]:
            bad.append(f"decoded python {dec!r} != golden {c['decoded']!r}")
        if (dec == c["text"]) != c["roundtrip"]:
            bad.append(f"roundtrip python {dec == c['text']} != golden {c['roundtrip']}")
        if bad:
            problems.append(f"case {c['name']}: " + "; ".join(bad))
        else:
            agree += 1

    n = len(golden["cases"])
    print(f"tokenizers {tokenizers.__version__}: {agree}/{n} cases agree (ids, decoded, roundtrip)")
    for p in problems:
        print("DISAGREE:", p)
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
