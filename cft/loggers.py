"""A CSV logger that appends across resumes (Lightning's deletes metrics.csv when the run dir is reused)."""

from __future__ import annotations

import csv
import os
from typing import Any

import lightning as L
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from cft.io import atomic_path


class _AppendingWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:
        # Keep earlier rows: a requeued run continues the same metrics.csv; readers keep the last row per step.
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as f:
                header = next(csv.reader(f), [])
            self.metrics_keys = sorted(set(header))


class RunCSVLogger(CSVLogger):
    """`<run dir>/metrics.csv`, one row per logging step, appended to on resume."""

    @property
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            os.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment

    def trim_after(self, step: int) -> None:
        """Remove the rows of metrics.csv whose step is above `step` (written atomically)."""
        writer = self.experiment
        writer.save()  # flush buffered rows first, so the file holds everything logged so far
        path = writer.metrics_file_path
        if not os.path.isfile(path):
            return
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            fields, rows = reader.fieldnames or [], list(reader)
        kept = [r for r in rows if not r.get("step") or float(r["step"]) <= step]
        if len(kept) == len(rows):
            return
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
            out = csv.DictWriter(f, fieldnames=fields)
            out.writeheader()
            out.writerows(kept)


class TrimMetricsOnResume(L.Callback):
    """On resume, drops the metrics.csv rows logged after the checkpoint: the resumed run logs those steps again, so
    without this a requeued run would have each of them twice.

    A checkpoint stores the loop's logging step (`_batches_that_stepped`) as it was when saved: every row up to that
    step was written before the save or belongs to a step the resumed run does not redo."""

    def __init__(self) -> None:
        self._step: int | None = None

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        loop = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_loop.state_dict", {})
        step = loop.get("_batches_that_stepped")
        self._step = int(step) if step is not None else None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._step is None or not trainer.is_global_zero:
            return
        for logger in trainer.loggers:
            if isinstance(logger, RunCSVLogger):
                logger.trim_after(self._step)
        self._step = None


def run_fields(cfg: Any, subcommand: str, job_type: str | None, tags: list[str]) -> dict[str, Any]:
    """The fields W&B groups runs by, as top-level config keys: method and seed (from `key=value` tags, else the
    config), stage (a `stage=` tag, else the job type or subcommand) and the model's name or path."""
    tagged = dict(t.split("=", 1) for t in tags if "=" in t)
    init = (cfg.get("model") or {}).get("init_args") or {}
    model = init.get("model")
    name = getattr(model, "name_or_path", None) or (model.get("name_or_path") if isinstance(model, dict) else None)
    return {
        "method": tagged.get("method"),
        "seed": int(tagged["seed"]) if tagged.get("seed", "").lstrip("-").isdigit() else cfg.get("seed_everything"),
        "stage": tagged.get("stage") or job_type or subcommand,
        "model_name": name,
    }


class RunWandbLogger(WandbLogger):
    """WandbLogger that keeps the resolved config it was given: the LightningModule's hyperparameters (which
    Lightning logs after the start and which would replace the config's `model` entry, class path and all) go under
    `hparams` instead; best `val/acc` and lowest `val/loss` are summary metrics (`define_metric`)."""

    SUMMARIES = {"val/acc": "max", "val/loss": "min", "eval/avg/acc": "max"}

    @property
    def experiment(self):
        exp = super().experiment
        if not getattr(self, "_cft_metrics_defined", False) and hasattr(exp, "define_metric"):
            for name, summary in self.SUMMARIES.items():
                exp.define_metric(name, summary=summary)
            self._cft_metrics_defined = True
        return exp

    def log_hyperparams(self, params: Any) -> None:
        super().log_hyperparams({"hparams": params})
