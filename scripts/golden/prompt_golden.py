#!/usr/bin/env python3
"""Golden layouts of MMaDA's universal prompting (spec shared/spec/mmada.md §3), computed by an
independent Python implementation written from the spec, with the Python `tokenizers` package on
the embedded tiny tokenizer. The Rust test models/tests/prompts.rs compares every layout of
mmada_models::prompt against this file: ids, prompt mask and key mask.

Regenerate (from the repository root):
    python3 -m venv /tmp/tokvenv && /tmp/tokvenv/bin/pip install tokenizers==0.22.1
    /tmp/tokvenv/bin/python scripts/golden/prompt_golden.py > models/tests/golden/prompts.json

Ids of the tiny tokenizer (models/assets/tokenizer/tiny/README.md): BOS 1024, EOS 1025, soi 1026,
eoi 1027, t2i 1030, mmu 1031, [iPAD] 1035, r2i 1036, [MASK] 1037, start/end header 1038/1039,
eot_id 1040; image code k is id 1041 + k.
"""

import json
import sys

from tokenizers import Tokenizer

TOK = Tokenizer.from_file("models/assets/tokenizer/tiny/tokenizer.json")
BOS, EOS, SOI, EOI, T2I, MMU, IPAD, R2I, MASK = 1024, 1025, 1026, 1027, 1030, 1031, 1035, 1036, 1037
END_HEADER = 1039
OFFSET = 1041
THINK = ("You should first think about the reasoning process in the mind and then provide the "
         "user with the answer. The reasoning process is enclosed within <think> </think> tags, "
         "i.e. <think> reasoning process here </think> answer here\n")
R2I_TEXT = ("You should first think out a more detailed version of the description and then "
            "provide the user with the image. The detailed description is enclosed within "
            "<think> </think> tags, i.e. <think> detailed description here </think> image here\n")


def text_ids(s):
    ids = TOK.encode(s, add_special_tokens=False).ids
    return ids if ids[:1] == [BOS] else [BOS] + ids


def chat(messages, literal=False):
    end = "<eot_id>" if literal else "<|eot_id|>"
    out = "".join(f"<|start_header_id|>{r}<|end_header_id|>\n{c.strip()}{end}" for r, c in messages)
    return out + "<|start_header_id|>assistant<|end_header_id|>\n"


def last_header(ids):
    pos = [i for i, t in enumerate(ids) if t == END_HEADER]
    return pos[-1] + 1 if pos else 0


def fixed(ids, n):
    ids = ids + [EOS]
    if len(ids) > n:
        ids = ids[: n - 1] + [EOS]
    return ids + [EOS] * (n - len(ids))


def t2i(caption, image, lt):
    block = [T2I] + text_ids(caption) + [EOS]
    pad = max(0, lt + 1 - len(block))
    if len(block) > lt + 1:
        block = block[:lt] + [EOS]
    ids = [IPAD] * pad + block + [SOI] + image + [EOI]
    img = range(lt + 2, lt + 2 + len(image))
    return ids, [i not in img for i in range(len(ids))], [i >= pad for i in range(len(ids))]


def mmu(codes, q, a, lt, literal=False):
    text = fixed(text_ids(chat([("user", q)], literal) + a), lt)
    ids = [MMU, SOI] + [OFFSET + c for c in codes] + [EOI] + text
    p = len(codes) + 3 + last_header(text)
    return ids, [i < p for i in range(len(ids))], [True] * len(ids)


def with_masks(ids, gen):
    p = len(ids)
    ids = ids + [MASK] * gen
    return ids, [i < p for i in range(len(ids))], [True] * len(ids)


def lm(text, n):
    ids = (text_ids(text) + [EOS])[:n]
    ids = ids + [EOS] * (n - len(ids))
    return ids, [False] * n, [True] * n


def chat_row(messages, answer, n):
    ids = (text_ids(chat(messages) + answer) + [EOS])[:n]
    ids = ids + [EOS] * (n - len(ids))
    p = last_header(ids)
    return ids, [i < p for i in range(n)], [True] * n


def r2i(short, long, image, lt):
    text = fixed(text_ids(chat([("user", R2I_TEXT + short)]) + f"<think>{long}</think>"), lt)
    p = last_header(text) or len(text)
    ids = [R2I] + text + [SOI] + image + [EOI]
    soi, eoi = 1 + len(text), len(ids) - 1
    mask = [i == 0 or 1 <= i < 1 + p or i in (soi, eoi) for i in range(len(ids))]
    return ids, mask, [True] * len(ids)


codes = [0, 5, 255, 17]
cases = {
    "t2i": t2i("a 7", [OFFSET + c for c in codes], 8),
    "t2i_truncated": t2i("the digit seven", [OFFSET + c for c in codes], 8),
    "t2i_null": t2i("", [OFFSET + c for c in codes], 8),
    "t2i_generate": t2i("a 7", [MASK] * 4, 8),
    "mmu": mmu(codes, "What digit is this?", "seven", 40),
    "mmu_literal_eot": mmu(codes, "What digit is this?", "seven", 40, literal=True),
    "mmu_truncated": mmu(codes, "What digit is this?", "the digit seven", 20),
    "mmu_infer": with_masks([MMU, SOI] + [OFFSET + c for c in codes] + [EOI]
                            + text_ids(chat([("user", "What digit is this?")])), 6),
    "lm": lm("the digit seven", 12),
    "lm_truncated": lm("the digit seven", 5),
    "chat": chat_row([("user", " What is 2+2? ")], "4", 30),
    "chat_truncated": chat_row([("user", "What is 2+2?")], "4", 10),
    "chat_infer": with_masks(text_ids(chat([("user", "What is 2+2?")])), 5),
    "cot_chat": chat_row([("user", THINK + "What is 2+2?")], "<think>2+2=4</think> 4", 140),
    "r2i": r2i("a 7", "a seven, thin", [MASK] * 4, 140),
    "r2i_truncated": r2i("a 7", "a seven, thin", [OFFSET + c for c in codes], 20),
}
out = {
    "generated_by": "scripts/golden/prompt_golden.py (tokenizers "
                    + __import__("tokenizers").__version__ + ")",
    "cases": {k: {"ids": v[0], "prompt_mask": [int(b) for b in v[1]],
                  "key_mask": [int(b) for b in v[2]]} for k, v in cases.items()},
}
json.dump(out, sys.stdout, indent=None)
sys.stdout.write("\n")
