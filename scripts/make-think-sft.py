#!/usr/bin/env python3
"""Writes the SFT rows that teach a tiny model UniGRPO's <think> format (issue 13's recipe).

Reads the embedded GSM-style problems (models/assets/data/gsm_symbolic.jsonl, provenance in
its README) and writes one {"prompt", "answer"} row per problem, the answer being
"<think>{cot}</think> {answer}", which `mmada train` reads as an SFT row. Standard library
only.

    python3 scripts/make-think-sft.py > /tmp/think-sft.jsonl
    mmada train /tmp/think-sft.jsonl --seq 224 --steps 1500 --out runs/think-sft
    mmada train --stage unigrpo --model runs/think-sft/checkpoint-1500 --out runs/grpo-math
"""

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(HERE, "..", "models", "assets", "data", "gsm_symbolic.jsonl")

with open(SRC, encoding="utf-8") as f:
    for line in f:
        if not line.strip():
            continue
        r = json.loads(line)
        answer = "<think>" + r["cot"].strip() + "</think> " + r["answer"].strip()
        sys.stdout.write(json.dumps({"prompt": r["question"], "answer": answer}, ensure_ascii=False) + "\n")
