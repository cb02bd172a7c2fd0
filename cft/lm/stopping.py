"""When generation stops: EOS ids, answer-complete stop rules, and why a continuation ended (`stop_reason`).

Every engine reports the same reasons, so masks, metrics and truncation counts do not depend on the backend:
  eos          an EOS id was drawn (not kept in the tokens);
  stop_string  a configured stop string appeared (kept: the tokens end with the one that completes it);
  answer       the stop rule found a complete answer (kept, as with stop strings);
  length       the length limit ended it;
  alt_eos, alt_answer   (rollouts only) the alternative token itself ended it, before any generation.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase, StoppingCriteria

__all__ = [
    "ALT_ANSWER",
    "ALT_EOS",
    "ANSWER",
    "EOS",
    "LENGTH",
    "STOP_RULES",
    "STOP_STRING",
    "BoxedStop",
    "HashesLineStop",
    "StopRule",
    "StopRuleCriteria",
    "eos_token_ids",
    "first_answer_stop",
    "model_stop_strings",
    "tokens_containing",
]

EOS, STOP_STRING, ANSWER, LENGTH, ALT_EOS, ALT_ANSWER = (
    "eos",
    "stop_string",
    "answer",
    "length",
    "alt_eos",
    "alt_answer",
)


class StopRule:
    """When a rollout's final answer is complete, so decoding can stop early. The base rule never fires: rollouts
    run to EOS or the length limit, exactly the paper's definition.

    `triggers` lists the characters whose appearance can complete an answer; engines only decode text and call
    `complete` after a token containing one of them, which keeps the check off the hot path.
    """

    name = "eos"
    triggers = ""

    def complete(self, text: str) -> bool:
        return False


class HashesLineStop(StopRule):
    """`#### <answer>` followed by a newline (GSM8K and the tiny world): text after it cannot change the answer
    unless the model writes a second `####` line or a `\\boxed{}`, which a conservative user avoids with `eos`."""

    name = "hashes_line"
    triggers = "\n"
    _pattern = re.compile(r"####[ \t]*\S[^\n]*\n")

    def complete(self, text: str) -> bool:
        return self._pattern.search(text) is not None


class BoxedStop(StopRule):
    """A closed, non-empty `\\boxed{...}` (the Qwen2.5-Math chain-of-thought format)."""

    name = "boxed"
    triggers = "}"

    def complete(self, text: str) -> bool:
        for m in re.finditer(r"\\boxed\s*\{", text):
            depth = 1
            for j in range(m.end(), len(text)):
                depth += {"{": 1, "}": -1}.get(text[j], 0)
                if depth == 0:
                    if text[m.end() : j].strip():
                        return True
                    break
        return False


STOP_RULES: dict[str, type[StopRule]] = {r.name: r for r in (StopRule, HashesLineStop, BoxedStop)}


def eos_token_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, extra: Sequence[int] = ()) -> list[int]:
    """The tokenizer's EOS, any EOS ids in the model's generation config (e.g. `<|im_end|>` and `<|endoftext|>`),
    and `extra` stop token ids."""
    ids = {tokenizer.eos_token_id, *extra}
    gc_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(gc_eos if isinstance(gc_eos, list) else [gc_eos])
    return sorted(i for i in ids if i is not None)


def model_stop_strings(model: PreTrainedModel, extra: Sequence[str] = ()) -> list[str]:
    """`extra` stop strings plus the model's own (`generation_config.stop_strings`, set from `model.stop_strings`)."""
    own = getattr(getattr(model, "generation_config", None), "stop_strings", None) or []
    own = [own] if isinstance(own, str) else list(own)
    return [s for s in dict.fromkeys([*extra, *own]) if s]


@functools.lru_cache(maxsize=8)
def tokens_containing(tokenizer: PreTrainedTokenizerBase, chars: str) -> tuple[int, ...]:
    """Ids whose decoded text contains any of `chars` (cached: decoding a large vocabulary takes a while)."""
    texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
    return tuple(i for i, t in enumerate(texts) if any(c in t for c in chars))


def first_answer_stop(
    rule: StopRule, tokenizer: PreTrainedTokenizerBase, context: Sequence[int], toks: Sequence[int]
) -> int | None:
    """The number of tokens of `toks` through the first one after which `context + toks` holds a complete answer
    (checked after trigger tokens only; None: never)."""
    if not rule.triggers:
        return None
    triggers = set(tokens_containing(tokenizer, rule.triggers))
    for k, t in enumerate(toks):
        if t in triggers and rule.complete(
            tokenizer.decode(list(context) + list(toks[: k + 1]), skip_special_tokens=True)
        ):
            return k + 1
    return None


class StopRuleCriteria(StoppingCriteria):
    """Ends HF `generate` rows once the stop rule sees a complete answer in `context + generated`.

    Only rows whose newest token is a trigger are decoded. Rows that already ended keep getting padding appended
    and may be flagged again, which HF ignores; the exact cut is made afterwards by `first_answer_stop`.
    """

    def __init__(
        self, rule: StopRule, tokenizer: PreTrainedTokenizerBase, prompt_width: int, contexts: Sequence[Sequence[int]]
    ) -> None:
        self.rule, self.tokenizer, self.prompt_width, self.contexts = rule, tokenizer, prompt_width, contexts
        self.triggers = torch.zeros(len(tokenizer) + 1, dtype=torch.bool)
        self.triggers[list(tokens_containing(tokenizer, rule.triggers))] = True

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        done = torch.zeros(len(input_ids), dtype=torch.bool, device=input_ids.device)
        if input_ids.shape[1] <= self.prompt_width:
            return done
        last = input_ids[:, -1].cpu().clamp_max(len(self.triggers) - 1)
        for row in self.triggers[last].nonzero().squeeze(1).tolist():
            # num_return_sequences repeats each prompt's rows consecutively.
            context = self.contexts[row * len(self.contexts) // len(input_ids)]
            text = self.tokenizer.decode(
                list(context) + input_ids[row, self.prompt_width :].tolist(), skip_special_tokens=True
            )
            done[row] = self.rule.complete(text)
        return done
