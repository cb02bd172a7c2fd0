"""Compare runs across methods and seeds (`python -m cft.compare`): `runs` reads run dirs or W&B, `tables` pairs and
summarises them, `plots` draws them, `report` writes everything to a folder and is the command line."""

from cft.compare.plots import plot_acc_vs_entropy, plot_curve, plot_pass_at_k
from cft.compare.report import compare, main
from cft.compare.runs import (
    CompareError,
    Run,
    find_runs,
    load_runs,
    load_wandb_runs,
    read_curves,
    read_run,
    run_identity,
)
from cft.compare.tables import curves_table, pair_runs, seed_table, summarize, summary_markdown

__all__ = [
    "CompareError",
    "Run",
    "compare",
    "curves_table",
    "find_runs",
    "load_runs",
    "load_wandb_runs",
    "main",
    "pair_runs",
    "plot_acc_vs_entropy",
    "plot_curve",
    "plot_pass_at_k",
    "read_curves",
    "read_run",
    "run_identity",
    "seed_table",
    "summarize",
    "summary_markdown",
]
