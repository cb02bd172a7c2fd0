"""The GRPO objective as pure functions: group-normalised advantages, the clipped surrogate with separate low and
high clip ranges, the k3 KL estimate, and the loss aggregations. Unit-tested against hand computation."""

from __future__ import annotations

from typing import Any, Literal

import torch

from cft.errors import GRPOConfigError
from cft.lm.logits import entropy_from_logprobs

_LOGITS_CHUNK_ELEMENTS = 2**25  # float32 log-softmax over at most 128 MiB of logits at a time
LossAgg = Literal["token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm", "seq-mean-token-mean"]


def group_advantages(rewards: torch.Tensor, scale: str = "group", eps: float = 1e-4) -> torch.Tensor:
    """Advantages of rewards shaped (prompts, G): reward minus its group's mean, divided by the std (unbiased) of
    the "group" or of the whole "batch" plus `eps`, or not at all ("none", Dr. GRPO)."""
    adv = rewards - rewards.mean(dim=1, keepdim=True)
    if scale == "group":
        adv = adv / (rewards.std(dim=1, keepdim=True) + eps)
    elif scale == "batch":
        adv = adv / (rewards.std() + eps)
    elif scale != "none":
        raise GRPOConfigError(f"model.scale_rewards={scale!r}: expected 'group', 'batch' or 'none'")
    return adv


def clipped_surrogate(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    epsilon_low: float,
    epsilon_high: float,
    ref_logp: torch.Tensor | None = None,
    beta: float = 0.0,
) -> dict[str, torch.Tensor]:
    """Per-token loss -min(r A, clip(r, 1-eps_low, 1+eps_high) A) (+ beta * k3 KL to the reference), r = exp(logp -
    old_logp); also the masks of tokens clipped below (r < 1-eps_low, A < 0) and above (r > 1+eps_high, A > 0)."""
    adv = advantages.unsqueeze(-1) if advantages.dim() == 1 else advantages
    ratio = torch.exp(logp - old_logp)
    clipped = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high)
    loss = -torch.min(ratio * adv, clipped * adv)
    out = {"loss": loss, "ratio": ratio, "low": (ratio < 1 - epsilon_low) & (adv < 0)}
    out["high"] = (ratio > 1 + epsilon_high) & (adv > 0)
    if ref_logp is not None:
        d = ref_logp - logp
        out["kl"] = torch.exp(d) - d - 1  # k3: unbiased, always >= 0, zero where the policies agree
        out["loss"] = loss + beta * out["kl"]
    return out


def aggregate_loss(per_token: torch.Tensor, mask: torch.Tensor, mode: str, denominator: float) -> torch.Tensor:
    """Sum a micro-batch's share of the mini-batch loss. `denominator`: the mini-batch's (all ranks) masked token
    count for "token-mean", its number of sequences otherwise (times max_new_tokens for "-norm")."""
    masked = per_token * mask
    if mode == "seq-mean-token-mean":
        return (masked.sum(-1) / mask.sum(-1).clamp(min=1)).sum() / denominator
    return masked.sum() / denominator


def token_logps(logits: torch.Tensor, targets: torch.Tensor, with_entropy: bool) -> tuple[torch.Tensor, Any]:
    """log p(target) per position, and each position's entropy (no grad); in chunks of rows so the float32 copy
    of large-vocabulary logits stays small."""
    rows = max(1, _LOGITS_CHUNK_ELEMENTS // max(1, logits.shape[1] * logits.shape[2]))
    logps, ents = [], []
    for chunk_logits, chunk_targets in zip(logits.split(rows), targets.split(rows)):
        chunk = torch.log_softmax(chunk_logits.float(), dim=-1)
        logps.append(chunk.gather(-1, chunk_targets.unsqueeze(-1)).squeeze(-1))
        if with_entropy:
            with torch.no_grad():
                ents.append(entropy_from_logprobs(chunk))
    return torch.cat(logps), torch.cat(ents) if with_entropy else None
