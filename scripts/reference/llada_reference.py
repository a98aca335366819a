#!/usr/bin/env python3
"""Independent NumPy reference for the LLaDA / MMaDA transformer forward pass.

Written from the project specification (/work/shared/spec/mmada.md, sections
1.1-1.5) only; it shares no code with the Rust implementation and copies no
third-party code.  All arithmetic is done in float64.

Generated / verified with:
    Python 3.11.7, numpy 2.4.6, safetensors 0.8.0
    (venv outside the repository: python3 -m venv /tmp/ref-venv &&
     /tmp/ref-venv/bin/pip install numpy safetensors)

Regenerate the fixture (from the repository root):
    /tmp/ref-venv/bin/python scripts/reference/llada_reference.py \
        --out tests/fixtures/tiny_llada

What it writes into --out:
    config.json              official config field names (spec 1.4), tiny sizes
    model.safetensors        float32 weights, official tensor names (spec 1.5)
    model-bf16/              same weights rounded to bfloat16, stored as 2 HF
                             shards + model.safetensors.index.json + config.json
    inputs.safetensors       input_ids int64 [2,7], attention_mask bool [2,7]
    logits.safetensors       logits / logits_masked / logits_bf16, float32 [2,7,61]
    README.md                provenance

Model summary (spec 1.2):
    x = wte[ids]
    per block:  h = RMSNorm_attn(x); q,k,v = h Wq^T, h Wk^T, h Wv^T
                RoPE (rotate-half, theta = rope_theta, positions 0..T-1) on q,k
                p = softmax(q k^T / sqrt(hd) + bias); x += attn_out(concat_heads(p v))
                g = RMSNorm_ff(x);  x += ff_out(silu(ff_proj g) * up_proj g)
    x = RMSNorm_f(x); logits = x W_head^T   (W_head = model.transformer.ff_out.weight)
    bias: 0 for allowed keys, float32-min for keys whose attention_mask is False.
"""

import argparse
import json
import math
import os
import struct
import sys

import numpy as np
import safetensors
from safetensors.numpy import load_file, save_file

SEED = 20261128
F32_MIN = float(np.finfo(np.float32).min)  # additive bias for disallowed keys

CONFIG = {
    "model_type": "mmada",
    "architectures": ["MMadaModelLM"],
    "d_model": 32,
    "n_layers": 2,
    "n_heads": 4,
    "n_kv_heads": 4,
    "mlp_hidden_size": 48,
    "mlp_ratio": 4,
    "activation_type": "silu",
    "block_type": "llama",
    "block_group_size": 1,
    "layer_norm_type": "rms",
    "layer_norm_with_affine": True,
    "rms_norm_eps": 1e-05,
    "bias_for_layer_norm": False,
    "rope": True,
    "rope_full_precision": True,
    "rope_theta": 500000.0,
    "alibi": False,
    "alibi_bias_max": 8.0,
    "attention_layer_norm": False,
    "attention_layer_norm_with_affine": True,
    "include_bias": False,
    "include_qkv_bias": False,
    "scale_logits": False,
    "input_emb_norm": False,
    "attention_dropout": 0.0,
    "residual_dropout": 0.0,
    "embedding_dropout": 0.0,
    "flash_attention": False,
    "weight_tying": False,
    "tie_word_embeddings": False,
    "vocab_size": 61,
    "embedding_size": 61,
    "new_vocab_size": 61,
    "llm_vocab_size": 61,
    "codebook_size": 8,
    "num_vq_tokens": 4,
    "num_new_special_tokens": 0,
    "mask_token_id": 60,
    "eos_token_id": 59,
    "pad_token_id": 59,
    "max_sequence_length": 4096,
    "use_cache": False,
    "precision": "amp_bf16",
    "init_fn": "mitchell",
    "init_std": 0.02,
    "init_device": "meta",
    "init_cutoff_factor": None,
    "w_clip_vit": False,
    "auto_map": {
        "AutoConfig": "configuration_llada.LLaDAConfig",
        "AutoModel": "modeling_llada.LLaDAModelLM",
    },
}

# Fixed inputs.  Row 1 is left-padded with pad id 59 (attention_mask False there);
# 60 is the mask token id.
INPUT_IDS = np.array(
    [
        [12, 5, 60, 33, 60, 7, 59],
        [59, 59, 41, 60, 2, 18, 60],
    ],
    dtype=np.int64,
)
ATTENTION_MASK = np.array(
    [
        [True, True, True, True, True, True, True],
        [False, False, True, True, True, True, True],
    ],
    dtype=bool,
)

PREFIX = "model.transformer."


# --------------------------------------------------------------------------
# weights
# --------------------------------------------------------------------------

def weight_shapes(cfg):
    """Ordered (name, shape, kind) list; the order fixes the RNG draw order."""
    d, m, v = cfg["d_model"], cfg["mlp_hidden_size"], cfg["embedding_size"]
    out = [(PREFIX + "wte.weight", (v, d), "emb")]
    for i in range(cfg["n_layers"]):
        b = PREFIX + "blocks.%d." % i
        out += [
            (b + "attn_norm.weight", (d,), "norm"),
            (b + "q_proj.weight", (d, d), "mat"),
            (b + "k_proj.weight", (d, d), "mat"),
            (b + "v_proj.weight", (d, d), "mat"),
            (b + "attn_out.weight", (d, d), "mat"),
            (b + "ff_norm.weight", (d,), "norm"),
            (b + "ff_proj.weight", (m, d), "mat"),
            (b + "up_proj.weight", (m, d), "mat"),
            (b + "ff_out.weight", (d, m), "mat"),
        ]
    out += [
        (PREFIX + "ln_f.weight", (d,), "norm"),
        (PREFIX + "ff_out.weight", (v, d), "mat"),
    ]
    return out


def make_weights(cfg, seed=SEED):
    rng = np.random.default_rng(seed)
    w = {}
    for name, shape, kind in weight_shapes(cfg):
        z = rng.standard_normal(shape)
        if kind == "emb":
            t = z
        elif kind == "norm":
            t = 1.0 + 0.1 * z
        else:
            t = 0.2 * z
        w[name] = np.ascontiguousarray(t.astype(np.float32))
    return w


# --------------------------------------------------------------------------
# model (float64)
# --------------------------------------------------------------------------

def rms_norm(x, w, eps):
    ms = np.mean(x * x, axis=-1, keepdims=True)
    return w * (x / np.sqrt(ms + eps))


def silu(x):
    return x / (1.0 + np.exp(-x))


def rope_cos_sin(T, hd, theta):
    half = hd // 2
    inv_freq = 1.0 / (theta ** (np.arange(half, dtype=np.float64) * 2.0 / hd))
    ang = np.arange(T, dtype=np.float64)[:, None] * inv_freq[None, :]  # [T, half]
    return np.cos(ang), np.sin(ang)


def apply_rope(x, cos, sin):
    """x: [..., T, hd]; rotate-half: a = x[:hd/2], b = x[hd/2:]."""
    half = x.shape[-1] // 2
    a, b = x[..., :half], x[..., half:]
    return np.concatenate([a * cos - b * sin, b * cos + a * sin], axis=-1)


def softmax(s):
    s = s - np.max(s, axis=-1, keepdims=True)
    e = np.exp(s)
    return e / np.sum(e, axis=-1, keepdims=True)


def key_bias(key_mask, T):
    """bool [B, T] (True = may attend) -> additive float64 bias [B, 1, 1, T]."""
    if key_mask is None:
        return None
    key_mask = np.asarray(key_mask, dtype=bool)
    assert key_mask.shape[-1] == T
    return np.where(key_mask, 0.0, F32_MIN)[:, None, None, :]


def attention(h, wq, wk, wv, wo, cfg, key_mask=None, return_probs=False):
    """h: [B, T, d] (already normed). Returns [B, T, d] (after attn_out)."""
    B, T, d = h.shape
    H = cfg["n_heads"]
    hd = d // H
    q = (h @ wq.T).reshape(B, T, H, hd).transpose(0, 2, 1, 3)  # [B,H,T,hd]
    k = (h @ wk.T).reshape(B, T, H, hd).transpose(0, 2, 1, 3)
    v = (h @ wv.T).reshape(B, T, H, hd).transpose(0, 2, 1, 3)
    cos, sin = rope_cos_sin(T, hd, cfg["rope_theta"])
    q = apply_rope(q, cos, sin)
    k = apply_rope(k, cos, sin)
    s = (q @ k.transpose(0, 1, 3, 2)) / math.sqrt(hd)  # [B,H,Tq,Tk]
    bias = key_bias(key_mask, T)
    if bias is not None:
        s = s + bias
    p = softmax(s)
    o = (p @ v).transpose(0, 2, 1, 3).reshape(B, T, d)  # concat heads
    out = o @ wo.T
    if return_probs:
        return out, p, o
    return out


def forward(w, cfg, ids, key_mask=None):
    """w: name -> array (any float dtype, used as float64); ids: int [B, T]."""
    w = {k: np.asarray(v, dtype=np.float64) for k, v in w.items()}
    eps = cfg["rms_norm_eps"]
    x = w[PREFIX + "wte.weight"][np.asarray(ids)]  # [B, T, d]
    for i in range(cfg["n_layers"]):
        b = PREFIX + "blocks.%d." % i
        h = rms_norm(x, w[b + "attn_norm.weight"], eps)
        x = x + attention(h, w[b + "q_proj.weight"], w[b + "k_proj.weight"],
                          w[b + "v_proj.weight"], w[b + "attn_out.weight"],
                          cfg, key_mask)
        g = rms_norm(x, w[b + "ff_norm.weight"], eps)
        ff = silu(g @ w[b + "ff_proj.weight"].T) * (g @ w[b + "up_proj.weight"].T)
        x = x + ff @ w[b + "ff_out.weight"].T
    x = rms_norm(x, w[PREFIX + "ln_f.weight"], eps)
    return x @ w[PREFIX + "ff_out.weight"].T


# --------------------------------------------------------------------------
# self-checks
# --------------------------------------------------------------------------

def slow_head(h, wq, wk, wv, cfg, head, key_mask_row=None):
    """Loop-only computation of one head's pre-attn_out output for one sequence.

    h: [T, d] float64.  Returns (out [T, hd], probs [T, T])."""
    T, d = h.shape
    H = cfg["n_heads"]
    hd = d // H
    half = hd // 2
    theta = cfg["rope_theta"]

    def proj(W):
        r = [[0.0] * hd for _ in range(T)]
        for t in range(T):
            for j in range(hd):
                row = head * hd + j
                acc = 0.0
                for c in range(d):
                    acc += float(h[t, c]) * float(W[row, c])
                r[t][j] = acc
        return r

    def rope(vecs):
        r = [[0.0] * hd for _ in range(T)]
        for p in range(T):
            for i in range(half):
                angle = p * (1.0 / theta ** (2.0 * i / hd))
                c, s = math.cos(angle), math.sin(angle)
                a, b = vecs[p][i], vecs[p][i + half]
                r[p][i] = a * c - b * s
                r[p][i + half] = b * c + a * s
        return r

    q = rope(proj(wq))
    k = rope(proj(wk))
    v = proj(wv)
    out = np.zeros((T, hd))
    probs = np.zeros((T, T))
    for tq in range(T):
        scores = []
        for tk in range(T):
            s = 0.0
            for j in range(hd):
                s += q[tq][j] * k[tk][j]
            s /= math.sqrt(hd)
            if key_mask_row is not None and not key_mask_row[tk]:
                s += F32_MIN
            scores.append(s)
        mx = max(scores)
        ex = [math.exp(s - mx) for s in scores]
        z = sum(ex)
        for tk in range(T):
            probs[tq, tk] = ex[tk] / z
        for j in range(hd):
            acc = 0.0
            for tk in range(T):
                acc += probs[tq, tk] * v[tk][j]
            out[tq, j] = acc
    return out, probs


def self_check(weights, cfg):
    w = {k: v.astype(np.float64) for k, v in weights.items()}
    d = cfg["d_model"]
    hd = d // cfg["n_heads"]
    b = PREFIX + "blocks.0."
    x = w[PREFIX + "wte.weight"][INPUT_IDS]
    h = rms_norm(x, w[b + "attn_norm.weight"], cfg["rms_norm_eps"])

    # RMSNorm against an explicit loop (one row).
    row = x[1, 3]
    ms = sum(float(e) * float(e) for e in row) / d
    ref = [float(w[b + "attn_norm.weight"][c]) * float(row[c]) / math.sqrt(ms + cfg["rms_norm_eps"])
           for c in range(d)]
    assert np.max(np.abs(h[1, 3] - np.array(ref))) < 1e-12

    # RoPE: rotation preserves the norm of each (a_i, b_i) pair; position 0 is identity.
    cos, sin = rope_cos_sin(5, hd, cfg["rope_theta"])
    z = np.random.default_rng(1).standard_normal((5, hd))
    rz = apply_rope(z, cos, sin)
    half = hd // 2
    assert np.allclose(rz[0], z[0], atol=0, rtol=0)
    assert np.allclose(rz[:, :half] ** 2 + rz[:, half:] ** 2, z[:, :half] ** 2 + z[:, half:] ** 2,
                       rtol=0, atol=1e-12)

    for mask in (None, ATTENTION_MASK):
        _, p, o = attention(h, w[b + "q_proj.weight"], w[b + "k_proj.weight"],
                            w[b + "v_proj.weight"], w[b + "attn_out.weight"],
                            cfg, mask, return_probs=True)
        # softmax rows sum to one
        assert np.max(np.abs(p.sum(-1) - 1.0)) < 1e-12, "softmax rows do not sum to 1"
        for bi in range(INPUT_IDS.shape[0]):
            for head in (0, cfg["n_heads"] - 1):
                so, sp = slow_head(h[bi], w[b + "q_proj.weight"], w[b + "k_proj.weight"],
                                   w[b + "v_proj.weight"], cfg, head,
                                   None if mask is None else mask[bi])
                assert np.max(np.abs(sp - p[bi, head])) < 1e-12, "attention probs mismatch"
                assert np.max(np.abs(so - o[bi, :, head * hd:(head + 1) * hd])) < 1e-12, \
                    "attention output mismatch"
                if mask is not None:
                    # masked keys get exactly zero probability
                    assert np.all(p[bi, head][:, ~mask[bi]] == 0.0)
    print("self-check: RMSNorm, RoPE, attention (loop reference, 1e-12), softmax rows OK")


# --------------------------------------------------------------------------
# bfloat16 + hand-written safetensors
# --------------------------------------------------------------------------

def f32_to_bf16_bits(a):
    """float32 array -> uint16 bf16 bit patterns, round-to-nearest-even."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    assert np.all(np.isfinite(a))
    u = a.view(np.uint32).astype(np.uint64)
    rounding = ((u >> 16) & 1) + 0x7FFF
    return ((u + rounding) >> 16).astype(np.uint16)


def bf16_bits_to_f32(bits):
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def write_bf16_safetensors(path, tensors, metadata=None):
    """tensors: name -> uint16 bf16 bits array. Writes dtype "BF16"."""
    header = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    blobs = []
    off = 0
    for name in sorted(tensors):
        t = np.ascontiguousarray(tensors[name], dtype="<u2")
        raw = t.tobytes()
        header[name] = {"dtype": "BF16", "shape": list(t.shape),
                        "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    hbytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hbytes += b" " * ((-len(hbytes)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hbytes)))
        f.write(hbytes)
        for raw in blobs:
            f.write(raw)
    return off


def read_bf16_safetensors(path):
    """Own minimal parser (BF16 only) -> name -> uint16 bits."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n].decode("utf-8"))
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "BF16"
        s, e = info["data_offsets"]
        out[name] = np.frombuffer(data[base + s:base + e], dtype="<u2").reshape(info["shape"]).copy()
    return out


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------

README_TEMPLATE = """# tiny_llada — reference fixture for the LLaDA/MMaDA transformer

A tiny random checkpoint with the official LLaDA/MMaDA tensor names
(spec `/work/shared/spec/mmada.md` §1.5) and config field names (§1.4), plus
the logits an independent float64 NumPy implementation of the forward pass
(§1.2–1.3) produces for it. Used to test the Rust implementation.

The generator `scripts/reference/llada_reference.py` was written from the
spec only; it is **independent of the Rust code** (no shared code, no
third-party model code copied).

## Regenerate

From the repository root:

```
python3 -m venv /tmp/ref-venv && /tmp/ref-venv/bin/pip install numpy safetensors
/tmp/ref-venv/bin/python scripts/reference/llada_reference.py --out tests/fixtures/tiny_llada
```

Generated with Python {py}, numpy {np_ver}, safetensors {st_ver}.
Weights use `numpy.random.default_rng({seed})`, drawn with `standard_normal`
in the tensor order of `weight_shapes()` (wte, then per block attn_norm,
q_proj, k_proj, v_proj, attn_out, ff_norm, ff_proj, up_proj, ff_out, then
ln_f and the head): embeddings = N(0,1), norm weights = 1 + 0.1·N(0,1),
all other matrices = 0.2·N(0,1); stored float32.

## Model

d_model 32, n_layers 2, n_heads 4 (head_dim 8), n_kv_heads 4,
mlp_hidden_size 48, vocab 61 (deliberately odd), rms_norm_eps 1e-5,
rope_theta 500000, untied head `model.transformer.ff_out.weight`, no biases.
(`mlp_ratio` is 4 and `llm_vocab_size` 61 as requested; they are not
consistent with the other sizes and must not be used for shapes.)

## Files

| file | contents |
|---|---|
| `config.json` | config with official field names |
| `model.safetensors` | float32 weights (single file, `__metadata__ = {{"format": "pt"}}`) |
| `model-bf16/model-0000{{1,2}}-of-00002.safetensors` | same weights rounded to bfloat16 (round-to-nearest-even), dtype `BF16`; shard 1 = `wte` + block 0, shard 2 = block 1 + `ln_f` + head |
| `model-bf16/model.safetensors.index.json` | HF index `{{"metadata": {{"total_size": {total}}}, "weight_map": ...}}` |
| `model-bf16/config.json` | copy of `config.json` |
| `inputs.safetensors` | `input_ids` int64 [2, 7]; `attention_mask` bool [2, 7] (row 0 all True, row 1 first two False = left padding with pad id 59); mask id 60 occurs in both rows |
| `logits.safetensors` | float32 [2, 7, 61]: `logits` (no mask), `logits_masked` (key padding mask applied), `logits_bf16` (bf16 checkpoint, no mask) |

## Semantics

* Attention is bidirectional (no causal mask), scale 1/sqrt(8).
* `logits_masked`: `attention_mask` is a *key* mask: for every query, scores
  of keys with `attention_mask == False` get `numpy.finfo(np.float32).min`
  added before the softmax. Query rows are not masked: logits are produced for
  every position, pads included. RoPE positions are 0..T-1 for every row
  (pads are counted, no offset).
* All math is float64 (RoPE tables included); outputs cast to float32.
* `logits_bf16`: bf16 weights converted back to float64; activations are
  *not* rounded to bf16, so it isolates the weight rounding only.

max |logit|: logits {m0:.6f}, logits_masked {m1:.6f}, logits_bf16 {m2:.6f}.
"""


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    repo = os.path.abspath(os.path.join(here, "..", ".."))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(repo, "tests", "fixtures", "tiny_llada"))
    args = ap.parse_args()
    out = args.out
    cfg = CONFIG

    weights = make_weights(cfg)
    self_check(weights, cfg)

    logits = forward(weights, cfg, INPUT_IDS)
    logits_masked = forward(weights, cfg, INPUT_IDS, ATTENTION_MASK)
    # Row 0 has no masked keys: must be unchanged by the mask (bias 0.0 added).
    assert np.array_equal(logits[0], logits_masked[0])
    assert np.max(np.abs(logits[1] - logits_masked[1])) > 1e-3

    bf16_bits = {k: f32_to_bf16_bits(v) for k, v in weights.items()}
    w_bf16 = {k: bf16_bits_to_f32(v) for k, v in bf16_bits.items()}
    # RNE sanity: relative error <= 2^-9, exact round trip of the bf16 values.
    for k in weights:
        rel = np.abs(w_bf16[k].astype(np.float64) - weights[k]) / np.abs(weights[k].astype(np.float64))
        assert np.max(rel) <= 2.0 ** -8, k
        assert np.array_equal(f32_to_bf16_bits(w_bf16[k]), bf16_bits[k])
    # Hand-picked RNE cases: 1 + 2^-8 (tie, even -> 1.0), 1 + 3*2^-8 (tie, -> 1 + 2^-6).
    t = np.array([1.0 + 2.0 ** -8, 1.0 + 3 * 2.0 ** -8, 1.0 + 2.0 ** -8 + 2.0 ** -20], dtype=np.float32)
    assert list(bf16_bits_to_f32(f32_to_bf16_bits(t))) == [1.0, 1.0 + 2.0 ** -6, 1.0 + 2.0 ** -7]
    logits_bf16 = forward(w_bf16, cfg, INPUT_IDS)

    os.makedirs(out, exist_ok=True)
    bf_dir = os.path.join(out, "model-bf16")
    os.makedirs(bf_dir, exist_ok=True)

    cfg_text = json.dumps(cfg, indent=2) + "\n"
    for p in (os.path.join(out, "config.json"), os.path.join(bf_dir, "config.json")):
        with open(p, "w") as f:
            f.write(cfg_text)

    save_file(weights, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})

    shard_names = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    shards = [{}, {}]
    for k, v in bf16_bits.items():
        first = k == PREFIX + "wte.weight" or k.startswith(PREFIX + "blocks.0.")
        shards[0 if first else 1][k] = v
    total = 0
    weight_map = {}
    for sn, sh in zip(shard_names, shards):
        total += write_bf16_safetensors(os.path.join(bf_dir, sn), sh, {"format": "pt"})
        for k in sh:
            weight_map[k] = sn
    index = {"metadata": {"total_size": total},
             "weight_map": {k: weight_map[k] for k in sorted(weight_map)}}
    with open(os.path.join(bf_dir, "model.safetensors.index.json"), "w") as f:
        f.write(json.dumps(index, indent=2) + "\n")

    save_file({"input_ids": INPUT_IDS, "attention_mask": ATTENTION_MASK},
              os.path.join(out, "inputs.safetensors"))
    save_file({"logits": logits.astype(np.float32),
               "logits_masked": logits_masked.astype(np.float32),
               "logits_bf16": logits_bf16.astype(np.float32)},
              os.path.join(out, "logits.safetensors"))

    # ---- read everything back and re-verify ------------------------------
    w_back = load_file(os.path.join(out, "model.safetensors"))
    assert set(w_back) == set(weights)
    for k in weights:
        assert w_back[k].dtype == np.float32 and np.array_equal(w_back[k], weights[k])
    inp = load_file(os.path.join(out, "inputs.safetensors"))
    assert inp["input_ids"].dtype == np.int64 and inp["attention_mask"].dtype == np.bool_
    with open(os.path.join(bf_dir, "model.safetensors.index.json")) as f:
        idx = json.load(f)
    bits_back = {}
    for sn in shard_names:
        path = os.path.join(bf_dir, sn)
        part = read_bf16_safetensors(path)
        # cross-check the hand-written file with the safetensors library parser
        with open(path, "rb") as f:
            lib = dict(safetensors.deserialize(f.read()))
        assert set(lib) == set(part)
        for k, v in part.items():
            assert lib[k]["dtype"] in ("bfloat16", "BF16", "bf16"), lib[k]["dtype"]
            assert list(lib[k]["shape"]) == list(v.shape)
            assert bytes(lib[k]["data"]) == v.tobytes()
            assert idx["weight_map"][k] == sn
        bits_back.update(part)
    assert set(bits_back) == set(weights)
    assert sum(v.size * 2 for v in bits_back.values()) == idx["metadata"]["total_size"]
    lb = forward({k: bf16_bits_to_f32(v) for k, v in bits_back.items()}, cfg,
                 inp["input_ids"])
    assert np.array_equal(lb.astype(np.float32), logits_bf16.astype(np.float32))
    lg = load_file(os.path.join(out, "logits.safetensors"))
    assert np.array_equal(forward(w_back, cfg, inp["input_ids"], inp["attention_mask"]).astype(np.float32),
                          lg["logits_masked"])

    maxes = [float(np.max(np.abs(a))) for a in (logits, logits_masked, logits_bf16)]
    readme = README_TEMPLATE.format(
        py="%d.%d.%d" % sys.version_info[:3], np_ver=np.__version__,
        st_ver=safetensors.__version__, seed=SEED, total=total,
        m0=maxes[0], m1=maxes[1], m2=maxes[2])
    with open(os.path.join(out, "README.md"), "w") as f:
        f.write(readme)

    print("wrote", out)
    print("max|logits| = %.6f  max|logits_masked| = %.6f  max|logits_bf16| = %.6f" % tuple(maxes))
    print("max|logits - logits_bf16| = %.3e" % float(np.max(np.abs(logits - logits_bf16))))
    print("max|logits - logits_masked| (row 1) = %.3e" % float(np.max(np.abs(logits[1] - logits_masked[1]))))


if __name__ == "__main__":
    main()
