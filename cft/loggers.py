"""A CSV logger that appends across resumes (Lightning's deletes metrics.csv when the run dir is reused)."""

from __future__ import annotations

import csv
import os

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter


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
