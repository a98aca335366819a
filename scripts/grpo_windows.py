#!/usr/bin/env python3
"""Reward windows of a UniGRPO run (issue 13, acceptance 3), from its metrics.jsonl.

Steps are grouped into windows of --window steps; a window's value is the mean of the
reward_mean of its rollouts (one per --inner-steps steps: every step of a rollout batch logs
the same rollout reward, so rollouts, not steps, are the samples), its standard error
std(rollouts) / sqrt(rollouts). Prints each window and the rise of the best later window and
of the last window over the first, in standard errors of the first. Standard library only.

    python3 scripts/grpo_windows.py runs/grpo/metrics.jsonl --inner-steps 2 [--metric reward_mean]
"""

import argparse
import json
import math

ap = argparse.ArgumentParser()
ap.add_argument("metrics")
ap.add_argument("--inner-steps", type=int, required=True)
ap.add_argument("--window", type=int, default=20)
ap.add_argument("--metric", default="reward_mean")
a = ap.parse_args()

per_rollout = {}
for line in open(a.metrics):
    r = json.loads(line)
    per_rollout.setdefault(r["step"] // a.inner_steps, (r["step"], r["metrics"][a.metric]))
windows = {}
for idx, (step, v) in sorted(per_rollout.items()):
    windows.setdefault(step // a.window, []).append(v)
rows = []
for w, vs in sorted(windows.items()):
    n = len(vs)
    mean = sum(vs) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in vs) / (n - 1)) if n > 1 else 0.0
    rows.append((w, n, mean, sd / math.sqrt(n)))
    print(f"steps {w * a.window:5d}-{(w + 1) * a.window - 1:5d}: {a.metric} {mean:.4f} ± {sd / math.sqrt(n):.4f} (n = {n} rollouts)")
if len(rows) > 1:
    _, _, m0, se0 = rows[0]
    last = rows[-1][2]
    print(f"first window {m0:.4f} ± {se0:.4f}; last window {last:.4f}: rise {(last - m0) / max(se0, 1e-12):.1f} SE")
