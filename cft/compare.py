"""Compare runs across methods and seeds: mean ± std tables and plots of accuracy, pass@k and entropy.

    python -m cft.compare 'runs/tiny_study/*' [MORE_DIRS_OR_GLOBS ...] --out DIR [--wandb-project P]

Reads local run dirs (offline) or a W&B project, and writes DIR/summary.md, DIR/summary.csv (per method),
DIR/runs.csv (per method and seed), DIR/curves.csv (training curves), and the plots pass_at_k.png,
acc_vs_entropy.png, train_entropy.png and val_acc.png.

Runs pair up by (method, seed). A training run gives the curves (metrics.csv: train/entropy, train/frac_tokens_selected,
val/acc, ...), an evaluation run (`python -m cft test`) gives metrics.json (eval/<split>/acc, .../pass@k,
.../entropy); one dir may be both. The method and seed of a run come from, in this order:
  1. its W&B tags `method=<m>` and `seed=<s>` (run.tags; `python -m cft.sweep` sets them on both runs);
  2. for an evaluation run of `<train run>/hf/<best|last>`, that training run's method and seed;
  3. its config: the weighting or selector class (DFTWeighting -> dft, CriticalTokens -> cft, AllTokens -> sft, ...;
     `pretrain` for loss_on_prompt) and seed_everything.
When two runs claim the same (method, seed) and kind, the newer one is used, with a warning naming both.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import sys
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from cft.errors import CFTError

__all__ = [
    "CompareError",
    "Run",
    "compare",
    "curves_table",
    "find_runs",
    "load_runs",
    "load_wandb_runs",
    "read_run",
    "seed_table",
    "summarize",
]

# Class name -> method name used in tables (the names the sweep grid uses as tags).
METHOD_ALIASES = {
    "AllTokens": "sft",
    "CriticalTokens": "cft",
    "RandomTokens": "random",
    "EntropyTokens": "entropy",
    "NumericTokens": "numeric",
    "DFTWeighting": "dft",
    "Rho1Weighting": "rho1",
}
METHOD_ORDER = ["base", "pretrain", "sft", "cft", "random", "entropy", "numeric", "dft", "rho1"]
CURVES = (
    "train/entropy", "train/frac_tokens_selected", "train/loss", "val/acc", "val/entropy", "val/loss",
    "rl/entropy", "rl/reward_mean",
)  # fmt: skip
WALL_COLUMNS = ("train/wall_s", "train/elapsed_s", "time/elapsed_s")
_SKIP_DIRS = {"wandb", "checkpoints", "hf", "predictions", "annotations"}


class CompareError(CFTError):
    """Runs that cannot be compared; the message names the run dir (or W&B project) and the missing file or field."""


@dataclass
class Run:
    """One run as the comparison sees it: identity, evaluation metrics and training curves."""

    path: str
    experiment: str
    method: str
    seed: int | None
    eval: dict[str, float] = field(default_factory=dict)
    curves: pd.DataFrame | None = None  # index: step; columns: CURVES present in the run
    frac_tokens_selected: float | None = None
    wall_s: float | None = None
    mtime: float = 0.0
    model_path: str | None = None

    @property
    def is_train(self) -> bool:
        # val/ counts too: a short run may validate before its first train/ row is logged (log_every_n_steps)
        return self.curves is not None and any(c.startswith(("train/", "val/")) for c in self.curves.columns)

    @property
    def is_eval(self) -> bool:
        return bool(self.eval)


# -- reading ----------------------------------------------------------------------------------------------------------
def _tags(config: dict[str, Any]) -> dict[str, str]:
    tags = (config.get("run") or {}).get("tags") or []
    return dict(t.split("=", 1) for t in tags if isinstance(t, str) and "=" in t)


def _class_name(node: Any) -> str | None:
    if isinstance(node, dict) and node.get("class_path"):
        return str(node["class_path"]).rsplit(".", 1)[-1]
    return None


def method_from_config(config: dict[str, Any]) -> str:
    """Method name from a resolved config: the weighting if any, else the selector (see METHOD_ALIASES)."""
    model_args = (config.get("model") or {}).get("init_args") or {}
    data_args = (config.get("data") or {}).get("init_args") or {}
    if data_args.get("loss_on_prompt"):
        return "pretrain"
    name = _class_name(model_args.get("weighting")) or _class_name(data_args.get("selector"))
    if name is None:
        name = _class_name(config.get("model")) or "unknown"
    return METHOD_ALIASES.get(name, name)


def _seed(value: Any) -> int | None:
    try:
        return None if value is None or isinstance(value, bool) else int(value)
    except (TypeError, ValueError):
        return None


def read_curves(path: Path) -> pd.DataFrame:
    """metrics.csv as one row per step: the last non-empty value of each metric at that step (resumed runs and
    validation rows log several rows for one step)."""
    df = pd.read_csv(path)
    if "step" not in df.columns:
        raise CompareError(f"{path}: no 'step' column (expected Lightning's CSV logger output)")
    return df.groupby("step").last().sort_index()


def read_run(path: str | os.PathLike) -> Run:
    """One local run dir: config.yaml plus metrics.csv and/or metrics.json (and data_stats.json when present)."""
    d = Path(path)
    if not d.is_dir():
        raise CompareError(f"run dir {str(path)!r} does not exist")
    if not (d / "config.yaml").is_file():
        raise CompareError(f"run dir {str(path)!r}: config.yaml is missing (not a `python -m cft` run dir?)")
    csv_path, json_path = d / "metrics.csv", d / "metrics.json"
    if not csv_path.is_file() and not json_path.is_file():
        raise CompareError(f"run dir {str(path)!r}: metrics.csv and metrics.json are both missing (run not finished?)")
    config = yaml.safe_load((d / "config.yaml").read_text()) or {}
    tags = _tags(config)
    run = Run(
        path=str(d),
        experiment=str((config.get("run") or {}).get("experiment", d.parent.name)),
        method=tags.get("method") or method_from_config(config),
        seed=_seed(tags["seed"]) if "seed" in tags else _seed(config.get("seed_everything")),
        model_path=(((config.get("model") or {}).get("init_args") or {}).get("model") or {}).get("name_or_path"),
    )
    times = []
    if json_path.is_file():
        try:
            metrics = json.loads(json_path.read_text())
        except json.JSONDecodeError as e:
            raise CompareError(f"{json_path}: not valid JSON ({e})") from e
        run.eval = {k: float(v) for k, v in metrics.items() if k.startswith("eval/") and isinstance(v, int | float)}
        times.append(json_path.stat().st_mtime)
    if csv_path.is_file():
        curves = read_curves(csv_path)
        keep = [c for c in curves.columns if c in CURVES]
        run.curves = curves[keep] if keep else None
        wall = [c for c in WALL_COLUMNS if c in curves.columns]
        if wall:
            run.wall_s = float(curves[wall[0]].max())
        elif run.is_train:
            run.wall_s = _file_time_span(d)
        times.append(csv_path.stat().st_mtime)
    stats = d / "data_stats.json"
    if stats.is_file():
        run.frac_tokens_selected = json.loads(stats.read_text()).get("frac_tokens_selected")
    if run.frac_tokens_selected is None and run.curves is not None and "train/frac_tokens_selected" in run.curves:
        run.frac_tokens_selected = float(run.curves["train/frac_tokens_selected"].mean())
    run.mtime = max(times)
    if "method" not in tags and run.is_eval and not run.is_train:
        _inherit_from_train_run(run, d, config)
    return run


def _file_time_span(d: Path) -> float:
    """Approximate wall time: earliest to latest modification time of the files in the run dir (undercounts a run
    that was resumed, whose early files are rewritten; log `train/wall_s` for an exact number)."""
    times = [p.stat().st_mtime for p in d.rglob("*") if p.is_file()]
    return max(times) - min(times) if times else math.nan


def _inherit_from_train_run(run: Run, d: Path, config: dict[str, Any]) -> None:
    """An eval run of `<train run>/hf/<x>` takes the training run's method and seed."""
    if not run.model_path:
        return
    model = Path(run.model_path)
    candidates = [model]
    root = (config.get("run") or {}).get("root")
    if not model.is_absolute() and root:
        try:  # the path was relative to where the eval ran; the eval dir is <root>/<experiment>/<name>
            candidates.append(d.parents[1] / model.relative_to(root))
        except ValueError:
            pass
    for m in candidates:
        if m.parent.name == "hf" and (m.parent.parent / "config.yaml").is_file():
            train_cfg = yaml.safe_load((m.parent.parent / "config.yaml").read_text()) or {}
            tags = _tags(train_cfg)
            run.method = tags.get("method") or method_from_config(train_cfg)
            run.seed = _seed(tags["seed"]) if "seed" in tags else _seed(train_cfg.get("seed_everything"))
            return


def _expand(paths: Iterable[str | os.PathLike]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        s = str(p)
        if any(c in s for c in "*?["):
            # A glob may sweep in non-run dirs (logs/, a compare output): only dirs with a config.yaml are runs.
            matched = sorted(Path(m) for m in glob.glob(s) if (Path(m) / "config.yaml").is_file())
            if not matched:
                raise CompareError(f"no run dirs (dirs with config.yaml) match {s!r}")
            out.extend(matched)
        else:
            out.append(Path(s))
    return out


def find_runs(root: str | os.PathLike, max_depth: int = 2) -> list[Path]:
    """Run dirs (config.yaml plus metrics.csv or metrics.json) at or below `root`, at most `max_depth` levels down."""
    root = Path(root)
    if not root.is_dir():
        raise CompareError(f"runs root {str(root)!r} does not exist")
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        depth = len(Path(dirpath).relative_to(root).parts)
        dirnames[:] = sorted(n for n in dirnames if n not in _SKIP_DIRS and not n.startswith(".") and depth < max_depth)
        if "config.yaml" in filenames and ({"metrics.csv", "metrics.json"} & set(filenames)):
            found.append(Path(dirpath))
    return sorted(found)


def load_runs(paths: Iterable[str | os.PathLike]) -> list[Run]:
    """Read run dirs given as paths or globs (a dir without metrics is an error naming it)."""
    runs = [read_run(p) for p in _expand(paths)]
    if not runs:
        raise CompareError("no runs given")
    return runs


def load_wandb_runs(project: str, group: str | None = None) -> list[Run]:  # pragma: no cover - needs network
    """Runs of a W&B project (optionally one group = experiment) through the public API.

    Needs network access and a login, so the offline tests do not exercise it; the config W&B holds is the resolved
    config the CLI logs, so method and seed resolve as for local runs (rule 2, the checkpoint link, is local only).
    """
    mode = os.environ.get("WANDB_MODE", "")
    if mode in ("offline", "disabled", "dryrun"):
        # The API would retry against an unreachable server for minutes; say why at once instead.
        raise CompareError(f"W&B project {project!r}: WANDB_MODE={mode} (no network use); unset it to read the API")
    try:
        import wandb

        api = wandb.Api(timeout=30)
        found = list(api.runs(project, filters={"group": group} if group else None))
    except Exception as e:
        raise CompareError(
            f"W&B project {project!r} could not be read (offline, not logged in, wrong name?): {e}"
        ) from e
    runs = []
    for r in found:
        config, summary = dict(r.config), dict(r.summary)
        tags = dict(t.split("=", 1) for t in r.tags if "=" in t)
        run = Run(
            path=f"wandb:{project}/{r.id}",
            experiment=r.group or "",
            method=tags.get("method") or method_from_config(config),
            seed=_seed(tags["seed"]) if "seed" in tags else _seed(config.get("seed_everything")),
            eval={k: float(v) for k, v in summary.items() if k.startswith("eval/") and isinstance(v, int | float)},
            wall_s=summary.get("_runtime"),
        )
        hist = r.history(samples=100_000, pandas=True)
        if len(hist) and "trainer/global_step" in hist.columns:
            hist = hist.rename(columns={"trainer/global_step": "step"})
            keep = [c for c in hist.columns if c in CURVES]
            run.curves = hist.groupby("step").last()[keep].sort_index() if keep else None
        if run.curves is not None and "train/frac_tokens_selected" in run.curves:
            run.frac_tokens_selected = float(run.curves["train/frac_tokens_selected"].mean())
        runs.append(run)
    if not runs:
        raise CompareError(f"W&B project {project!r} has no runs" + (f" in group {group!r}" if group else ""))
    return runs


# -- tables -----------------------------------------------------------------------------------------------------------
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


# -- plots ------------------------------------------------------------------------------------------------------------
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


# -- entry points -----------------------------------------------------------------------------------------------------
def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


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
    _write_text(out / "runs.csv", table.to_csv(index=False))
    _write_text(out / "summary.csv", summary.to_csv(index=False))
    _write_text(out / "summary.md", summary_markdown(summary, table))
    _write_text(out / "curves.csv", curves_table(runs).to_csv(index=False))
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
    except CompareError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print((Path(args.out) / "summary.md").read_text())
    print(f"[cft.compare] wrote {args.out}/summary.md, summary.csv, runs.csv, curves.csv and plots")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
