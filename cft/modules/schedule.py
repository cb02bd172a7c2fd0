"""The learning-rate schedule of every trainable module: linear warm-up from 0, then constant, cosine or linear decay
to a floor, built from transformers' schedulers (the same curves as HF Trainer's `lr_scheduler_type`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from transformers.optimization import (
    get_constant_schedule_with_warmup,
    get_cosine_with_min_lr_schedule_with_warmup,
    get_polynomial_decay_schedule_with_warmup,
)

from cft.errors import ConfigError


@dataclass
class LRSchedule:
    """Learning rate at optimizer step s, as a multiple of the optimizer's lr: s / warmup_steps during warm-up, then
    1 ("constant"), or from 1 down to `min_lr_ratio` at the last step along a half cosine ("cosine") or a line
    ("linear").

    Args:
        warmup_steps: optimizer steps of linear warm-up from 0.
        decay: shape after warm-up: "constant", "cosine" or "linear".
        min_lr_ratio: learning rate at the last step as a fraction of the peak (cosine and linear).
    """

    warmup_steps: int = 0
    decay: Literal["constant", "cosine", "linear"] = "constant"
    min_lr_ratio: float = 0.1

    def __post_init__(self) -> None:
        self.check()

    def check(self, where: str = "model.lr_schedule") -> None:
        """Raise ConfigError naming the field."""
        if self.warmup_steps < 0:
            raise ConfigError(f"{where}.warmup_steps={self.warmup_steps}: expected >= 0")
        if self.decay not in ("constant", "cosine", "linear"):
            raise ConfigError(f"{where}.decay={self.decay!r}: expected 'constant', 'cosine' or 'linear'")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError(f"{where}.min_lr_ratio={self.min_lr_ratio}: expected a fraction in [0, 1]")

    def build(self, optimizer: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
        """The scheduler for `total_steps` optimizer steps (stepped once per optimizer step)."""
        # At least one step after warm-up, so the decay's length is never 0.
        warm, total = self.warmup_steps, max(1, total_steps, self.warmup_steps + 1)
        if self.decay == "constant" or self.min_lr_ratio == 1:
            return get_constant_schedule_with_warmup(optimizer, warm)
        if self.decay == "cosine":
            return get_cosine_with_min_lr_schedule_with_warmup(optimizer, warm, total, min_lr_rate=self.min_lr_ratio)
        # Linear decay to a floor is the power-1 polynomial; its floor is an absolute lr, so one per optimizer lr.
        peak = optimizer.defaults["lr"]
        if any(g["lr"] != peak for g in optimizer.param_groups):
            raise ConfigError("model.lr_schedule.decay='linear' needs one learning rate for all parameter groups")
        return get_polynomial_decay_schedule_with_warmup(
            optimizer, warm, total, lr_end=self.min_lr_ratio * peak, power=1.0
        )
