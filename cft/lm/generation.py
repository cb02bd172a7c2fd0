"""Batched generation with left padding and the KV cache, optionally returning per-token entropy."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from cft.errors import ConfigError


@dataclass
class Generation:
    """One completion: its tokens (EOS stripped), text, and whether it ended by EOS rather than the length limit."""

    token_ids: list[int]
    text: str
    finished: bool
    mean_entropy: float | None = None


def left_pad(seqs: Sequence[Sequence[int]], pad_id: int, device: torch.device | str = "cpu"):
    """Left-pad token lists into (input_ids, attention_mask) so every prompt ends at the last column."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if len(s):
            ids[i, width - len(s) :] = torch.as_tensor(list(s), dtype=torch.long)
            mask[i, width - len(s) :] = 1
    return ids.to(device), mask.to(device)


@torch.no_grad()
def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt_ids: Sequence[Sequence[int]],
    max_new_tokens: int = 256,
    batch_size: int = 64,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    num_samples: int = 1,
    return_entropy: bool = False,
    synced_gpus: bool = False,
) -> list[list[Generation]]:
    """Generate `num_samples` completions per prompt; returns one list of Generations per prompt, in order.

    Prompts are sorted by length so that batches need little padding; `batch_size` counts sequences
    (prompts x samples).
    """
    if num_samples < 1:
        raise ConfigError(f"num_samples must be >= 1, got {num_samples}")
    if not do_sample and num_samples > 1:
        raise ConfigError("num_samples > 1 needs do_sample=True (greedy samples would all be identical)")
    device = next(model.parameters()).device
    eos_ids = _eos_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id
    order = sorted(range(len(prompt_ids)), key=lambda i: len(prompt_ids[i]))
    per_batch = max(1, batch_size // num_samples)
    out: list[list[Generation] | None] = [None] * len(prompt_ids)
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(order), per_batch):
            idx = order[start : start + per_batch]
            ids, mask = left_pad([prompt_ids[i] for i in idx], pad_id, device)
            kwargs = dict(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=max_new_tokens,
                do_sample=do_sample,
                num_return_sequences=num_samples,
                pad_token_id=pad_id,
                eos_token_id=eos_ids,
                return_dict_in_generate=True,
                output_logits=return_entropy,
                synced_gpus=synced_gpus,
            )
            if do_sample:
                kwargs.update(temperature=temperature, top_p=top_p, top_k=0)
            else:
                # Unset sampling knobs a checkpoint's generation_config may carry, so greedy stays greedy.
                kwargs.update(temperature=None, top_p=None, top_k=None)
            res = model.generate(**kwargs)
            new = res.sequences[:, ids.shape[1] :].tolist()
            ent = _entropies(res.logits, temperature if do_sample else 1.0) if return_entropy else None
            for j, toks in enumerate(new):
                n, finished = _cut_at_eos(toks, eos_ids)
                gen = Generation(
                    token_ids=toks[:n],
                    text=tokenizer.decode(toks[:n], skip_special_tokens=True),
                    finished=finished,
                    mean_entropy=float(ent[j, : n + int(finished)].mean())
                    if ent is not None and n + finished
                    else None,
                )
                p = idx[j // num_samples]
                if out[p] is None:
                    out[p] = []
                out[p].append(gen)
    finally:
        model.train(was_training)
    return out  # type: ignore[return-value]


def _eos_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    ids = {tokenizer.eos_token_id}
    gc_eos = getattr(model.generation_config, "eos_token_id", None)
    if isinstance(gc_eos, int):
        ids.add(gc_eos)
    elif isinstance(gc_eos, list):
        ids.update(gc_eos)
    return sorted(i for i in ids if i is not None)


def _cut_at_eos(toks: list[int], eos_ids: list[int]) -> tuple[int, bool]:
    for k, t in enumerate(toks):
        if t in eos_ids:
            return k, True
    return len(toks), False


def _entropies(logits: tuple[torch.Tensor, ...], temperature: float) -> torch.Tensor:
    """(batch, steps) entropy of the distribution each token was drawn from."""
    stacked = torch.stack(logits, dim=1).float() / max(temperature, 1e-6)
    logp = torch.log_softmax(stacked, dim=-1)
    return -(logp.exp() * logp).sum(-1).cpu()


def token_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of softmax(logits) along the last dim, in nats."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)
