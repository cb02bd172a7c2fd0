"""Tables of compared runs: pairing training and evaluation runs by (method, seed), one row per seed, mean ± std per
method, and the markdown summary."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

from cft.compare.runs import METHOD_ORDER, Run


def _pick(runs: list[Run], kind: str, key: tuple[str, int | None]) -> Run | None:
    cands = sorted(runs, key=lambda r: r.mtime)
    if len(cands) > 1:
        older = ", ".join(r.path for r in cands[:-1])
        warnings.warn(f"{kind} runs {older} and {cands[-1].path} are all {key}; using the newest", stacklevel=3)
    return cands[-1] if cands else None


def pair_runs(runs: Sequence[Run]) -> dict[tuple[str, int | None], tuple[Run | None, Run | None]]:
    """(method, seed) -> (training run, evaluation run); a dir that is both fills both slots."""
    groups: dict[tuple[str, int | None], list[Run]] = {}
    for r in runs:
        groups.setdefault((r.method, r.seed), []).append(r)
    return {
        k: (_pick([r for r in g if r.is_train], "training", k), _pick([r for r in g if r.is_eval], "evaluation", k))
        for k, g in groups.items()
    }


def _method_key(m: str) -> tuple[int, str]:
    return (METHOD_ORDER.index(m), "") if m in METHOD_ORDER else (len(METHOD_ORDER), m)


def seed_table(runs: Sequence[Run]) -> pd.DataFrame:
    """One row per (method, seed): evaluation metrics, tokens trained, wall time, best and final val/acc."""
    rows = []
    for (method, seed), (train, ev) in pair_runs(runs).items():
        row: dict[str, Any] = {"method": method, "seed": seed}
        row["experiment"] = (train or ev).experiment
        row["train_run"], row["eval_run"] = train.path if train else None, ev.path if ev else None
        if ev is not None:
            row.update(ev.eval)
        if train is not None:
            row["frac_tokens_selected"] = train.frac_tokens_selected
            row["wall_min"] = None if train.wall_s is None else train.wall_s / 60
            if "val/acc" in train.curves:
                acc = train.curves["val/acc"].dropna()
                row["val/acc_best"] = float(acc.max()) if len(acc) else None
                row["val/acc_final"] = float(acc.iloc[-1]) if len(acc) else None
        rows.append(row)
    df = pd.DataFrame(rows)
    df = df.iloc[sorted(range(len(df)), key=lambda i: (_method_key(df["method"].iloc[i]), str(df["seed"].iloc[i])))]
    return df.reset_index(drop=True)


def curves_table(runs: Sequence[Run]) -> pd.DataFrame:
    """Training curves of the paired training runs, long format: method, seed, step, then one column per metric."""
    parts = []
    for (method, seed), (train, _) in pair_runs(runs).items():
        if train is not None:
            parts.append(train.curves.reset_index().assign(method=method, seed=seed))
    if not parts:
        return pd.DataFrame(columns=["method", "seed", "step"])
    df = pd.concat(parts, ignore_index=True)
    return df[["method", "seed", "step", *[c for c in df.columns if c not in ("method", "seed", "step")]]]


def _metric_columns(df: pd.DataFrame) -> list[str]:
    skip = {"method", "seed", "experiment", "train_run", "eval_run"}
    return [c for c in df.columns if c not in skip and pd.api.types.is_numeric_dtype(df[c])]


def summarize(table: pd.DataFrame) -> pd.DataFrame:
    """Per method: `<metric>_mean`, `<metric>_std` (sample std over seeds; NaN with one seed) and n_seeds."""
    metrics = _metric_columns(table)
    out = []
    for method, g in table.groupby("method", sort=False):
        row: dict[str, Any] = {"method": method, "n_seeds": int(g["seed"].nunique(dropna=False))}
        for c in metrics:
            vals = g[c].dropna()
            row[f"{c}_mean"] = float(vals.mean()) if len(vals) else math.nan
            row[f"{c}_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else math.nan
        out.append(row)
    return pd.DataFrame(out)


def _splits(columns: Iterable[str]) -> list[str]:
    return sorted({c.split("/")[1] for c in columns if c.startswith("eval/") and c.count("/") >= 2})


def _ks(columns: Iterable[str], split: str) -> list[int]:
    pre = f"eval/{split}/pass@"
    return sorted(int(c[len(pre) :]) for c in columns if c.startswith(pre) and c[len(pre) :].isdigit())


def summary_markdown(summary: pd.DataFrame, table: pd.DataFrame) -> str:
    """Markdown table: mean ± std over seeds per method (pass@k at the largest k; all ks in summary.csv)."""
    cols: list[tuple[str, str, int]] = []  # (column, header, digits)
    for split in _splits(table.columns):
        cols.append((f"eval/{split}/acc", f"{split} acc", 3))
        ks = _ks(table.columns, split)
        if ks:
            cols.append((f"eval/{split}/pass@{ks[-1]}", f"{split} pass@{ks[-1]}", 3))
        cols.append((f"eval/{split}/entropy", f"{split} entropy", 3))
    cols += [("val/acc_best", "best val acc", 3), ("frac_tokens_selected", "tokens trained", 3)]
    cols += [("wall_min", "train min", 1)]
    cols = [c for c in cols if f"{c[0]}_mean" in summary.columns]

    def cell(row: pd.Series, col: str, digits: int) -> str:
        mean, std = row[f"{col}_mean"], row[f"{col}_std"]
        if pd.isna(mean):
            return "–"
        return f"{mean:.{digits}f}" + ("" if pd.isna(std) else f" ± {std:.{digits}f}")

    lines = ["| method | seeds | " + " | ".join(h for _, h, _ in cols) + " |", "|---|---:|" + "---:|" * len(cols)]
    for _, row in summary.iterrows():
        cells = [cell(row, c, d) for c, _, d in cols]
        lines.append(f"| {row['method']} | {row['n_seeds']} | " + " | ".join(cells) + " |")
    note = (
        "\nMean ± sample std over seeds (no ± with one seed). Tokens trained: fraction of response tokens with weight."
    )
    return "\n".join(lines) + "\n" + note + "\n"
