"""Tokenisation of (prompt, response) rows and their collation into padded, token-weighted batches."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from transformers import PreTrainedTokenizerBase

from cft.errors import DataError
from cft.lm.generation import left_pad
from cft.tasks.templates import encode_prompt

Overlong = Literal["error", "truncate", "skip"]


def encode_pair(tokenizer: PreTrainedTokenizerBase, prompt: str, response: str, where: str) -> tuple[list, list]:
    """Prompt ids (with the tokenizer's own BOS, if it adds one) and response ids ending in EOS."""
    if not isinstance(prompt, str) or not prompt:
        raise DataError(f"{where}: field 'prompt' is missing or empty")
    if not isinstance(response, str) or not response.strip():
        raise DataError(f"{where}: field 'response' is missing or empty")
    prompt_ids = encode_prompt(tokenizer, prompt)
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return prompt_ids, response_ids


def fit_length(row: dict[str, Any], max_length: int, overlong: Overlong, where: str) -> dict[str, Any] | None:
    """Apply the over-long policy: raise, truncate the response (weights too), or return None to skip."""
    n = len(row["prompt_ids"]) + len(row["response_ids"])
    if n <= max_length:
        return row
    if overlong == "error":
        raise DataError(
            f"{where}: prompt+response is {n} tokens, over max_length={max_length} "
            "(raise data.max_length, or set data.overlong to 'truncate' or 'skip')"
        )
    if overlong == "skip" or len(row["prompt_ids"]) >= max_length:
        return None
    keep = max_length - len(row["prompt_ids"])
    row = dict(row)
    for key in ("response_ids", "weights", "critical", "entropy"):
        if key in row and row[key] is not None:
            row[key] = list(row[key])[:keep]
    return row


def collate_lists(rows: Sequence[dict[str, Any]]) -> dict[str, list[Any]]:
    """Rows to a dict of lists, for batches of prompts: padding is left to generation (left-padded, sorted by length)
    and to the module that builds the training tensors."""
    return {key: [r[key] for r in rows] for key in rows[0]}


def collate_weighted(rows: Sequence[dict[str, Any]], pad_id: int, with_prompts: bool = False) -> dict[str, Any]:
    """Right-padded `input_ids`, `attention_mask`; `weights` and `response_mask` aligned with input_ids.

    weights[b, j] is the weight of predicting input_ids[b, j] (from the logits at j-1), so position 0 is 0.
    With `with_prompts`, also left-padded prompts and gold answers for generation-based validation.
    """
    width = max(len(r["prompt_ids"]) + len(r["response_ids"]) for r in rows)
    b = len(rows)
    ids = torch.full((b, width), pad_id, dtype=torch.long)
    attn = torch.zeros((b, width), dtype=torch.long)
    weights = torch.zeros((b, width), dtype=torch.float32)
    resp = torch.zeros((b, width), dtype=torch.bool)
    for i, r in enumerate(rows):
        p, y = r["prompt_ids"], r["response_ids"]
        n = len(p) + len(y)
        ids[i, :n] = torch.as_tensor(list(p) + list(y))
        attn[i, :n] = 1
        resp[i, len(p) : n] = True
        weights[i, len(p) : n] = torch.as_tensor(r["weights"], dtype=torch.float32)
        if r.get("prompt_weights") is not None:
            weights[i, 1 : len(p)] = torch.as_tensor(r["prompt_weights"][1:], dtype=torch.float32)
    batch: dict[str, Any] = {"input_ids": ids, "attention_mask": attn, "weights": weights, "response_mask": resp}
    if with_prompts:
        batch["prompt_input_ids"], batch["prompt_attention_mask"] = left_pad([r["prompt_ids"] for r in rows], pad_id)
        batch["prompt_ids"] = [list(r["prompt_ids"]) for r in rows]
        batch["answer"] = [r.get("answer", "") for r in rows]
        batch["id"] = [r.get("id", "") for r in rows]
    return batch
