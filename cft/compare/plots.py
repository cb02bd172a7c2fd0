"""Plots of compared runs (matplotlib without pyplot): pass@k against k, accuracy against entropy, and training
curves per method (mean ± std over seeds)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from cft.compare.runs import Run
from cft.compare.tables import _ks, _method_key, _splits, pair_runs


def _figure(n_panels: int, width: float = 5.0):
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, safe in scripts and batch jobs

    fig = Figure(figsize=(width * max(1, n_panels), 4), layout="constrained")
    return fig, [fig.add_subplot(1, max(1, n_panels), i + 1) for i in range(max(1, n_panels))]


def _empty(path: Path, message: str) -> None:
    fig, (ax,) = _figure(1)
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True)
    ax.set_axis_off()
    fig.savefig(path, dpi=100)


def _methods(table: pd.DataFrame) -> list[str]:
    return sorted(table["method"].unique(), key=_method_key)


def plot_pass_at_k(table: pd.DataFrame, path: Path) -> None:
    """pass@k against k per method (mean ± std over seeds), one panel per split."""
    splits = [s for s in _splits(table.columns) if _ks(table.columns, s)]
    if not splits:
        return _empty(path, "no pass@k metrics: evaluate with --model.init_args.num_samples N (N > 1)")
    fig, axes = _figure(len(splits))
    for ax, split in zip(axes, splits):
        ks = _ks(table.columns, split)
        for i, method in enumerate(_methods(table)):
            g = table[table["method"] == method][[f"eval/{split}/pass@{k}" for k in ks]]
            if g.notna().any().any():
                yerr = g.std(ddof=1).fillna(0)
                ax.errorbar(ks, g.mean(), yerr=yerr, color=f"C{i % 10}", marker="o", capsize=3, label=method)
        ax.set(xscale="log", xlabel="k", ylabel="pass@k", title=split)
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.minorticks_off()
        ax.legend(fontsize="small")
    fig.savefig(path, dpi=100)


def plot_acc_vs_entropy(table: pd.DataFrame, path: Path) -> None:
    """Greedy accuracy against mean token entropy of generations: seeds as dots, method means ± std as crosses."""
    splits = [s for s in _splits(table.columns) if {f"eval/{s}/acc", f"eval/{s}/entropy"} <= set(table.columns)]
    if not splits:
        return _empty(path, "no eval/<split>/acc and entropy: evaluate the runs (python -m cft test)")
    fig, axes = _figure(len(splits))
    for ax, split in zip(axes, splits):
        for i, method in enumerate(_methods(table)):
            g = table[table["method"] == method][[f"eval/{split}/entropy", f"eval/{split}/acc"]].dropna()
            if not len(g):
                continue
            x, y = g.iloc[:, 0], g.iloc[:, 1]
            color = f"C{i % 10}"
            ax.scatter(x, y, color=color, alpha=0.4, s=18)
            sx, sy = (x.std(ddof=1), y.std(ddof=1)) if len(g) > 1 else (0, 0)
            ax.errorbar(x.mean(), y.mean(), xerr=sx, yerr=sy, color=color, marker="s", capsize=3, label=method)
        ax.set(xlabel="mean token entropy (nats)", ylabel="accuracy", title=split)
        ax.legend(fontsize="small")
    fig.savefig(path, dpi=100)


def plot_curve(runs: Sequence[Run], metric: str, path: Path) -> None:
    """`metric` over training steps per method: mean over seeds with a ± std band."""
    by_method: dict[str, list[pd.Series]] = {}
    for (method, _), (train, _) in pair_runs(runs).items():
        if train is not None and metric in train.curves:
            by_method.setdefault(method, []).append(train.curves[metric].dropna())
    if not by_method:
        return _empty(path, f"no {metric} curves: none of the runs is a training run that logged it")
    fig, (ax,) = _figure(1, width=7)
    # the same colour per method as in the other plots: index among all methods of the runs
    methods = sorted({r.method for r in runs}, key=_method_key)
    for method in sorted(by_method, key=_method_key):
        df = pd.concat(by_method[method], axis=1)
        mean, std = df.mean(axis=1), df.std(axis=1, ddof=1).fillna(0)
        color = f"C{methods.index(method) % 10}"
        ax.plot(mean.index, mean, color=color, label=f"{method} (n={df.shape[1]})")
        ax.fill_between(mean.index, mean - std, mean + std, color=color, alpha=0.2)
    ax.set(xlabel="optimizer step", ylabel=metric, title=f"{metric} (mean ± std over seeds)")
    ax.legend(fontsize="small")
    fig.savefig(path, dpi=100)
