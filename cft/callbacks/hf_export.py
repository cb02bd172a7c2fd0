"""Export the best (by a monitored metric) and the last weights as plain HF dirs: `<run>/hf/best`, `<run>/hf/last`."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import lightning as L

from cft.errors import ConfigError


class HFExport(L.Callback):
    """Writes `save_pretrained` dirs (model + tokenizer) loadable by transformers and vLLM.

    Args:
        monitor: validation metric that defines "best" (None: only the last export).
        mode: "max" or "min" for `monitor`.
        dirname: folder under the run directory.
    """

    def __init__(self, monitor: str | None = "val/acc", mode: str = "max", dirname: str = "hf") -> None:
        if mode not in ("max", "min"):
            raise ConfigError(f"HFExport.mode must be 'max' or 'min', got {mode!r}")
        self.monitor, self.mode, self.dirname = monitor, mode, dirname
        self.best: float | None = None

    def _root(self, trainer: L.Trainer) -> Path:
        return Path(trainer.default_root_dir) / self.dirname

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # A run killed while exporting leaves its staging dir (`.best.tmp-<pid>`, or `.best.<random>` from older
        # versions) or the previous export (`best.old`); a resumed run starts by removing them.
        root = self._root(trainer)
        if stage != "fit" or not trainer.is_global_zero or not root.is_dir():
            return
        for name in ("best", "last"):
            for stale in [*root.glob(f".{name}.*"), root / f"{name}.old"]:
                if stale.is_dir():
                    shutil.rmtree(stale, ignore_errors=True)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.monitor is None or trainer.state.fn != "fit":
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return
        value = float(value)
        better = self.best is None or (value > self.best if self.mode == "max" else value < self.best)
        if better and not math.isnan(value):
            self.best = value
            pl_module.save_hf(self._root(trainer) / "best")
            if trainer.is_global_zero:
                meta = {
                    "monitor": self.monitor,
                    "value": value,
                    "step": trainer.global_step,
                    "epoch": trainer.current_epoch,
                }
                (self._root(trainer) / "best" / "cft_export.json").write_text(json.dumps(meta, indent=2))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pl_module.save_hf(self._root(trainer) / "last")
        if trainer.is_global_zero:
            meta = {"step": trainer.global_step, "epoch": trainer.current_epoch}
            (self._root(trainer) / "last" / "cft_export.json").write_text(json.dumps(meta, indent=2))

    def state_dict(self) -> dict:
        return {"best": self.best}

    def load_state_dict(self, state: dict) -> None:
        self.best = state.get("best")
