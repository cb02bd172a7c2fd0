"""GRPO's per-round metrics: named (sum, count) pairs reduced over ranks, and the `rl/*` names they are logged as."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from cft.lm.generation import Generation


class RoundStats:
    """Named (sum, count) pairs, reduced over ranks in one collective so every rank logs the same means."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.sums: dict[str, list[torch.Tensor]] = {}

    def add(self, name: str, total: torch.Tensor, count: Any) -> None:
        s, c = self.sums.setdefault(name, [torch.zeros((), device=self.device), torch.zeros((), device=self.device)])
        self.sums[name] = [s + total.detach().float(), c + float(count)]

    def reduce(self, strategy) -> dict[str, torch.Tensor]:
        names = sorted(self.sums)
        flat = torch.stack([x for k in names for x in self.sums[k]])
        flat = strategy.reduce(flat, reduce_op="sum")
        return {k: flat[2 * i] / flat[2 * i + 1].clamp(min=1e-8) for i, k in enumerate(names)}


def round_metrics(
    stats: RoundStats,
    rewards: torch.Tensor,
    per_fn: dict[str, list[float]],
    gens: list[Generation],
    strategy,
    lr: float,
) -> dict[str, torch.Tensor]:
    """The round's `rl/*` metrics (means over every rank): rewards (B, G), per-function rewards, completion lengths,
    and whatever the updates added to `stats` (loss, entropy, clip fractions, ratio, kl)."""
    device = rewards.device
    std = rewards.std(dim=1) if rewards.shape[1] > 1 else torch.zeros(rewards.shape[0], device=device)
    lengths = torch.tensor([len(g.token_ids) for g in gens], dtype=torch.float32, device=device)
    truncated = torch.tensor([not g.finished for g in gens], dtype=torch.float32, device=device)
    stats.add("reward", rewards.sum(), rewards.numel())
    stats.add("reward_std", std.sum(), len(std))
    stats.add("zero_std", (std < 1e-6).float().sum(), len(std))
    stats.add("length", lengths.sum(), len(lengths))
    stats.add("truncated", truncated.sum(), len(lengths))
    for name, values in per_fn.items():
        stats.add(f"rewards/{name}", torch.tensor(sum(values), device=device), len(values))
    means = stats.reduce(strategy)
    extremes = strategy.reduce(torch.stack([-lengths.min(), lengths.max()]), reduce_op="max")
    metrics = {
        "rl/reward_mean": means.pop("reward"),
        "rl/reward_std": means.pop("reward_std"),
        "rl/frac_reward_zero_std": means.pop("zero_std"),
        "rl/entropy": means.pop("entropy"),
        "rl/clip_ratio/low": means["clip_low"],
        "rl/clip_ratio/high": means["clip_high"],
        "rl/clip_ratio": means.pop("clip_low") + means.pop("clip_high"),
        "rl/completions/mean_length": means.pop("length"),
        "rl/completions/min_length": -extremes[0],
        "rl/completions/max_length": extremes[1],
        "rl/completions/frac_truncated": means.pop("truncated"),
        "rl/lr": torch.tensor(lr),
    }
    metrics.update({f"rl/{k}": v for k, v in means.items()})
    return metrics


@dataclass
class RoundSamples:
    """What one GRPO round sampled and how it was scored (read by `cft.callbacks.GRPOSampleTable`).

    Completion j of prompt i is `gens[i * G + j]`, its reward `rewards[i, j]` and its advantage `advantages[i * G + j]`.
    """

    round: int
    prompts: list[str]
    answers: list[str]
    gens: list[Generation]
    rewards: torch.Tensor
    advantages: torch.Tensor
