"""Compare runs across methods and seeds: mean ± std tables and plots of accuracy, pass@k and entropy.

    python -m cft.compare 'runs/tiny_study/*' [MORE_DIRS_OR_GLOBS ...] --out DIR [--wandb-project P]

Reads local run dirs (offline) or a W&B project, and writes DIR/summary.md, DIR/summary.csv (per method),
DIR/runs.csv (per method and seed), DIR/curves.csv (training curves), and the plots pass_at_k.png,
acc_vs_entropy.png, train_entropy.png and val_acc.png.

Runs pair up by (method, seed). A training run gives the curves (metrics.csv: train/entropy, train/frac_tokens_selected,
val/acc, ...), an evaluation run (`python -m cft test`) gives metrics.json (eval/<split>/acc, .../pass@k,
.../entropy); one dir may be both. The method and seed of a run are its config's `run.method` (the CLI resolves it
on `fit` from the weighting or selector; `python -m cft.sweep` sets the grid's name) and `seed_everything`; an
evaluation run without a method takes those of the training run whose `hf/<best|last>` it evaluated.
When two runs claim the same (method, seed) and kind, the newer one is used, with a warning naming both.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from cft.compare.plots import plot_acc_vs_entropy, plot_curve, plot_pass_at_k
from cft.compare.runs import load_runs, load_wandb_runs
from cft.compare.tables import curves_table, seed_table, summarize, summary_markdown
from cft.errors import CFTError, CompareError, error_line
from cft.io import atomic_write_text


def compare(
    run_dirs: Iterable[str | os.PathLike] = (),
    out_dir: str | os.PathLike = "compare",
    wandb_project: str | None = None,
    wandb_group: str | None = None,
) -> pd.DataFrame:
    """Read the runs (local dirs/globs and/or a W&B project), write tables and plots to `out_dir`, and return the
    per-method summary (columns `method`, `n_seeds`, `<metric>_mean`, `<metric>_std`)."""
    runs = load_runs(run_dirs) if run_dirs else []
    if wandb_project:
        runs += load_wandb_runs(wandb_project, wandb_group)
    if not runs:
        raise CompareError("no runs given: pass run dirs or globs, or a W&B project")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = seed_table(runs)
    summary = summarize(table)
    atomic_write_text(out / "runs.csv", table.to_csv(index=False))
    atomic_write_text(out / "summary.csv", summary.to_csv(index=False))
    atomic_write_text(out / "summary.md", summary_markdown(summary, table))
    atomic_write_text(out / "curves.csv", curves_table(runs).to_csv(index=False))
    plot_pass_at_k(table, out / "pass_at_k.png")
    plot_acc_vs_entropy(table, out / "acc_vs_entropy.png")
    # GRPO runs log the policy's entropy as rl/entropy; plot whichever kind of training the runs are.
    rl = any(r.curves is not None and "rl/entropy" in r.curves for r in runs)
    plot_curve(runs, "rl/entropy" if rl else "train/entropy", out / "train_entropy.png")
    if rl:
        plot_curve(runs, "rl/reward_mean", out / "rl_reward.png")
    plot_curve(runs, "val/acc", out / "val_acc.png")
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cft.compare", description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="*", help="run dirs or quoted globs, e.g. 'runs/tiny_study/*'")
    p.add_argument("--out", required=True, help="output dir for summary.md/.csv, runs.csv and the plots")
    p.add_argument("--wandb-project", help="also read runs from this W&B project (needs network and a login)")
    p.add_argument("--wandb-group", help="only the runs of this W&B group (the experiment)")
    args = p.parse_args(argv)
    try:
        compare(args.runs, args.out, args.wandb_project, args.wandb_group)
    except CFTError as e:
        print(error_line(e), file=sys.stderr)
        return 2
    print((Path(args.out) / "summary.md").read_text())
    print(f"[cft.compare] wrote {args.out}/summary.md, summary.csv, runs.csv, curves.csv and plots")
    return 0
