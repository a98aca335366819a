#!/usr/bin/env bash
# Make the trained bench-tiny checkpoint and the 64-token prompt that the text-sampling side by
# side (scripts/sampling_side_by_side.py, issue 11 acceptance 4) runs on: a model that has
# half-memorised a few GSM problems, so that the threshold of the cached samplers fires and the
# token agreement with the official sampler means something (random weights never pass 0.9).
#
#   REFPY=... scripts/make-sampling-checkpoint.sh OFFICIAL WORK
#
# OFFICIAL: a checkout of github:Gen-Verse/MMaDA; REFPY: a Python with torch (../shared/tools).
# Writes WORK/ckpt (the checkpoint) and WORK/prompt.txt (the prompt ids). About 15 minutes on
# 2 cores. Needs `cargo build --release`.
set -euo pipefail
official=${1:?usage: make-sampling-checkpoint.sh OFFICIAL WORK}
work=${2:?usage: make-sampling-checkpoint.sh OFFICIAL WORK}
refpy=${REFPY:-python3}
mmada=${MMADA:-target/release/mmada}
data=models/assets/data/gsm_symbolic.jsonl
mkdir -p "$work"

# 1. Random bench-tiny weights from the official model (torch seed 0), with the tiny tokenizer's
#    mask and end ids, written as a checkpoint of ours.
"$refpy" scripts/official_sampling.py "$official" "$work/random" --save-random bench-tiny \
    --mask-id 1037 --eos-id 1025
# 2. The embedded text and problems, then all GSM problems, then 64 of them (lines 432-495).
"$mmada" train --model "$work/random" --steps 800 --batch 4 --save-every 0 --keep 1 \
    --out "$work/s1" --log > "$work/s1.log"
"$mmada" train --model "$work/s1/checkpoint-800" "$data" --steps 600 --lr 1.5e-3 \
    --save-every 0 --keep 1 --out "$work/s2" --log > "$work/s2.log"
sed -n 432,495p "$data" > "$work/gsm64.jsonl"
"$mmada" train --model "$work/s2/checkpoint-600" "$work/gsm64.jsonl" --steps 700 --lr 1e-3 \
    --save-every 0 --keep 1 --out "$work/s3" --log > "$work/s3.log"
rm -rf "$work/ckpt" && cp -r "$work/s3/checkpoint-700" "$work/ckpt"

# 3. The prompt: the chat layout (the embedded tiny tokenizer, the one the checkpoint was
#    trained with) of the first of those 64 questions, exactly 64 ids.
question=$(sed -n 432p "$data" | python3 -c 'import json,sys; print(json.load(sys.stdin)["question"])')
"$mmada" tokenize prompt --task chat --text "$question" --gen-len 1 |
    python3 -c 'import json,sys; ids=json.load(sys.stdin)["ids"][:-1]; assert len(ids)==64, len(ids); print(" ".join(map(str,ids)))' \
    > "$work/prompt.txt"
echo "checkpoint: $work/ckpt; prompt: $work/prompt.txt"
