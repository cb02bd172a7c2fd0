"""Mean with a 95% interval per method, and paired differences against a baseline method over the same seeds:

    python -m cft.compare.paired 'runs/testbed_study/*' --baseline sft_own --out docs/results/testbed_study/paired.md
        [--extra token_entropy.csv] [--metrics eval/test/acc eval/test_hard/acc ...]

A paired difference is taken seed by seed (method's run with seed s minus the baseline's run with seed s), so the
seed-to-seed variation both share (same base, same data order) cancels; its interval is Student's t over the seeds
that both methods have. `--extra` adds per-(method, seed) columns from a CSV (e.g. `cft.token_entropy` output).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from cft.compare.runs import load_runs
from cft.compare.tables import seed_table
from cft.errors import CompareError
from cft.io import atomic_write_text

__all__ = ["DEFAULT_METRICS", "mean_ci", "paired_table", "t_quantile"]

DEFAULT_METRICS = (
    "eval/test/acc",
    "eval/test/pass@8",
    "eval/test_hard/acc",
    "eval/test_hard/pass@8",
    "eval/test/sample_entropy",
    "eval/test/distinct_answers",
)

# Two-sided 95% quantiles of Student's t by degrees of freedom (no scipy in the runtime dependencies).
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
         12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042}  # fmt: skip


def t_quantile(df: int) -> float:
    """The 0.975 quantile of Student's t with `df` degrees of freedom (the nearest tabulated df below; 1.96 > 30)."""
    if df < 1:
        return math.nan
    if df > 30:
        return 1.96
    return _T975[max(d for d in _T975 if d <= df)]


def mean_ci(values: Sequence[float]) -> tuple[float, float, int]:
    """(mean, half-width of the 95% t interval, n) of the finite values; half-width NaN for fewer than two."""
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(xs)
    if n == 0:
        return math.nan, math.nan, 0
    mean = sum(xs) / n
    if n < 2:
        return mean, math.nan, n
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    return mean, t_quantile(n - 1) * sd / math.sqrt(n), n


def paired_table(table: pd.DataFrame, baseline: str, metrics: Sequence[str]) -> pd.DataFrame:
    """One row per (method, metric): mean ± 95% half-width over seeds, and the paired difference to `baseline`."""
    if baseline not in set(table["method"]):
        raise CompareError(f"baseline method {baseline!r} has no runs; methods: {sorted(set(table['method']))}")
    base = table[table["method"] == baseline].set_index("seed")
    rows = []
    # The baseline first, then the others in the table's order.
    for method in dict.fromkeys([baseline, *table["method"]]):
        own = table[table["method"] == method].set_index("seed")
        for metric in metrics:
            if metric not in table.columns:
                continue
            mean, half, n = mean_ci(own[metric].tolist())
            seeds = sorted(set(own.index) & set(base.index))
            diffs = [own.at[s, metric] - base.at[s, metric] for s in seeds]
            d_mean, d_half, d_n = mean_ci(diffs) if method != baseline else (math.nan, math.nan, 0)
            rows.append(
                dict(
                    method=method, metric=metric, n=n, mean=mean, ci95=half, diff=d_mean, diff_ci95=d_half, n_pairs=d_n
                )
            )
    return pd.DataFrame(rows)


def _fmt(mean: float, half: float, signed: bool = False) -> str:
    if not math.isfinite(mean):
        return "-"
    text = f"{mean:+.3f}" if signed else f"{mean:.3f}"
    return text + (f" ± {half:.3f}" if math.isfinite(half) else "")


def paired_markdown(paired: pd.DataFrame, baseline: str) -> str:
    """A methods x metrics table of `mean ± 95%` and a second one of paired differences against `baseline`."""
    metrics = list(dict.fromkeys(paired["metric"]))
    methods = list(dict.fromkeys(paired["method"]))
    cell = {(r.method, r.metric): r for r in paired.itertuples()}
    head = "| method | n | " + " | ".join(metrics) + " |\n|---|---:|" + "---:|" * len(metrics) + "\n"
    out = ["Mean ± half-width of the 95% t interval over seeds.\n", head]
    diff = [f"\nPaired difference to `{baseline}` (same seeds), mean ± 95% half-width; an interval that excludes 0 "
            "is marked *.\n", head]  # fmt: skip
    for m in methods:
        n = max((cell[(m, k)].n for k in metrics if (m, k) in cell), default=0)
        out.append(f"| {m} | {n} | " + " | ".join(_fmt(cell[(m, k)].mean, cell[(m, k)].ci95) for k in metrics) + " |\n")
        if m == baseline:
            continue
        cells = []
        for k in metrics:
            r = cell[(m, k)]
            star = "*" if math.isfinite(r.diff_ci95) and abs(r.diff) > r.diff_ci95 else ""
            cells.append(_fmt(r.diff, r.diff_ci95, signed=True) + star)
        diff.append(f"| {m} | {cell[(m, metrics[0])].n_pairs} | " + " | ".join(cells) + " |\n")
    return "".join(out + diff)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cft.compare.paired", description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="run dirs or quoted globs (training and evaluation runs)")
    p.add_argument("--baseline", required=True, help="method the paired differences are taken against")
    p.add_argument("--out", required=True, help="markdown file to write (a .csv with the numbers beside it)")
    p.add_argument("--extra", help="CSV with columns method, seed and more metrics, merged on (method, seed)")
    p.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS), help="metric columns to report")
    args = p.parse_args(argv)
    try:
        table = seed_table(load_runs(args.runs))
        if args.extra:
            extra = pd.read_csv(args.extra)
            missing = {"method", "seed"} - set(extra.columns)
            if missing:
                raise CompareError(f"--extra {args.extra}: columns {sorted(missing)} are missing")
            table = table.merge(extra, on=["method", "seed"], how="left")
        paired = paired_table(table, args.baseline, args.metrics)
    except CompareError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    for path, text in ((out, paired_markdown(paired, args.baseline)), (out.with_suffix(".csv"), paired.to_csv())):
        atomic_write_text(path, text)
    print(out.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
