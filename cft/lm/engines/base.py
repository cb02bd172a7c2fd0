"""The one interface every inference engine offers to the scorer, the evaluator and GRPO.

Three requests cover every generation the method makes:
  generate      n completions per prompt, greedy (temperature 0) or sampled, with entropy/log-probs accumulated
                on the fly (the evaluator, GRPO sampling, the scorer's own responses);
  alternatives  the ranked next-token alternatives and the entropy at every position of given responses (the
                scorer's rank-2/rank-3 tokens);
  rollouts      continuations of prompt + y<t + a for (example, position t, token a) jobs (the scorer's rollouts).
Stop token ids, stop strings, the stop rule, seeds and length limits mean the same in every engine (`SamplingParams`,
`cft.lm.stopping`); the exact HF engine (`hf`) is the reference the others are tested against.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from cft.errors import ConfigError
from cft.lm.generation import Generation
from cft.lm.stopping import StopRule

__all__ = ["InferenceEngine", "RolloutJob", "SamplingParams", "rollout_requests"]


@dataclass(frozen=True)
class SamplingParams:
    """What to generate.

    Args:
        max_new_tokens: tokens generated per completion, at most (a rollout counts from after its alternative).
        temperature: 0 for greedy decoding (argmax, lower id on ties), else the sampling temperature.
        top_p: nucleus threshold of sampling (1.0 = off).
        n: completions per prompt (n > 1 needs temperature > 0).
        seed: seed of sampling; the same seed, prompts and batch size give the same samples (None: global RNG).
        stop_strings: texts that end a completion (kept in it); searched in the generated text only.
        stop_token_ids: ids that end a completion like EOS (added to the model's EOS ids).
        stop_rule: ends a completion once context + generated text holds a complete answer (kept).
        return_entropy: fill `Generation.mean_entropy` (entropy of softmax(logits / T), EOS step included).
        return_logprobs: fill `Generation.logprobs` (log-prob of each generated token under softmax(logits / T)).
    """

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    n: int = 1
    seed: int | None = None
    stop_strings: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    stop_rule: StopRule | None = None
    return_entropy: bool = False
    return_logprobs: bool = False

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens={self.max_new_tokens}: expected >= 1")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ConfigError(f"temperature={self.temperature}, top_p={self.top_p}: expected T >= 0, 0 < top_p <= 1")
        if self.n < 1 or (self.n > 1 and self.temperature == 0):
            raise ConfigError(f"n={self.n}: expected >= 1, and n > 1 needs temperature > 0 (greedy repeats itself)")
        object.__setattr__(self, "stop_strings", tuple(s for s in self.stop_strings if s))
        object.__setattr__(self, "stop_token_ids", tuple(self.stop_token_ids))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass(frozen=True)
class RolloutJob:
    """Continue prompt + response[:position] + [token] of example `example`."""

    example: int
    position: int
    token: int


@runtime_checkable
class InferenceEngine(Protocol):
    """What the scorer, the evaluator and GRPO ask of an engine (see the module docstring)."""

    name: str

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        params: SamplingParams,
        contexts: Sequence[Sequence[int]] | None = None,
    ) -> list[list[Generation]]:
        """`params.n` completions per prompt, in prompt order. `contexts[i]` is the text the stop rule reads before
        prompt i's completion (default: none)."""
        ...

    def alternatives(
        self, prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], ranks: Sequence[int]
    ) -> tuple[list[list[list[int]]], list[list[float]]]:
        """Per example and response position: the tokens at `ranks` of the next-token ranking given prompt + y<t,
        where y_t counts as rank 1 (`rank_alternatives`), and the entropy of that distribution."""
        ...

    def rollouts(
        self,
        prompts: Sequence[Sequence[int]],
        responses: Sequence[Sequence[int]],
        jobs: Sequence[RolloutJob],
        params: SamplingParams,
        on_chunk: Callable[[int, int], None] | None = None,
    ) -> list[Generation]:
        """One continuation per job (its tokens start after the job's token); the stop rule reads
        response[:position] + [token] + continuation. `on_chunk(rollouts, tokens)` reports progress."""
        ...


def rollout_requests(
    prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], jobs: Sequence[RolloutJob]
) -> tuple[list[list[int]], list[list[int]]]:
    """Rollout jobs as plain generation requests: (prompt + y<t + a, and y<t + a as the stop rule's context). An
    engine with prefix caching shares the common prefixes of these requests instead of recomputing them."""
    inputs, contexts = [], []
    for job in jobs:
        text = list(responses[job.example][: job.position]) + [job.token]
        inputs.append(list(prompts[job.example]) + text)
        contexts.append(text)
    return inputs, contexts


def rollouts_by_generate(
    engine: InferenceEngine,
    prompts: Sequence[Sequence[int]],
    responses: Sequence[Sequence[int]],
    jobs: Sequence[RolloutJob],
    params: SamplingParams,
    on_chunk: Callable[[int, int], None] | None = None,
) -> list[Generation]:
    """`InferenceEngine.rollouts` for an engine that shares prefixes itself: every job as one `generate` request."""
    inputs, contexts = rollout_requests(prompts, responses, jobs)
    out = [g[0] for g in engine.generate(inputs, params, contexts)]
    if on_chunk is not None:
        on_chunk(len(out), sum(len(g.token_ids) for g in out))
    return out
