#!/usr/bin/env python3
"""Run the OFFICIAL MMaDA text sampler (`mmu_generate`, PyTorch eager, CPU) on one of OUR
checkpoints, to compare outputs and tokens/s with `mmada bench --sampling --checkpoint DIR`.

The official code is imported from a checkout given on the command line (see README: it is
never copied into this repository). Our checkpoints are the Hugging Face layout with the
official config field names and tensor names, so the official `MMadaModelLM` is built from
our config.json and takes our safetensors weights with `load_state_dict(strict=True)`.

usage:
  official_sampling.py OFFICIAL CKPT --prompt-ids FILE [--gen 128 --block 32 --steps 128]
                       [--reps 1] [--threads 2] [--out FILE]
  official_sampling.py OFFICIAL CKPT --save-random bench-tiny [--mask-id M --eos-id E]
                       # write a random official model (torch seed 0) as a checkpoint of ours
                       # into CKPT; with the tiny tokenizer's ids (1037, 1025) `mmada train
                       # --from CKPT` trains it on the embedded text

FILE holds whitespace-separated prompt ids (what `mmada bench --sampling --checkpoint` writes
with --dump-ids). Prints one JSON object: the generated ids (prompt excluded), the median
seconds over --reps generations after one warm-up, and tokens per second.
"""
import argparse, contextlib, io, json, os, sys, time

ap = argparse.ArgumentParser()
ap.add_argument("official")
ap.add_argument("ckpt")
ap.add_argument("--prompt-ids")
ap.add_argument("--gen", type=int, default=128)
ap.add_argument("--block", type=int, default=32)
ap.add_argument("--steps", type=int, default=128)
ap.add_argument("--reps", type=int, default=1)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--out")
ap.add_argument("--save-random", metavar="PRESET")
ap.add_argument("--mask-id", type=int, help="with --save-random: [MASK] id (default: the last row)")
ap.add_argument("--eos-id", type=int, help="with --save-random: end-of-text/pad id (default: the one before)")
a = ap.parse_args()
sys.path.insert(0, a.official)

import torch
from safetensors.torch import load_file, save_file

with contextlib.redirect_stdout(io.StringIO()):
    from models.modeling_mmada import MMadaModelLM, MMadaConfig

torch.set_num_threads(a.threads)
torch.manual_seed(0)

# The official constructor needs a few fields our config.json leaves out (they are fixed for
# MMaDA checkpoints); ours override them where present.
FIXED = dict(model_type="mmada", mlp_ratio=4, block_group_size=1, alibi=False, alibi_bias_max=8.0,
             attention_layer_norm_with_affine=True, bias_for_layer_norm=False, layer_norm_with_affine=True,
             attention_dropout=0.0, residual_dropout=0.0, embedding_dropout=0.0, flash_attention=False,
             use_cache=False, init_fn="normal", init_std=0.02, init_device="cpu", init_cutoff_factor=None,
             precision=None, multi_query_attention=None)

PRESETS = {  # BENCHMARKS.md's configs, as ../shared/tools/bench_official.py builds them
    "bench-tiny": dict(d_model=256, n_layers=4, n_heads=8, mlp_hidden_size=704, vocab=4096),
    "bench-small": dict(d_model=512, n_layers=8, n_heads=8, mlp_hidden_size=1408, vocab=8192),
}


def build(cfg):
    with contextlib.redirect_stdout(io.StringIO()):
        return MMadaModelLM(MMadaConfig(**{**FIXED, **cfg}))


if a.save_random:
    c = PRESETS[a.save_random]
    v = c["vocab"]
    mask = v - 1 if a.mask_id is None else a.mask_id
    eos = v - 2 if a.eos_id is None else a.eos_id
    cfg = dict(d_model=c["d_model"], n_layers=c["n_layers"], n_heads=c["n_heads"], n_kv_heads=c["n_heads"],
               mlp_hidden_size=c["mlp_hidden_size"], activation_type="silu", block_type="llama",
               layer_norm_type="rms", rms_norm_eps=1e-5, rope=True, rope_full_precision=True,
               rope_theta=500000.0, attention_layer_norm=False, include_bias=False, include_qkv_bias=False,
               scale_logits=False, input_emb_norm=False, weight_tying=False, vocab_size=v, embedding_size=v,
               new_vocab_size=v, llm_vocab_size=v, mask_token_id=mask, eos_token_id=eos,
               pad_token_id=eos, max_sequence_length=4096, architectures=["MMadaModelLM"])
    model = build(cfg)
    os.makedirs(a.ckpt, exist_ok=True)
    json.dump({**cfg, "model_type": "mmada"}, open(os.path.join(a.ckpt, "config.json"), "w"), indent=2)
    sd = {k: t.detach().contiguous() for k, t in model.state_dict().items()}
    save_file(sd, os.path.join(a.ckpt, "model.safetensors"), metadata={"format": "pt"})
    print(json.dumps({"saved": a.ckpt, "tensors": len(sd)}))
    sys.exit(0)

cfg = json.load(open(os.path.join(a.ckpt, "config.json")))
cfg = {k: v for k, v in cfg.items() if not k.startswith("_")}
model = build(cfg)
weights = {}
for f in sorted(os.listdir(a.ckpt)):
    if f.startswith("model") and f.endswith(".safetensors"):  # not optimizer.safetensors
        weights.update(load_file(os.path.join(a.ckpt, f)))
model.load_state_dict({k: t.float() for k, t in weights.items()}, strict=True)
model.eval()

prompt = torch.tensor([[int(t) for t in open(a.prompt_ids).read().split()]], dtype=torch.long)
mask = cfg["mask_token_id"]
times, out = [], None
with torch.no_grad():
    for r in range(a.reps + 1):
        s = time.perf_counter()
        out = model.mmu_generate(prompt, max_new_tokens=a.gen, steps=a.steps, block_length=a.block,
                                 temperature=0.0, mask_id=mask)
        if r > 0:  # the first run is the warm-up
            times.append(time.perf_counter() - s)
times.sort()
med = times[len(times) // 2]
res = {"ids": out[0, prompt.shape[1]:].tolist(),  # mmu_generate returns prompt + generation
       "median_s": med, "tokens_per_s": a.gen / med, "reps": a.reps}
text = json.dumps(res)
if a.out:
    open(a.out, "w").write(text + "\n")
print(json.dumps({k: v for k, v in res.items() if k != "ids"}))
