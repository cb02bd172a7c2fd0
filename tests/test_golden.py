"""Golden loss curve (torchtune-style): 20 SFT steps of the tiny test model on the arithmetic world, against values
recorded on CPU (torch 2.13, transformers 5.24; the same at 1 and 2 threads). It fails on any silent change in data
order, prompt template, tokenization, loss normalisation, LR schedule or initialisation. After an intended change,
rerun it and copy the curve the failure message prints into GOLDEN (and say why in the commit)."""

from __future__ import annotations

import csv

import pytest

from cft.cli import main
from tests.helpers import fast_fit_args

# 32 rows in micro-batches of 4: 8 steps per epoch, so the 20 steps cross two epoch boundaries (reshuffles).
GOLDEN = [
    5.916783809661865, 6.01539945602417, 5.8651123046875, 5.7189860343933105, 5.587081432342529,
    5.525197982788086, 5.3993072509765625, 5.321910381317139, 5.276758670806885, 5.155955791473389,
    5.093667030334473, 5.038237571716309, 4.95212459564209, 4.923645496368408, 4.891381740570068,
    4.876064300537109, 4.845564365386963, 4.842004299163818, 4.80141019821167, 4.810795307159424,
]  # fmt: skip


def test_twenty_step_sft_loss_curve_matches_the_recorded_one(tiny_model_dir, tmp_path):
    args = fast_fit_args(tiny_model_dir, tmp_path, name="golden", steps=20) + [
        "--model.init_args.val_max_new_tokens", "0",
        # pinned here, so that tuning configs/tiny/sft.yaml does not move the curve
        "--model.init_args.optimizer.lr", "0.001",
        "--model.init_args.lr_schedule.warmup_steps", "2",
        "--model.init_args.lr_schedule.decay", "cosine",
    ]  # fmt: skip
    main(args)
    with open(tmp_path / "exp/golden/metrics.csv", newline="") as f:
        curve = [float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")]
    assert curve == pytest.approx(GOLDEN, rel=1e-5), f"new curve: {curve}"
