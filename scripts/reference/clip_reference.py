#!/usr/bin/env python3
"""Independent NumPy reference for CLIP (the HF `CLIPModel` layout), for the CLIP reward of
UniGRPO (spec mmada.md section 5.2: 0.1 * CLIP(image, text)).

Written from facts read in HF transformers 4.46.0 (models/clip/modeling_clip.py,
configuration_clip.py, activations.py) and shares no code with the Rust implementation. All
arithmetic is float64.

Facts (HF CLIPModel):
  vision: patch conv (kernel = stride = patch_size, no bias) -> [B, D, g, g] -> flatten row-major
          to [B, g*g, D]; prepend class_embedding; + position_embedding (g*g + 1 rows);
          pre_layrnorm; encoder layers; pooled = post_layernorm(h[:, 0]);
          image_embeds = pooled @ visual_projection.T (no bias), divided by its L2 norm.
  text:   token_embedding[ids] + position_embedding[0..L); encoder layers with a causal mask
          (key j visible from query i iff j <= i); final_layer_norm; pooled = h at the EOS
          position: the first position whose id == eos_token_id, except configs with
          eos_token_id == 2 (written before HF PR #24773), which take argmax(ids) (the first
          maximal id); text_embeds = pooled @ text_projection.T, L2-normalised.
  layer:  h + attn(LN1(h)); then h + fc2(act(fc1(LN2(h)))); LayerNorm with bias, biased
          variance; attention: q = (x Wq^T + bq) * head_dim^-0.5, k, v likewise (with bias),
          softmax over keys, out_proj with bias.
  act:    quick_gelu x * sigmoid(1.702 x) (OpenAI checkpoints); gelu 0.5 x (1 + erf(x / sqrt 2)).
  logits_per_image = exp(logit_scale) * image_embeds @ text_embeds.T.

The fixture is a tiny random CLIP: text vocab 64 (bos 61, eos 62, a word id 63 above the eos),
hidden 32, 2 layers, 4 heads, quick_gelu, 12 positions; vision 16 px, patch 4, hidden 24,
2 layers, 3 heads, exact gelu; projection 16.

Regenerate (from the repository root; numpy 2.x, safetensors):
    python3 -m venv /tmp/np && /tmp/np/bin/pip install numpy safetensors
    /tmp/np/bin/python scripts/reference/clip_reference.py --out tests/fixtures/tiny_clip
With `--check-hf` (a venv with torch and transformers 4.46.0) it also loads the written
directory with transformers' CLIPModel and prints the largest difference of each output.
"""

import argparse
import json
import math
import os

import numpy as np
from safetensors.numpy import save_file

TEXT = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=12, hidden_act="quick_gelu",
            layer_norm_eps=1e-5, bos_token_id=61, eos_token_id=62, pad_token_id=0)
VISION = dict(hidden_size=24, intermediate_size=40, num_hidden_layers=2, num_attention_heads=3,
              image_size=16, patch_size=4, num_channels=3, hidden_act="gelu",
              layer_norm_eps=1e-5)
PROJ = 16
LOGIT_SCALE = 2.6592

_erf = np.vectorize(math.erf)


def act(name, x):
    if name == "quick_gelu":
        return x / (1.0 + np.exp(-1.702 * x))
    if name == "gelu":
        return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))
    raise ValueError(name)


def layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def encoder(p, prefix, cfg, h, causal):
    heads = cfg["num_attention_heads"]
    b, n, d = h.shape
    hd = d // heads
    eps = cfg["layer_norm_eps"]
    for i in range(cfg["num_hidden_layers"]):
        q = f"{prefix}.encoder.layers.{i}."
        x = layer_norm(h, p[q + "layer_norm1.weight"], p[q + "layer_norm1.bias"], eps)

        def lin(name, y):
            return y @ p[q + name + ".weight"].T + p[q + name + ".bias"]

        def split(y):
            return y.reshape(b, n, heads, hd).transpose(0, 2, 1, 3)

        qs = split(lin("self_attn.q_proj", x) * hd ** -0.5)
        ks = split(lin("self_attn.k_proj", x))
        vs = split(lin("self_attn.v_proj", x))
        s = qs @ ks.transpose(0, 1, 3, 2)
        if causal:
            s = np.where(np.tril(np.ones((n, n), bool)), s, -np.inf)
        s = s - s.max(-1, keepdims=True)
        a = np.exp(s)
        a = a / a.sum(-1, keepdims=True)
        o = (a @ vs).transpose(0, 2, 1, 3).reshape(b, n, d)
        h = h + lin("self_attn.out_proj", o)
        x = layer_norm(h, p[q + "layer_norm2.weight"], p[q + "layer_norm2.bias"], eps)
        h = h + lin("mlp.fc2", act(cfg["hidden_act"], lin("mlp.fc1", x)))
    return h


def image_embeds(p, pixels):
    c = VISION
    ps, d = c["patch_size"], c["hidden_size"]
    b, ch, hh, ww = pixels.shape
    g = hh // ps
    w = p["vision_model.embeddings.patch_embedding.weight"]  # [D, C, ps, ps]
    patches = pixels.reshape(b, ch, g, ps, g, ps).transpose(0, 2, 4, 1, 3, 5).reshape(b, g * g, -1)
    emb = patches @ w.reshape(d, -1).T
    cls = np.broadcast_to(p["vision_model.embeddings.class_embedding"], (b, 1, d))
    h = np.concatenate([cls, emb], 1) + p["vision_model.embeddings.position_embedding.weight"]
    eps = c["layer_norm_eps"]
    h = layer_norm(h, p["vision_model.pre_layrnorm.weight"], p["vision_model.pre_layrnorm.bias"], eps)
    h = encoder(p, "vision_model", c, h, causal=False)
    pooled = layer_norm(h[:, 0], p["vision_model.post_layernorm.weight"],
                        p["vision_model.post_layernorm.bias"], eps)
    e = pooled @ p["visual_projection.weight"].T
    return e / np.linalg.norm(e, axis=-1, keepdims=True)


def text_embeds(p, ids, legacy):
    c = TEXT
    n = ids.shape[1]
    h = p["text_model.embeddings.token_embedding.weight"][ids] + \
        p["text_model.embeddings.position_embedding.weight"][:n]
    h = encoder(p, "text_model", c, h, causal=True)
    h = layer_norm(h, p["text_model.final_layer_norm.weight"], p["text_model.final_layer_norm.bias"],
                   c["layer_norm_eps"])
    if legacy:
        pos = ids.argmax(-1)
    else:
        pos = (ids == c["eos_token_id"]).argmax(-1)
    pooled = h[np.arange(ids.shape[0]), pos]
    e = pooled @ p["text_projection.weight"].T
    return e / np.linalg.norm(e, axis=-1, keepdims=True)


def make_params(rng):
    p = {}

    def tower(prefix, c):
        d, f = c["hidden_size"], c["intermediate_size"]
        for i in range(c["num_hidden_layers"]):
            q = f"{prefix}.encoder.layers.{i}."
            for n in ("q_proj", "k_proj", "v_proj", "out_proj"):
                p[q + f"self_attn.{n}.weight"] = rng.normal(0, d ** -0.5, (d, d))
                p[q + f"self_attn.{n}.bias"] = rng.normal(0, 0.1, d)
            for n in ("layer_norm1", "layer_norm2"):
                p[q + n + ".weight"] = 1 + rng.normal(0, 0.1, d)
                p[q + n + ".bias"] = rng.normal(0, 0.1, d)
            p[q + "mlp.fc1.weight"] = rng.normal(0, d ** -0.5, (f, d))
            p[q + "mlp.fc1.bias"] = rng.normal(0, 0.1, f)
            p[q + "mlp.fc2.weight"] = rng.normal(0, f ** -0.5, (d, f))
            p[q + "mlp.fc2.bias"] = rng.normal(0, 0.1, d)

    t, v = TEXT, VISION
    p["text_model.embeddings.token_embedding.weight"] = rng.normal(0, 1, (t["vocab_size"], t["hidden_size"]))
    p["text_model.embeddings.position_embedding.weight"] = rng.normal(
        0, 0.5, (t["max_position_embeddings"], t["hidden_size"]))
    tower("text_model", t)
    p["text_model.final_layer_norm.weight"] = 1 + rng.normal(0, 0.1, t["hidden_size"])
    p["text_model.final_layer_norm.bias"] = rng.normal(0, 0.1, t["hidden_size"])
    g = v["image_size"] // v["patch_size"]
    d = v["hidden_size"]
    p["vision_model.embeddings.class_embedding"] = rng.normal(0, 1, d)
    p["vision_model.embeddings.patch_embedding.weight"] = rng.normal(
        0, (3 * v["patch_size"] ** 2) ** -0.5, (d, 3, v["patch_size"], v["patch_size"]))
    p["vision_model.embeddings.position_embedding.weight"] = rng.normal(0, 0.5, (g * g + 1, d))
    for n in ("pre_layrnorm", "post_layernorm"):
        p[f"vision_model.{n}.weight"] = 1 + rng.normal(0, 0.1, d)
        p[f"vision_model.{n}.bias"] = rng.normal(0, 0.1, d)
    tower("vision_model", v)
    p["visual_projection.weight"] = rng.normal(0, d ** -0.5, (PROJ, d))
    p["text_projection.weight"] = rng.normal(0, t["hidden_size"] ** -0.5, (PROJ, t["hidden_size"]))
    p["logit_scale"] = np.array(LOGIT_SCALE)
    # Round to f32 first so the f64 reference computes on exactly the stored weights.
    return {k: np.asarray(x, np.float32).astype(np.float64) for k, x in p.items()}


# Rows: padded with the eos id (as OpenAI's tokenizer pads), full length, padded with 0, and a
# row with id 63 (above the eos) before its eos, where the legacy argmax rule pools elsewhere.
IDS = np.array([
    [61, 5, 9, 17, 62, 62, 62, 62, 62, 62, 62, 62],
    [61, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 62],
    [61, 20, 62, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    [61, 63, 7, 62, 0, 0, 0, 0, 0, 0, 0, 0],
], dtype=np.int64)


WORDS = ["a", "picture", "of", "the", "digit", "photo", "number", "an", "image", "zero", "one",
         "two", "three", "four", "five", "six", "seven", "eight", "nine"] + [str(i) for i in range(10)]
TEXTS = ["A picture of the digit 7", "the   digit SEVEN", "an image of a three"]
MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI's CLIPImageProcessor defaults
STD = (0.26862954, 0.26130258, 0.27577711)


def write_tokenizer(path):
    """A word-level tokenizer.json in the HF format (lowercase, whitespace split, bos/eos added
    by the post-processor), so the Rust side loads it as it loads a real CLIP tokenizer.json."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    vocab = {"[UNK]": 0}
    for i, w in enumerate(WORDS):
        vocab[w] = i + 1
    for i in range(len(vocab), 61):
        vocab[f"w{i}"] = i
    vocab["<|startoftext|>"] = 61
    vocab["<|endoftext|>"] = 62
    vocab["xyzzy"] = 63
    t = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    t.normalizer = normalizers.Lowercase()
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    t.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>",
        special_tokens=[("<|startoftext|>", 61), ("<|endoftext|>", 62)])
    t.save(path)
    return [t.encode(x).ids for x in TEXTS]


def clip_pixels(chw):
    """The reward's preprocessing of a [-1, 1] image already at the model's size: the PNG's
    bytes (clamp((x + 1) / 2) * 255, truncated), then (byte / 255 - mean) / std."""
    u8 = np.floor(np.clip((chw.astype(np.float32) + 1) / 2, 0, 1) * np.float32(255))
    x = u8.astype(np.float64) / 255
    return (x - np.array(MEAN)[:, None, None]) / np.array(STD)[:, None, None]


def check_hf(out):
    import torch
    from transformers import CLIPModel
    from safetensors.numpy import load_file
    m = CLIPModel.from_pretrained(out, attn_implementation="eager").eval()  # float32
    ins = load_file(os.path.join(out, "inputs.safetensors"))
    want = load_file(os.path.join(out, "outputs.safetensors"))
    with torch.no_grad():
        r = m(input_ids=torch.from_numpy(ins["input_ids"]),
              pixel_values=torch.from_numpy(ins["pixel_values"]))
    for name, got in (("image_embeds", r.image_embeds), ("text_embeds", r.text_embeds),
                      ("logits_per_image", r.logits_per_image)):
        print(f"hf {name}: max |diff| {np.abs(got.numpy() - want[name]).max():.3e}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--check-hf", action="store_true")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    rng = np.random.default_rng(20261207)
    p = make_params(rng)
    pixels = rng.normal(0, 0.8, (2, 3, VISION["image_size"], VISION["image_size"]))
    pixels = pixels.astype(np.float32).astype(np.float64)
    img = image_embeds(p, pixels)
    txt = text_embeds(p, IDS, legacy=False)
    legacy = text_embeds(p, IDS, legacy=True)
    assert np.abs(legacy[3] - txt[3]).max() > 1e-3, "the legacy rule must pool row 3 elsewhere"
    logits = math.exp(LOGIT_SCALE) * img @ txt.T
    cfg = {
        "architectures": ["CLIPModel"], "model_type": "clip", "projection_dim": PROJ,
        "logit_scale_init_value": LOGIT_SCALE,
        "text_config": dict(TEXT, model_type="clip_text_model"),
        "vision_config": dict(VISION, model_type="clip_vision_model"),
    }
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    save_file({k: v.astype(np.float32) for k, v in p.items()}, os.path.join(a.out, "model.safetensors"),
              metadata={"format": "pt"})
    save_file({"pixel_values": pixels.astype(np.float32), "input_ids": IDS},
              os.path.join(a.out, "inputs.safetensors"))
    save_file({"image_embeds": img, "text_embeds": txt, "text_embeds_legacy": legacy,
               "logits_per_image": logits}, os.path.join(a.out, "outputs.safetensors"))
    # The reward: 0.1 * max(100 cos, 0) for each (image, text) pair, texts through the
    # tokenizer, padded with 0 to the 12 positions; images in [-1, 1] at 16 px.
    text_ids = write_tokenizer(os.path.join(a.out, "tokenizer.json"))
    rows = np.zeros((len(text_ids), TEXT["max_position_embeddings"]), np.int64)
    for i, t in enumerate(text_ids):
        rows[i, :len(t)] = t
    images = np.tanh(rng.normal(0, 1.0, (2, 3, 16, 16))).astype(np.float32)
    cos = image_embeds(p, np.stack([clip_pixels(x) for x in images])) @ text_embeds(p, rows, False).T
    reward = 0.1 * np.maximum(100 * cos, 0)
    save_file({"images": images}, os.path.join(a.out, "reward_inputs.safetensors"))
    with open(os.path.join(a.out, "reward.json"), "w") as f:
        json.dump({"texts": TEXTS, "text_ids": text_ids, "reward": reward.tolist()}, f)
        f.write("\n")
    print(f"wrote {a.out}: {sum(v.size for v in p.values())} parameters")
    if a.check_hf:
        check_hf(a.out)


if __name__ == "__main__":
    main()
