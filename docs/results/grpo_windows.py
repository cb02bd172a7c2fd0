"""Windowed means (over 3 seeds) of GRPO's reward, policy entropy and greedy val accuracy, from the runs' metrics.csv.

    python docs/results/grpo_windows.py [runs/tiny_grpo_study]
"""

import csv
import statistics as st
import sys

root = sys.argv[1] if len(sys.argv) > 1 else "runs/tiny_grpo_study"
print("| start | step window | rl/reward_mean | rl/entropy | val/acc at window end |")
print("|---|---|---:|---:|---:|")
for m in ("grpo_from_sft", "grpo_from_cft"):
    per = [list(csv.DictReader(open(f"{root}/{m}-s{s}/metrics.csv"))) for s in range(3)]
    for w in range(4):
        lo, hi = w * 25, (w + 1) * 25
        R, H, A = [], [], []
        for rows in per:
            r = [float(x["rl/reward_mean"]) for x in rows if x.get("rl/reward_mean") and lo <= int(x["step"]) < hi]
            h = [float(x["rl/entropy"]) for x in rows if x.get("rl/entropy") and lo <= int(x["step"]) < hi]
            A += [float(x["val/acc"]) for x in rows if x.get("val/acc") and int(x["step"]) == hi - 1]
            R.append(sum(r) / len(r))
            H.append(sum(h) / len(h))

        def f(v):
            return f"{st.mean(v):.3f} ± {st.stdev(v):.3f}"

        print(f"| {m.replace('grpo_from_', '')} | {lo}-{hi - 1} | {f(R)} | {f(H)} | {f(A) if len(A) > 1 else '-'} |")
