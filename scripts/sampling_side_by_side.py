#!/usr/bin/env python3
"""Text sampling side by side with the official `mmu_generate` on ONE checkpoint and prompt
(issue 11, acceptance 4): interleaved rounds of

  mmada bench --sampling --checkpoint CKPT --prompt-ids P --reps R --json --dump-ids D
  REFPY scripts/official_sampling.py OFFICIAL CKPT --prompt-ids P --reps R --out D/official.json

Prints, per round, tokens/s of our no-cache, prefix-cache and dual-cache samplers (the cached
ones with threshold 0.9) and of the
official one, the ratios, and the token agreement of each of ours with the official greedy
output; then the medians. Needs `cargo build --release`, a checkout of the official code
(OFFICIAL) and a Python with torch for it (REFPY); see ../shared/tools/README.md.

usage: sampling_side_by_side.py OFFICIAL CKPT PROMPT_IDS [--rounds 5] [--reps 5]
       [--mmada target/release/mmada] [--refpy $REFPY] [--work /tmp/sbs-sampling]
"""
import argparse, json, os, statistics, subprocess, sys, time

ap = argparse.ArgumentParser()
ap.add_argument("official")
ap.add_argument("ckpt")
ap.add_argument("prompt_ids")
ap.add_argument("--rounds", type=int, default=5)
ap.add_argument("--reps", type=int, default=5)
ap.add_argument("--mmada", default="target/release/mmada")
ap.add_argument("--refpy", default=os.environ.get("REFPY", "python3"))
ap.add_argument("--work", default="/tmp/sbs-sampling")
a = ap.parse_args()
here = os.path.dirname(os.path.abspath(__file__))


def ids(path):
    return [int(t) for t in open(path).read().split()]


def agree(x, y):
    return sum(p == q for p, q in zip(x, y)) / max(len(y), 1)


rows = []
for r in range(1, a.rounds + 1):
    d = os.path.join(a.work, f"round{r}")
    os.makedirs(d, exist_ok=True)
    out = subprocess.run([a.mmada, "bench", "--sampling", "--target", "cpu", "--checkpoint", a.ckpt,
                          "--prompt-ids", a.prompt_ids, "--reps", str(a.reps), "--json", "--dump-ids", d],
                         check=True, capture_output=True, text=True).stdout
    ours = {j["figure"]: j for j in map(json.loads, out.strip().splitlines())}
    subprocess.run([a.refpy, os.path.join(here, "official_sampling.py"), a.official, a.ckpt,
                    "--prompt-ids", a.prompt_ids, "--reps", str(a.reps), "--out",
                    os.path.join(d, "official.json")], check=True, capture_output=True, text=True)
    off = json.load(open(os.path.join(d, "official.json")))
    no, pr, du = ours["sampling-nocache"], ours["sampling-prefix"], ours["sampling-dual"]
    row = dict(round=r, time=time.strftime("%H:%M:%S", time.gmtime()), off=off["tokens_per_s"],
               no=no["tokens_per_s"], prefix=pr["tokens_per_s"], prefix_steps=pr["steps"],
               dual=du["tokens_per_s"], dual_steps=du["steps"],
               agree_no=agree(ids(os.path.join(d, "sampling-nocache.txt")), off["ids"]),
               agree_prefix=agree(ids(os.path.join(d, "sampling-prefix.txt")), off["ids"]),
               agree_dual=agree(ids(os.path.join(d, "sampling-dual.txt")), off["ids"]))
    rows.append(row)
    print(f"round {r} ({row['time']} UTC): official {row['off']:.1f} tok/s | no-cache {row['no']:.1f} "
          f"({row['no'] / row['off']:.2f}x, agreement {row['agree_no']:.3f}) | prefix+0.9 {row['prefix']:.1f} "
          f"({row['prefix'] / row['off']:.2f}x, {row['prefix_steps']} steps, agreement {row['agree_prefix']:.3f}) "
          f"| dual+0.9 {row['dual']:.1f} "
          f"({row['dual'] / row['off']:.2f}x, {row['dual_steps']} steps, agreement {row['agree_dual']:.3f})",
          flush=True)

med = lambda k: statistics.median(x[k] for x in rows)
ratio = lambda k: [x[k] / x["off"] for x in rows]
print(f"medians over {len(rows)} rounds: official {med('off'):.1f} tok/s, no-cache {med('no'):.1f} "
      f"({med('no') / med('off'):.2f}x; rounds {min(ratio('no')):.2f}-{max(ratio('no')):.2f}x), "
      f"prefix+0.9 {med('prefix'):.1f} ({med('prefix') / med('off'):.2f}x; rounds "
      f"{min(ratio('prefix')):.2f}-{max(ratio('prefix')):.2f}x), dual+0.9 {med('dual'):.1f} ({med('dual') / med('off'):.2f}x; rounds "
      f"{min(ratio('dual')):.2f}-{max(ratio('dual')):.2f}x); agreement with the official greedy output: "
      f"no-cache {min(x['agree_no'] for x in rows):.3f} (worst round), prefix {med('agree_prefix'):.3f}, "
      f"dual {med('agree_dual'):.3f}")
sys.exit(0)
