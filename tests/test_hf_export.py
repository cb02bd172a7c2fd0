"""HFExport across a resume: the best export is chosen over the whole run, not restarted by the resumed process."""

from __future__ import annotations

import csv
import json

import pytest

from cft.cli import main
from tests.helpers import SimulatedCrash, fast_fit_args


def test_best_export_is_chosen_across_a_resume(tiny_model_dir, tmp_path):
    # Monitoring val/loss with mode "max" makes the best the earliest validation (the loss falls as training goes),
    # which lies before the crash: a resumed run that forgot the best so far would export a later step instead.
    args = fast_fit_args(tiny_model_dir, tmp_path, name="r", steps=5) + [
        "--trainer.val_check_interval", "1",
        "--model.init_args.val_max_new_tokens", "0",
        "--model.init_args.optimizer.lr", "0.003",
        "--run.checkpoint_every_n_steps", "1",
        "--trainer.callbacks+=cft.callbacks.HFExport",
        "--trainer.callbacks.monitor", "val/loss",
        "--trainer.callbacks.mode", "max",
    ]  # fmt: skip
    crash = ["--trainer.callbacks+=tests.helpers.CrashAtStep", "--trainer.callbacks.step", "3"]
    with pytest.raises(SimulatedCrash):
        main(args + crash)
    run = tmp_path / "exp/r"
    before = json.loads((run / "hf/best/cft_export.json").read_text())
    main(args)
    with open(run / "metrics.csv", newline="") as f:
        val = [(int(r["step"]), float(r["val/loss"])) for r in csv.DictReader(f) if r.get("val/loss")]
    # metrics.csv files a validation under the step of its batch; the export records optimizer steps taken (+1)
    assert {s for s, _ in val} == {0, 1, 2, 3, 4}, val  # validations before and after the crash, each once
    step, loss = max(val, key=lambda sv: sv[1])
    assert step + 1 < 3, f"the test needs its best before the crash: {val}"
    best = json.loads((run / "hf/best/cft_export.json").read_text())
    assert best == before and (best["step"], best["value"]) == (step + 1, pytest.approx(loss))
    assert json.loads((run / "hf/last/cft_export.json").read_text())["step"] == 5
