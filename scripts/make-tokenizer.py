#!/usr/bin/env python3
"""Regenerate models/assets/tokenizer/tiny/tokenizer.json.

A byte-level BPE with 1024 ordinary tokens (ids 0..1023) trained with
HuggingFace `tokenizers` on the embedded data (models/assets/data/*.jsonl),
followed by 17 special tokens (ids 1024..1040) mirroring MMaDA-8B's set.
No normalizer, no post-processor (no BOS/EOS insertion), no padding, no
truncation.

  python3 -m venv /tmp/ds-venv
  /tmp/ds-venv/bin/pip install tokenizers==0.23.3
  /tmp/ds-venv/bin/python scripts/make-tokenizer.py [--data-dir DIR] [--out FILE]

The script re-checks the special-token ids, the vocabulary size, byte-exact
round-trips on 200 random dataset strings and the chat-header encoding, and
prints token-length statistics of GSM rows formatted as
question + "\\n" + cot + "\\n#### " + answer.
"""
import argparse
import importlib.metadata
import json
import os
import random
import sys

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

TOKENIZERS_VERSION = "0.23.3"
VOCAB_SIZE = 1024
SPECIAL_TOKENS = [
    "<|startoftext|>",
    "<|endoftext|>",
    "<|soi|>",
    "<|eoi|>",
    "<|sov|>",
    "<|eov|>",
    "<|t2i|>",
    "<|mmu|>",
    "<|t2v|>",
    "<|v2v|>",
    "<|lvg|>",
    "[iPAD]",
    "<|r2i|>",
    "<|mdm_mask|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
]

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DATA = os.path.join(REPO_ROOT, "models", "assets", "data")
DEFAULT_OUT = os.path.join(REPO_ROOT, "models", "assets", "tokenizer", "tiny", "tokenizer.json")


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def gsm_format(row):
    return row["question"] + "\n" + row["cot"] + "\n#### " + row["answer"]


def percentile(sorted_vals, p):
    # nearest-rank percentile
    k = max(1, -(-p * len(sorted_vals) // 100))
    return sorted_vals[k - 1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", default=DEFAULT_DATA)
    ap.add_argument("--out", default=DEFAULT_OUT)
    args = ap.parse_args()

    have = importlib.metadata.version("tokenizers")
    if have != TOKENIZERS_VERSION:
        sys.exit(f"need tokenizers=={TOKENIZERS_VERSION}, found {have}")

    gsm = read_jsonl(os.path.join(args.data_dir, "gsm_symbolic.jsonl"))
    text = read_jsonl(os.path.join(args.data_dir, "text.jsonl"))

    # Training corpus, in file order: each GSM row's question, cot, answer,
    # then every text paragraph.
    corpus = []
    for r in gsm:
        corpus += [r["question"], r["cot"], r["answer"]]
    corpus += [r["text"] for r in text]

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=0,
        show_progress=False,
        special_tokens=[],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus, trainer=trainer, length=len(corpus))

    n = tok.get_vocab_size(with_added_tokens=False)
    if n != VOCAB_SIZE:
        sys.exit(f"trained vocab has {n} tokens, expected {VOCAB_SIZE}")
    if tok.add_special_tokens(SPECIAL_TOKENS) != len(SPECIAL_TOKENS):
        sys.exit("not every special token was added")

    # --- checks -----------------------------------------------------------
    for i, t in enumerate(SPECIAL_TOKENS):
        got = tok.token_to_id(t)
        if got != VOCAB_SIZE + i:
            sys.exit(f"{t} has id {got}, expected {VOCAB_SIZE + i}")
    total = tok.get_vocab_size(with_added_tokens=True)
    if total != VOCAB_SIZE + len(SPECIAL_TOKENS):
        sys.exit(f"total vocab {total}, expected {VOCAB_SIZE + len(SPECIAL_TOKENS)}")
    if tok.post_processor is not None or tok.padding is not None or tok.truncation is not None:
        sys.exit("unexpected post-processor / padding / truncation")

    rng = random.Random(0)
    pool = corpus + [gsm_format(r) for r in gsm]
    for s in rng.sample(pool, 200):
        back = tok.decode(tok.encode(s).ids)
        if back != s:
            sys.exit(f"round-trip failed: {s!r} -> {back!r}")

    chat = "<|start_header_id|>user<|end_header_id|>\nhi<|eot_id|>"
    ids = tok.encode(chat).ids
    for sid in (1038, 1039, 1040):
        if ids.count(sid) != 1:
            sys.exit(f"chat encoding {ids} lacks special id {sid} as a single token")
    if ids[0] != 1038 or ids[-1] != 1040:
        sys.exit(f"chat encoding {ids} does not start/end with the header/eot ids")

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tok.save(args.out, pretty=True)

    # --- statistics -------------------------------------------------------
    lens = sorted(len(tok.encode(gsm_format(r)).ids) for r in gsm)
    mean = sum(lens) / len(lens)
    print(f"wrote {args.out}: {total} tokens ({VOCAB_SIZE} BPE + {len(SPECIAL_TOKENS)} special)",
          file=sys.stderr)
    print(f"chat example ids: {ids}", file=sys.stderr)
    print(f"GSM rows ({len(lens)}), tokens per row: mean {mean:.1f}, min {lens[0]}, "
          f"p50 {percentile(lens, 50)}, p90 {percentile(lens, 90)}, "
          f"p99 {percentile(lens, 99)}, max {lens[-1]}", file=sys.stderr)


if __name__ == "__main__":
    main()
