"""Which checkpoint a requeued run resumes from: the one with the highest global step, not the newest file time.

DeepSpeed writes `last.ckpt/` as a directory and updates the files inside without touching the directory's mtime,
and Lightning's SLURM handler writes `hpc_ckpt_<n>.ckpt` beside it, so file times do not order them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

# Inside a DeepSpeed checkpoint dir Lightning's client state (global_step, loops, callbacks) is stored with rank 0's
# model states under the tag "checkpoint".
_DEEPSPEED_STATES = ("checkpoint/mp_rank_00_model_states.pt", "checkpoint/zero_pp_rank_0_mp_rank_00_model_states.pt")


def checkpoint_step(path: Path) -> int | None:
    """The global step stored in a Lightning checkpoint file or a DeepSpeed checkpoint dir (None: unreadable)."""
    files = [path] if path.is_file() else [path / f for f in _DEEPSPEED_STATES if (path / f).is_file()]
    for f in files:
        try:
            # mmap: only the small metadata is read, not the weights of a multi-GB file.
            ckpt = torch.load(f, map_location="cpu", weights_only=False, mmap=True)
        except Exception:  # noqa: BLE001 - a half-written or foreign file is not a resume candidate
            continue
        if isinstance(ckpt, dict) and "global_step" in ckpt:
            return int(ckpt["global_step"])
    return None


def checkpoint_candidates(run_dir: Path) -> list[Path]:
    """`checkpoints/last.ckpt` and the `hpc_ckpt_*.ckpt` Lightning writes on SLURM's SIGUSR1 (files or dirs)."""
    paths = [run_dir / "checkpoints" / "last.ckpt", *sorted(run_dir.glob("hpc_ckpt_*.ckpt"))]
    return [p for p in paths if p.exists()]


def newest_checkpoint(run_dir: Path, prune: bool = True) -> Path | None:
    """The candidate with the highest stored global step (ties: the later file time); with `prune`, on global rank
    0 only, delete the `hpc_ckpt_*` checkpoints older than it, which would otherwise pile up over requeues."""
    steps = {p: checkpoint_step(p) for p in checkpoint_candidates(run_dir)}
    steps = {p: s for p, s in steps.items() if s is not None}
    if not steps:
        return None
    newest = max(steps, key=lambda p: (steps[p], p.stat().st_mtime))
    if prune and _is_global_rank_zero():
        for p in steps:
            if p != newest and p.name.startswith("hpc_ckpt_"):
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    return newest


def _is_global_rank_zero() -> bool:
    for var in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if var in os.environ:
            return os.environ[var] == "0"
    return True
