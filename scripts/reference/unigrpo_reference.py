#!/usr/bin/env python3
"""Independent NumPy reference for UniGRPO's objective (spec mmada.md section 5.1, eqs. 3-5).

Written from the spec only; shares no code with the Rust implementation. The transformer is
the float64 NumPy forward of llada_reference.py (same directory) on the tiny_llada fixture
weights. All arithmetic is float64.

For a fixed batch (P = 2 prompts x G = 3 completions, L = 9, prompt 3 tokens) with masks,
pi_old / pi_ref log-probabilities and rewards given, it computes:
    A_b   = (R_b - mean_g) / (std_g + 1e-4)   over the valid rows of b's group, std with
            Bessel's correction; optionally groups of zero spread are dropped
    l_bk  = log softmax(f(x_t))[x0_bk]         x_t = x0 with [MASK] (60) where masked
    r     = exp(l - l_old); s = min(r A, clip(r, 1-eps, 1+eps) A)
    kl    = exp(l_ref - l) - (l_ref - l) - 1
    row_b = sum_k m_bk (s - beta kl) / sum_k m_bk;   J = mean over kept rows of row_b
and the diagnostics kl (same aggregation of kl), clip_frac (masked tokens of kept rows where
the clip is active: r > 1 + eps with A > 0, or r < 1 - eps with A < 0), entropy (mean
entropy there).

Regenerate (from the repository root; numpy 2.x, safetensors):
    python3 -m venv /tmp/np && /tmp/np/bin/pip install numpy safetensors
    /tmp/np/bin/python scripts/reference/unigrpo_reference.py --out tests/fixtures/tiny_unigrpo
"""

import argparse
import json
import os
import sys

import numpy as np
from safetensors.numpy import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import llada_reference as ref  # noqa: E402

P, G, L, PROMPT = 2, 3, 9, 3
MASK_ID = 60
EPS, BETA = 0.2, 0.04


def log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def advantages(reward, valid, drop_zero_variance):
    r = reward.reshape(P, G)
    v = valid.reshape(P, G)
    adv = np.zeros((P, G))
    keep = np.zeros((P, G), dtype=bool)
    for p in range(P):
        rv = r[p][v[p]]
        n = len(rv)
        mean = rv.mean() if n else 0.0
        std = np.sqrt(((rv - mean) ** 2).sum() / max(n - 1, 1)) if n else 0.0
        for i in range(G):
            if v[p, i]:
                adv[p, i] = (r[p, i] - mean) / (std + 1e-4)
                keep[p, i] = (std > 0) if drop_zero_variance else True
    return adv.reshape(-1), keep.reshape(-1)


def objective(w, cfg, x0, masked, key_mask, old, refl, reward, valid, drop):
    xt = np.where(masked, MASK_ID, x0)
    lp = log_softmax(ref.forward(w, cfg, xt, key_mask))  # [B, L, V]
    B = x0.shape[0]
    logp = np.take_along_axis(lp, x0[:, :, None], axis=-1)[:, :, 0]
    ent = -(np.exp(lp) * lp).sum(-1)
    adv, keep = advantages(reward, valid, drop)
    rows, kls, out, n_tok, ent_sum = [], [], 0, 0, 0.0
    for b in range(B):
        ks = np.nonzero(masked[b])[0]
        terms, kl_terms = [], []
        for k in ks:
            r = np.exp(logp[b, k] - old[b, k])
            s = min(r * adv[b], np.clip(r, 1 - EPS, 1 + EPS) * adv[b])
            e = refl[b, k] - logp[b, k]
            kl = np.exp(e) - e - 1
            terms.append(s - BETA * kl)
            kl_terms.append(kl)
            if keep[b]:
                n_tok += 1
                out += (r > 1 + EPS and adv[b] > 0) or (r < 1 - EPS and adv[b] < 0)
                ent_sum += ent[b, k]
        rows.append(np.mean(terms))
        kls.append(np.mean(kl_terms))
    rows, kls = np.array(rows), np.array(kls)
    kept = keep.sum()
    return {
        "objective": (rows * keep).sum() / max(kept, 1),
        "kl": (kls * keep).sum() / max(kept, 1),
        "clip_frac": out / max(n_tok, 1),
        "entropy": ent_sum / max(n_tok, 1),
        "advantage": adv,
        "kept": float(kept),
        "logp": logp,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--fixture", default="tests/fixtures/tiny_llada")
    a = ap.parse_args()
    cfg = json.load(open(os.path.join(a.fixture, "config.json")))
    w = load_file(os.path.join(a.fixture, "model.safetensors"))
    rng = np.random.default_rng(20261204)
    prompts = rng.integers(0, 59, size=(P, PROMPT))
    x0 = np.concatenate(
        [np.repeat(prompts, G, axis=0), rng.integers(0, 59, size=(P * G, L - PROMPT))], axis=1
    ).astype(np.int64)
    # The second prompt is one token shorter, left-padded with the pad id 59, which attention
    # does not see (key_mask False there).
    x0[G:, 0] = 59
    key_mask = np.ones((P * G, L), dtype=bool)
    key_mask[G:, 0] = False
    masked = np.zeros((P * G, L), dtype=bool)
    masked[:, PROMPT:] = rng.random((P * G, L - PROMPT)) < 0.5
    masked[5, PROMPT:] = False
    masked[5, L - 1] = True  # a row with a single masked token
    masked[0, PROMPT] = True
    # The current policy's log-probabilities, perturbed: pi_old and pi_ref (rounded to f32,
    # as the test feeds them).
    xt = np.where(masked, MASK_ID, x0)
    lp = log_softmax(ref.forward(w, cfg, xt, key_mask))
    logp = np.take_along_axis(lp, x0[:, :, None], axis=-1)[:, :, 0]
    old = (logp + rng.normal(0, 0.3, logp.shape)).astype(np.float32)
    refl = (logp + rng.normal(0, 0.2, logp.shape)).astype(np.float32)
    cases = {
        "a": (np.array([2.5, 0.0, 0.5, 2.0, 0.5, 2.5]), np.ones(6, bool), False),
        # row 1 invalid (a NaN reward), group 1 of zero spread, dropped
        "b": (np.array([2.5, 0.0, 0.5, 2.0, 2.0, 2.0]), np.array([1, 0, 1, 1, 1, 1], bool), True),
    }
    t = {
        "input_ids": x0,
        "masked": masked,
        "key_mask": key_mask,
        "old_logp": old,
        "ref_logp": refl,
    }
    for name, (reward, valid, drop) in cases.items():
        res = objective(w, cfg, x0, masked, key_mask, old.astype(np.float64), refl.astype(np.float64),
                        reward, valid, drop)
        t[f"{name}.reward"] = reward.astype(np.float32)
        t[f"{name}.valid"] = valid.astype(bool)
        t[f"{name}.drop_zero_variance"] = np.array([drop], bool)
        for k, v in res.items():
            t[f"{name}.expected.{k}"] = np.asarray(v, dtype=np.float64).reshape(-1)
        print(name, {k: (float(v) if np.ndim(v) == 0 else None) for k, v in res.items()})
    os.makedirs(a.out, exist_ok=True)
    save_file(t, os.path.join(a.out, "batch.safetensors"),
              metadata={"eps": str(EPS), "beta": str(BETA), "P": str(P), "G": str(G)})
    with open(os.path.join(a.out, "README.md"), "w") as f:
        f.write(README)


README = """# tiny_unigrpo: a fixed UniGRPO batch and its objective

Written by `scripts/reference/unigrpo_reference.py` (independent float64 NumPy code from the
spec, section 5.1, on the `tiny_llada` fixture's weights); read by `tests/unigrpo.rs`.

`batch.safetensors`: `input_ids` i64 [6, 9] (2 prompts x 3 completions, prompt 3 tokens),
`masked` bool [6, 9], `key_mask` bool [6, 9] (false on the second prompt's left pad),
`old_logp` / `ref_logp` f32 [6, 9], and two cases `a` / `b` with
`<case>.reward` f32 [6], `<case>.valid` bool [6], `<case>.drop_zero_variance` bool [1] and the
expected float64 values `<case>.expected.{objective, kl, clip_frac, entropy, advantage, kept,
logp}`. eps = 0.2, beta = 0.04. Case b: row 1 invalid, group 1 of zero spread dropped.

Regenerate: see the script's docstring. Licence: as the repository.
"""

if __name__ == "__main__":
    main()
