"""Loss and entropy over the vocabulary in chunks of positions, so that no full-vocabulary fp32 copy of a batch's
logits exists: each chunk is upcast, used and dropped, and under autograd its fp32 log-softmax is recomputed in the
backward pass (activation checkpointing of the chunk) instead of being kept for every position at once."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from cft.lm.logits import token_entropy

CHUNK_BYTES = 64 * 2**20  # fp32 bytes of one chunk's logits: ~110 positions of a 152k vocabulary


def _chunk_rows(vocab: int, chunk: int | None) -> int:
    return chunk if chunk is not None else max(1, CHUNK_BYTES // (4 * vocab))


def _nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float(), targets, reduction="none")


def chunked_token_nll(logits: torch.Tensor, targets: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
    """Per-position cross-entropy of `logits` (..., vocab) against `targets` (...), in fp32, shape of `targets`;
    `chunk` positions at a time (None: as many as fit CHUNK_BYTES of fp32)."""
    flat, tflat = logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)
    chunk = _chunk_rows(flat.shape[-1], chunk)
    parts = []
    for s in range(0, flat.shape[0], chunk):
        x, t = flat[s : s + chunk], tflat[s : s + chunk]
        parts.append(checkpoint(_nll, x, t, use_reentrant=False) if x.requires_grad else _nll(x, t))
    return torch.cat(parts).view(targets.shape) if parts else flat.new_zeros(targets.shape, dtype=torch.float32)


@torch.no_grad()
def chunked_mean_entropy(logits: torch.Tensor, mask: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
    """Mean predictive entropy (nats) over the positions where `mask` is set."""
    flat = logits.reshape(-1, logits.shape[-1])
    chunk = _chunk_rows(flat.shape[-1], chunk)
    idx = mask.reshape(-1).bool().nonzero().squeeze(1)
    if idx.numel() == 0:
        return torch.zeros((), device=logits.device)
    total = torch.zeros((), device=logits.device, dtype=torch.float32)
    for s in range(0, idx.numel(), chunk):
        total += token_entropy(flat[idx[s : s + chunk]]).sum()
    return total / idx.numel()


def next_token_nll(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(nll, logits) of `model` predicting `input_ids[:, 1:]` from the tokens before: nll (fp32, in chunks) has shape
    (batch, length-1); logits are the model's at positions 0..length-2."""
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
    logits = out.logits[:, :-1]
    return chunked_token_nll(logits, batch["input_ids"][:, 1:]), logits
