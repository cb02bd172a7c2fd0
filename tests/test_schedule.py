"""The learning-rate schedule: values at chosen steps against hand computation, wired through the real entry point,
and bad settings as one clear error."""

from __future__ import annotations

import csv

import pytest
import torch

from cft.cli import main
from cft.errors import ConfigError
from cft.modules.schedule import LRSchedule
from tests.helpers import fast_fit_args


def _lrs(schedule: LRSchedule, total: int, peak: float = 1.0) -> list[float]:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=peak)
    sched = schedule.build(opt, total)
    out = []
    for _ in range(total + 1):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


# Warm-up of 2 steps over 10: step 0 -> 0, step 1 -> 1/2, step 2 -> the peak; then progress p = (s - 2) / 8.
@pytest.mark.parametrize(
    "decay, expected",
    [
        # constant: the peak after warm-up
        ("constant", {0: 0.0, 1: 0.5, 2: 1.0, 6: 1.0, 10: 1.0}),
        # cosine: 0.1 + 0.9 * (1 + cos(pi p)) / 2; p = 1/4 at s = 4: 0.1 + 0.45 * (1 + 0.70710678) = 0.86819805
        ("cosine", {0: 0.0, 1: 0.5, 2: 1.0, 4: 0.86819805, 6: 0.55, 10: 0.1}),
        # linear: 1 - 0.9 p; p = 1/4 at s = 4: 0.775
        ("linear", {0: 0.0, 1: 0.5, 2: 1.0, 4: 0.775, 6: 0.55, 10: 0.1}),
    ],
)
def test_schedule_values_match_hand_computation(decay, expected):
    lrs = _lrs(LRSchedule(warmup_steps=2, decay=decay, min_lr_ratio=0.1), total=10, peak=2e-3)
    for step, factor in expected.items():
        assert lrs[step] == pytest.approx(2e-3 * factor, rel=1e-6), (decay, step, lrs)


def test_no_warmup_starts_at_the_peak_and_min_ratio_one_is_constant():
    assert _lrs(LRSchedule(decay="cosine", min_lr_ratio=0.0), total=4)[:3] == pytest.approx([1.0, 0.8535534, 0.5])
    assert _lrs(LRSchedule(warmup_steps=1, decay="linear", min_lr_ratio=1.0), total=3) == [0.0, 1.0, 1.0, 1.0]


def test_schedule_is_what_the_learner_trains_with(tiny_model_dir, tmp_path):
    """4 optimizer steps of SFT with a 2-step warm-up and cosine decay to 0.1: the lr Lightning logs before each step."""
    args = fast_fit_args(tiny_model_dir, tmp_path, steps=4) + [
        "--model.init_args.optimizer.lr", "0.001",
        "--model.init_args.lr_schedule.warmup_steps", "2",
        "--model.init_args.lr_schedule.decay", "cosine",
        "--model.init_args.lr_schedule.min_lr_ratio", "0.1",
        "--model.init_args.val_max_new_tokens", "0",
        "--trainer.callbacks+=LearningRateMonitor",
        "--trainer.callbacks.logging_interval", "step",
    ]  # fmt: skip
    main(args)
    with open(tmp_path / "exp/t/metrics.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("lr-AdamW")]
    got = {int(r["step"]): float(r["lr-AdamW"]) for r in rows}
    # steps 0, 1: warm-up 0, 1/2; step 2: the peak; step 3: p = 1/2, 0.1 + 0.9 / 2 = 0.55
    assert got == pytest.approx({0: 0.0, 1: 0.0005, 2: 0.001, 3: 0.00055})


def test_bad_schedule_is_one_clear_error(tiny_model_dir, tmp_path, capsys):
    args = fast_fit_args(tiny_model_dir, tmp_path, steps=1) + ["--model.init_args.lr_schedule.min_lr_ratio", "2"]
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: model.lr_schedule.min_lr_ratio=2.0: expected a fraction in [0, 1]"
    assert not (tmp_path / "exp").exists(), "rejected while parsing: no run dir is created"
    with pytest.raises(ConfigError, match="warmup_steps=-1"):
        LRSchedule(warmup_steps=-1)
