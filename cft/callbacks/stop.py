"""Checkpoint at the stop point when a run is told to stop (SIGTERM: a preempted or cancelled job, `kill`)."""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
from lightning.pytorch.utilities.exceptions import SIGTERMException


class StopCheckpoint(L.Callback):
    """On SIGTERM, Lightning finishes the current optimisation step and raises `SIGTERMException` (a SystemExit
    with status 0, so the job looked successful and the last periodic checkpoint could be far behind). This writes
    `<dirpath>/last.ckpt` at the stop point, which the next start of the same command resumes from; `python -m cft`
    then exits with 143 (128 + SIGTERM).

    Args:
        dirpath: checkpoint directory (the run's `checkpoints/`).
    """

    def __init__(self, dirpath: str | Path) -> None:
        self.dirpath = Path(dirpath)
        self.saved: Path | None = None

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException) or trainer.state.fn != "fit" or trainer.sanity_checking:
            return
        path = self.dirpath / "last.ckpt"
        trainer.save_checkpoint(path)  # every rank: sharded strategies write their part
        self.saved = path
        if trainer.is_global_zero:
            print(f"[cft] SIGTERM: wrote {path} at step {trainer.global_step}", file=sys.stderr, flush=True)
