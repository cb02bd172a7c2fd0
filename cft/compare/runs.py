"""Reading runs: a local run dir (config.yaml, metrics.csv, metrics.json) or a W&B project, as `Run` records with
the run's method, seed, evaluation metrics and training curves."""

from __future__ import annotations

import glob
import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from cft.errors import CompareError

METHOD_ORDER = ["base", "pretrain", "sft", "cft", "random", "entropy", "numeric", "dft", "rho1"]
CURVES = (
    "train/entropy", "train/frac_tokens_selected", "train/loss", "val/acc", "val/entropy", "val/loss",
    "rl/entropy", "rl/reward_mean",
)  # fmt: skip
WALL_COLUMNS = ("train/wall_s", "train/elapsed_s", "time/elapsed_s")
_SKIP_DIRS = {"wandb", "checkpoints", "hf", "predictions", "annotations"}


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
def run_identity(config: dict[str, Any]) -> tuple[str | None, int | None]:
    """(method, seed) a run's resolved config declares: `run.method` (the CLI fills it on `fit`) and
    `seed_everything`. Run dirs written before `run.method` existed name the method in a `method=<m>` tag; that is
    read for them only."""
    run = config.get("run") or {}
    method = run.get("method")
    if method is None:
        legacy = [t[len("method=") :] for t in run.get("tags") or [] if isinstance(t, str) and t.startswith("method=")]
        method = legacy[-1] if legacy else None
    return method, _seed(config.get("seed_everything"))


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
    method, seed = run_identity(config)
    run = Run(
        path=str(d),
        experiment=str((config.get("run") or {}).get("experiment", d.parent.name)),
        method=method or "unknown",
        seed=seed,
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
    if method is None and run.is_eval and not run.is_train:
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
            method, run.seed = run_identity(train_cfg)
            run.method = method or "unknown"
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


def load_wandb_runs(project: str, group: str | None = None) -> list[Run]:
    """Runs of a W&B project (optionally one group = experiment) through the public API.

    Needs network access and a login (tests replay recorded API objects); the config W&B holds is the resolved
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
        method, seed = run_identity(config)
        run = Run(
            path=f"wandb:{project}/{r.id}",
            experiment=r.group or "",
            method=method or "unknown",
            seed=seed,
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
