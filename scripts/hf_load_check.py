#!/usr/bin/env python3
"""Opens an mmada checkpoint with the Hugging Face stack and checks it (issue 15).

    python scripts/hf_load_check.py CKPT [--mmada target/release/mmada] [--official DIR]

Needs numpy, safetensors, torch and transformers (tested with transformers 4.46.0, torch
2.15.0); the repository's test `tests/hf_interop.rs` runs it when `MMADA_HF_PYTHON` names
such a Python, and skips loudly otherwise. What it checks, in order:

1. every `*.safetensors` of CKPT loads with transformers' own safetensors loader
   (`transformers.modeling_utils.load_state_dict`, which rejects files without the
   `format: pt` metadata), and the sharded index, if any, names every tensor;
2. `config.json` has every field of the official configuration and opens with
   `transformers.PretrainedConfig`;
3. the tokenizer files open with `AutoTokenizer.from_pretrained(CKPT)`, encode like the
   `tokenizers` library reading `tokenizer.json`, and `apply_chat_template` gives the ids of
   `mmada tokenize prompt --task chat`;
4. logits: the weights transformers loaded, run through the independent NumPy reference
   (`scripts/reference/llada_reference.py`, float64), equal `mmada logits` on the same ids
   (max |error| <= 1e-4 * max(1, max |logit|): f32 against f64 arithmetic);
5. with `--official DIR` (a checkout of Gen-Verse/MMaDA), `MMadaModelLM.from_pretrained(CKPT)`
   loads with no missing or unexpected keys and its logits equal the reference's too.

Prints one line per check and exits non-zero on the first failure.
"""

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "reference"))

OFFICIAL_FIELDS = [
    "d_model", "n_layers", "n_heads", "n_kv_heads", "mlp_hidden_size", "mlp_ratio", "vocab_size",
    "embedding_size", "new_vocab_size", "llm_vocab_size", "codebook_size", "num_vq_tokens",
    "rms_norm_eps", "rope_theta", "rope", "rope_full_precision", "activation_type", "block_type",
    "layer_norm_type", "weight_tying", "include_bias", "include_qkv_bias", "attention_layer_norm",
    "scale_logits", "input_emb_norm", "max_sequence_length", "mask_token_id", "eos_token_id",
    "pad_token_id", "model_type", "architectures", "alibi", "alibi_bias_max",
    "attention_dropout", "residual_dropout", "embedding_dropout",
    "attention_layer_norm_with_affine", "layer_norm_with_affine", "bias_for_layer_norm",
    "block_group_size", "flash_attention", "multi_query_attention", "num_new_special_tokens",
    "init_fn", "init_std", "init_device", "init_cutoff_factor", "precision", "use_cache",
    "torch_dtype", "transformers_version",
]


def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("ckpt")
    ap.add_argument("--mmada", default=os.path.join(HERE, "..", "target", "release", "mmada"))
    ap.add_argument("--official", help="a checkout of github.com/Gen-Verse/MMaDA")
    a = ap.parse_args()
    import torch
    import transformers
    from safetensors.numpy import save_file
    from transformers.modeling_utils import load_state_dict
    from llada_reference import forward

    ck = a.ckpt
    print("transformers %s, torch %s" % (transformers.__version__, torch.__version__))

    # 1. safetensors through transformers' loader.
    sd = {}
    files = sorted(f for f in os.listdir(ck) if f.endswith(".safetensors"))
    if not any(f.startswith("model") for f in files):
        fail("%s has no model*.safetensors" % ck)
    for f in files:
        part = load_state_dict(os.path.join(ck, f))
        if f.startswith("model"):
            sd.update(part)
        print("ok  transformers' load_state_dict reads %s (%d tensors)" % (f, len(part)))
    index = os.path.join(ck, "model.safetensors.index.json")
    if os.path.exists(index):
        wm = json.load(open(index))["weight_map"]
        if set(wm) != set(sd):
            fail("the index names %d tensors, the shards hold %d" % (len(wm), len(sd)))
        print("ok  the index names every tensor of the shards")

    # 2. config.json.
    cfg = json.load(open(os.path.join(ck, "config.json")))
    missing = [k for k in OFFICIAL_FIELDS if k not in cfg]
    if missing:
        fail("config.json lacks %s" % missing)
    transformers.PretrainedConfig.from_pretrained(ck)
    on_disk = {str(t.dtype).replace("torch.", "") for t in sd.values()}
    if on_disk != {cfg["torch_dtype"]}:
        fail("torch_dtype %s but the tensors are %s" % (cfg["torch_dtype"], on_disk))
    print("ok  config.json has all %d official fields; torch_dtype %s matches the tensors"
          % (len(OFFICIAL_FIELDS), cfg["torch_dtype"]))

    # 3. tokenizer.
    from tokenizers import Tokenizer
    hf = transformers.AutoTokenizer.from_pretrained(ck)
    raw = Tokenizer.from_file(os.path.join(ck, "tokenizer.json"))
    text = "A boy has 17 marbles, and gives 5 away. How many are left?"
    if hf(text, add_special_tokens=False)["input_ids"] != raw.encode(text, add_special_tokens=False).ids:
        fail("AutoTokenizer and tokenizer.json encode differently")
    q = "What digit is this?"
    chat = hf.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True)
    out = subprocess.run([a.mmada, "tokenize", "prompt", "--task", "chat", "--text", q,
                          "--gen-len", "1"], capture_output=True, text=True)
    if out.returncode != 0:
        fail("mmada tokenize: " + out.stderr)
    ours = json.loads(out.stdout)["ids"][:-1]  # without the one [MASK]
    if chat != ours:
        fail("apply_chat_template %s != mmada's chat prompt %s" % (chat, ours))
    print("ok  AutoTokenizer opens the checkpoint (%d ids, bos %s, eos %s, mask %s); its chat "
          "template gives mmada's %d prompt ids" % (len(hf), hf.bos_token, hf.eos_token,
                                                    hf.mask_token, len(ours)))

    # 4. logits: NumPy reference on transformers' tensors vs `mmada logits`.
    rng = np.random.default_rng(20261202)
    ids = rng.integers(0, cfg["vocab_size"], size=(2, 13)).astype(np.int64)
    w = {k: v.float().numpy() for k, v in sd.items()}
    ref = forward(w, cfg, ids)
    with tempfile.TemporaryDirectory() as tmp:
        save_file({"input_ids": ids}, os.path.join(tmp, "in.safetensors"))
        out = subprocess.run([a.mmada, "logits", "--model", ck, "--input",
                              os.path.join(tmp, "in.safetensors"), "--output",
                              os.path.join(tmp, "out.safetensors"), "--target", "cpu"],
                             capture_output=True, text=True)
        if out.returncode != 0:
            fail("mmada logits: " + out.stderr)
        from safetensors.numpy import load_file
        got = load_file(os.path.join(tmp, "out.safetensors"))["logits"].astype(np.float64)
    tol = 1e-4 * max(1.0, float(np.max(np.abs(ref))))
    err = float(np.max(np.abs(got - ref)))
    if not err <= tol:
        fail("mmada logits differ from the NumPy reference by %.3e (tolerance %.1e)" % (err, tol))
    print("ok  mmada logits = NumPy reference on transformers' tensors: max |error| %.2e "
          "(tolerance %.1e, logits up to %.2f)" % (err, tol, float(np.max(np.abs(ref)))))

    # 5. the official model class.
    if a.official:
        sys.path.insert(0, os.path.abspath(a.official))
        from models import MMadaModelLM
        with contextlib.redirect_stdout(io.StringIO()):
            model, info = MMadaModelLM.from_pretrained(ck, torch_dtype=torch.float32,
                                                       output_loading_info=True)
        bad = {k: v for k, v in info.items() if v}
        if bad:
            fail("MMadaModelLM.from_pretrained: %s" % bad)
        model.eval()
        with torch.no_grad():
            off = model(torch.tensor(ids)).logits.double().numpy()
        err = float(np.max(np.abs(off - ref)))
        if not err <= tol:
            fail("the official model's logits differ from the reference by %.3e" % err)
        print("ok  official MMadaModelLM.from_pretrained: no missing/unexpected keys; logits = "
              "reference to %.2e" % err)
    print("all checks passed")


if __name__ == "__main__":
    main()
