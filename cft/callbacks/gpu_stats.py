"""Wall time, training tokens and peak GPU memory of a stage, written to `<run>/gpu_stats.json` (for `make gpu-check`)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch


class GPUStats(L.Callback):
    """Measures one `fit`, `predict` or `test` run: wall time from its start, training tokens (attention-mask sum of
    the training batches over all ranks), peak memory allocated on rank 0's GPU, and the model's parameter count."""

    def __init__(self) -> None:
        self.t0 = 0.0
        self.tokens = 0

    def _start(self, trainer: L.Trainer) -> None:
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        self.t0, self.tokens = time.perf_counter(), 0

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start(trainer)

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start(trainer)

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start(trainer)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, i: int):
        if isinstance(batch, dict) and "attention_mask" in batch:
            self.tokens += int(batch["attention_mask"].sum()) * trainer.world_size

    def _end(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        wall = time.perf_counter() - self.t0
        peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
        if not trainer.is_global_zero:
            return
        model = getattr(pl_module, "model", None)
        n_params = sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters()) if model is not None else None
        stats = {
            "stage": stage,
            "wall_s": wall,
            "train_tokens": self.tokens,
            "train_tokens_per_s": self.tokens / wall if self.tokens and wall > 0 else None,
            "peak_memory_gib_rank0": peak,
            "n_params": n_params,
            "world_size": trainer.world_size,
            "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        }
        path = Path(trainer.default_root_dir) / "gpu_stats.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(stats, indent=2))

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._end(trainer, pl_module, "fit")

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._end(trainer, pl_module, "predict")

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._end(trainer, pl_module, "test")
