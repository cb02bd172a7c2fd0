"""Entropy of next-token distributions, computed in one place (the chunked loss and entropy of training are in
`cft.lm.chunked`, which uses it)."""

from __future__ import annotations

import torch

__all__ = ["entropy_from_logprobs", "token_entropy"]


def entropy_from_logprobs(logp: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of distributions given as log-probabilities along the last dim.

    Tokens masked to -inf (top-p, bad-word filters) contribute 0: exp(-inf) * -inf would be nan, so log-probs are
    clamped to the dtype's lowest finite value first.
    """
    return -(logp.exp() * logp.clamp_min(torch.finfo(logp.dtype).min)).sum(-1)


def token_entropy(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Entropy (nats) of softmax(logits / temperature) along the last dim, computed in float32."""
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    return entropy_from_logprobs(torch.log_softmax(logits, dim=-1))
