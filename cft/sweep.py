"""Method x seed sweeps: `python -m cft.sweep --grid G.yaml [--index I | --all] [--dry-run]`.

A grid point is (method, seed). Index i maps to method i // len(seeds) and seed seeds[i % len(seeds)] (methods in
file order), so a SLURM array `--array=0-(N-1)` covers the grid exactly once. Each point runs, one after the other,

    python -m cft fit  <fit args> <method args> --run.name <method>-s<seed> --run.method <m> ...
    python -m cft test <eval args> --model.init_args.model.name_or_path <root>/<experiment>/<method>-s<seed>/hf/best
                       --run.name <method>-s<seed>-eval --run.method <m> --run.tags [eval] ...

in the experiment `<experiment>` (the W&B group). With `--submit` each point becomes SLURM jobs instead: the training
run one multi-GPU job of `slurm/fit.sbatch` (`--sbatch` gives nodes x GPUs) and the evaluation a job that starts
after it succeeds (`--dependency=afterok`). `cft.compare` pairs the two runs by their run.method and seed. A point whose
eval run already has metrics.json is skipped; a point interrupted in `fit` resumes from its last checkpoint.

Grid file (YAML; `{method}`, `{seed}`, `{experiment}` and `{root}` are substituted in every argument):

    experiment: tiny_study          # run.experiment (W&B group)
    root: runs                      # run.root
    seeds: [0, 1, 2]
    fit: [--config, configs/tiny/cft.yaml]                  # arguments shared by every method's training run
    eval: [--config, configs/tiny/eval.yaml]                # arguments of the evaluation run (omit: no evaluation)
    checkpoint: best                                        # which <run>/hf/<checkpoint> is evaluated
    methods:                                                # name -> extra training arguments (CLI overrides or
      sft: [--data.init_args.selector, cft.selectors.AllTokens]   #   --config files), in the order of the index
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cft.errors import CFTError, SweepError, error_line

_KEYS = {"experiment", "root", "seeds", "fit", "eval", "checkpoint", "methods"}


@dataclass
class Grid:
    """A method x seed grid read from a YAML file (see the module docstring for the format).

    Args:
        path: the grid file (named in error messages).
        experiment: run.experiment of every run (the W&B group).
        seeds: seeds of every method (seed_everything and the data order).
        methods: method name -> extra `python -m cft fit` arguments.
        fit: `python -m cft fit` arguments shared by all methods.
        eval: `python -m cft test` arguments of the evaluation run (None: train only).
        root: run.root of every run.
        checkpoint: which `<run>/hf/<checkpoint>` export is evaluated.
    """

    path: str
    experiment: str
    seeds: list[int]
    methods: dict[str, list[str]]
    fit: list[str] = field(default_factory=list)
    eval: list[str] | None = None
    root: str = "runs"
    checkpoint: str = "best"

    @classmethod
    def load(cls, path: str | os.PathLike) -> Grid:
        p = Path(path)
        if not p.is_file():
            raise SweepError(f"grid file {str(path)!r} does not exist")
        try:
            raw = yaml.safe_load(p.read_text())
        except yaml.YAMLError as e:
            raise SweepError(f"grid file {str(path)!r} is not valid YAML: {e}") from e
        if not isinstance(raw, dict):
            raise SweepError(f"grid file {str(path)!r}: expected a mapping with keys {sorted(_KEYS)}")
        unknown = set(raw) - _KEYS
        if unknown:
            raise SweepError(f"grid file {str(path)!r}: unknown key(s) {sorted(unknown)}; known: {sorted(_KEYS)}")
        for key in ("experiment", "seeds", "methods"):
            if not raw.get(key):
                raise SweepError(f"grid file {str(path)!r}: key {key!r} is missing or empty")
        seeds = raw["seeds"]
        if not isinstance(seeds, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
            raise SweepError(f"grid file {str(path)!r}: 'seeds' must be a list of integers, got {seeds!r}")
        if len(set(seeds)) != len(seeds):
            raise SweepError(f"grid file {str(path)!r}: 'seeds' has duplicates: {seeds}")
        if not isinstance(raw["methods"], dict):
            raise SweepError(f"grid file {str(path)!r}: 'methods' must map method names to argument lists")
        methods = {str(m): _args(path, f"methods.{m}", a) for m, a in raw["methods"].items()}
        for m in methods:
            if not m or any(c in m for c in "/ \t"):
                raise SweepError(f"grid file {str(path)!r}: method name {m!r} must be non-empty, without '/' or spaces")
        return cls(
            path=str(path),
            experiment=str(raw["experiment"]),
            seeds=list(seeds),
            methods=methods,
            fit=_args(path, "fit", raw.get("fit")),
            eval=None if raw.get("eval") is None else _args(path, "eval", raw["eval"]),
            root=str(raw.get("root", "runs")),
            checkpoint=str(raw.get("checkpoint", "best")),
        )

    def __len__(self) -> int:
        return len(self.methods) * len(self.seeds)

    def point(self, index: int) -> tuple[str, int]:
        """(method, seed) of grid index `index`: method-major, seeds in file order."""
        if not 0 <= index < len(self):
            raise SweepError(
                f"index {index} is out of range for grid {self.path!r}: {len(self.methods)} methods x "
                f"{len(self.seeds)} seeds = {len(self)} points (valid indices 0..{len(self) - 1})"
            )
        methods = list(self.methods)
        return methods[index // len(self.seeds)], self.seeds[index % len(self.seeds)]

    def run_name(self, method: str, seed: int) -> str:
        return f"{method}-s{seed}"

    def run_dir(self, method: str, seed: int, eval: bool = False) -> Path:
        return Path(self.root) / self.experiment / (self.run_name(method, seed) + ("-eval" if eval else ""))

    def commands(self, index: int, fit_extra: Sequence[str] = (), eval_extra: Sequence[str] = ()) -> list[list[str]]:
        """The `python -m cft ...` argument lists (after `-m cft`) of grid point `index`: fit, then test."""
        method, seed = self.point(index)
        subst = {"method": method, "seed": seed, "experiment": self.experiment, "root": self.root}

        def fill(args: list[str]) -> list[str]:
            try:
                return [a.format(**subst) for a in args]
            except (KeyError, IndexError, ValueError) as e:
                raise SweepError(
                    f"grid file {self.path!r}: bad placeholder in {args!r} ({e}); known: {list(subst)}"
                ) from e

        where = ["--run.root", self.root, "--run.experiment", self.experiment, "--seed_everything", str(seed)]
        name = self.run_name(method, seed)
        fit = ["fit", *fill(self.fit), *fill(self.methods[method]), *where, "--run.name", name]
        fit += ["--run.method", method, "--data.init_args.seed", str(seed), *fit_extra]
        cmds = [fit]
        if self.eval is not None:
            model = str(self.run_dir(method, seed) / "hf" / self.checkpoint)
            test = ["test", *fill(self.eval), "--model.init_args.model.name_or_path", model, *where]
            test += ["--run.name", f"{name}-eval", "--run.method", method, "--run.tags", "[eval]", *eval_extra]
            cmds.append(test)
        return cmds


def _args(path: Any, key: str, value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str | int | float) for v in value):
        raise SweepError(f"grid file {str(path)!r}: {key!r} must be a list of command-line arguments, got {value!r}")
    return [str(v) for v in value]


def _on_usr1(signum: int, frame: Any) -> None:
    # SLURM (--signal=USR1@T) signals every process of the step, the training child included, and Lightning's handler
    # there checkpoints and requeues the task. The sweep itself only has to survive the signal (its default kills).
    print("[cft.sweep] SIGUSR1: the running command checkpoints and requeues the task", flush=True)


def run_point(grid: Grid, index: int, fit_extra: Sequence[str], eval_extra: Sequence[str], dry_run: bool) -> int:
    """Run (or print) the commands of one grid point; returns the exit status of the first failing one, else 0."""
    method, seed = grid.point(index)
    cmds = grid.commands(index, fit_extra, eval_extra)
    done = grid.eval is not None and (grid.run_dir(method, seed, eval=True) / "metrics.json").is_file()
    if done and not dry_run:
        print(f"[cft.sweep] skip {index} ({method}, seed {seed}): {grid.run_dir(method, seed, eval=True)} is done")
        return 0
    for args in cmds:
        line = shlex.join(["python", "-m", "cft", *args])
        if dry_run:
            print(line)
            continue
        print(f"[cft.sweep] {index} ({method}, seed {seed}): {line}", flush=True)
        rc = subprocess.call([sys.executable, "-m", "cft", *args])
        if rc != 0:
            print(f"[cft.sweep] {index} ({method}, seed {seed}) failed with exit status {rc}: {line}", flush=True)
            return rc
    return 0


def submit_point(
    grid: Grid,
    index: int,
    fit_extra: Sequence[str],
    eval_extra: Sequence[str],
    sbatch: Sequence[str],
    eval_sbatch: Sequence[str],
    dry_run: bool,
) -> int:
    """Submit grid point `index` as SLURM jobs of slurm/fit.sbatch: the training run as one multi-GPU job (its
    `sbatch` options give nodes x GPUs) and, if the grid evaluates, the test run as a job that waits for it."""
    method, seed = grid.point(index)
    if grid.eval is not None and (grid.run_dir(method, seed, eval=True) / "metrics.json").is_file():
        print(f"[cft.sweep] skip {index} ({method}, seed {seed}): {grid.run_dir(method, seed, eval=True)} is done")
        return 0
    name = f"cft-{grid.experiment}-{grid.run_name(method, seed)}"
    job_id = "$FIT_JOB_ID"
    for k, args in enumerate(grid.commands(index, fit_extra, eval_extra)):
        opts = ["--parsable", f"--job-name={name}"] + (
            list(sbatch) if k == 0 else [f"--dependency=afterok:{job_id}", *eval_sbatch]
        )
        cmd = ["sbatch", *opts, "slurm/fit.sbatch", *args]
        if dry_run:
            print(shlex.join(cmd))
            continue
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            print(f"[cft.sweep] sbatch failed for {index} ({method}, seed {seed}): {out.stderr.strip()}", flush=True)
            return out.returncode
        job_id = out.stdout.strip().split(";")[0]
        print(f"[cft.sweep] {index} ({method}, seed {seed}) {args[0]}: job {job_id}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cft.sweep", description=__doc__.split("\n\n")[0])
    p.add_argument("--grid", required=True, help="grid YAML (e.g. configs/experiments/tiny_study.yaml)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--index", type=int, help="grid point to run (default: $SLURM_ARRAY_TASK_ID)")
    which.add_argument("--all", action="store_true", help="run every grid point, one after another")
    which.add_argument("--count", action="store_true", help="print the number of grid points and exit")
    p.add_argument("--dry-run", action="store_true", help="print the commands instead of running them")
    p.add_argument(
        "--fit-extra",
        default="",
        help="extra arguments for every fit command, one string: --fit-extra='--trainer.max_steps 5'",
    )
    p.add_argument(
        "--eval-extra", default="", help="extra arguments for every test command, one string (like --fit-extra)"
    )
    p.add_argument(
        "--submit",
        action="store_true",
        help="submit each grid point as SLURM jobs of slurm/fit.sbatch (training multi-GPU, evaluation after it) "
        "instead of running it here; default: every point",
    )
    p.add_argument(
        "--sbatch",
        default="--nodes=1 --gpus-per-node=8 --ntasks-per-node=8",
        help="sbatch options of each training job, one string (with --submit)",
    )
    p.add_argument(
        "--eval-sbatch",
        default="--nodes=1 --gpus-per-node=1 --ntasks-per-node=1",
        help="sbatch options of each evaluation job, one string (with --submit)",
    )
    args = p.parse_args(argv)
    try:
        grid = Grid.load(args.grid)
        if args.count:
            print(len(grid))
            return 0
        if args.all or (args.submit and args.index is None):
            indices = list(range(len(grid)))
        elif args.index is not None:
            indices = [args.index]
        elif os.environ.get("SLURM_ARRAY_TASK_ID"):
            indices = [int(os.environ["SLURM_ARRAY_TASK_ID"])]
        else:
            raise SweepError("give --index I or --all (or run inside a SLURM array, which sets SLURM_ARRAY_TASK_ID)")
        for i in indices:
            grid.point(i)  # every index is checked before anything runs
    except CFTError as e:
        print(error_line(e), file=sys.stderr)
        return 2
    signal.signal(signal.SIGUSR1, _on_usr1)
    fit_extra, eval_extra = shlex.split(args.fit_extra), shlex.split(args.eval_extra)
    if args.submit:
        sb, eval_sb = shlex.split(args.sbatch), shlex.split(args.eval_sbatch)
        failed = [i for i in indices if submit_point(grid, i, fit_extra, eval_extra, sb, eval_sb, args.dry_run) != 0]
    else:
        failed = [i for i in indices if run_point(grid, i, fit_extra, eval_extra, args.dry_run) != 0]
    if failed:
        print(f"[cft.sweep] failed grid points: {failed} (rerun them with --index)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
