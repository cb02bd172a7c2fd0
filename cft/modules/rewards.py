"""Reward functions for GRPO: plain callables `fn(completions, answers, **kwargs) -> list[float]`, as in TRL.

Keyword arguments passed to every function: `task` (grades and extracts answers), `prompts` (the prompt texts),
`finished` (False where a completion hit the length limit), `completion_ids` (token ids, EOS stripped).
Functions must accept `**kwargs` so new fields never break them. In YAML a function is its import path
(`cft.modules.rewards.correctness_reward`) or, for a callable class, `class_path` + `init_args`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any

from cft.errors import RewardError

RewardFn = Callable[..., list[float]]
"""`fn(completions: list[str], answers: list[str], **kwargs) -> list[float]`, one reward per completion."""

# A final answer stated explicitly (not only the grader's last-number fallback): `#### n`, `\boxed{..}`,
# or "the answer is ...".
_EXPLICIT_ANSWER_RE = re.compile(r"####[ \t]*\S|\\boxed\{\s*[^\s}]|the\s+(?:final\s+)?answer\s+is\s*:?\s*\S", re.I)


def correctness_reward(completions: list[str], answers: list[str], task: Any = None, **kwargs: Any) -> list[float]:
    """1.0 where the task's grader accepts the completion's final answer, else 0.0."""
    if task is None:
        raise ValueError("correctness_reward needs the task (keyword `task`) to grade completions")
    return [float(bool(task.grade(c, a))) for c, a in zip(completions, answers)]


def format_reward(completions: list[str], answers: list[str], **kwargs: Any) -> list[float]:
    """1.0 where the completion states its final answer explicitly (`#### n`, `\\boxed{..}`, "the answer is"),
    and (when `finished` is given) ended by EOS rather than the length limit."""
    finished = kwargs.get("finished") or [True] * len(completions)
    return [float(bool(_EXPLICIT_ANSWER_RE.search(c)) and bool(f)) for c, f in zip(completions, finished)]


def reward_name(fn: RewardFn) -> str:
    """The name metrics and errors use for a reward function: its `__name__`, or its class name."""
    return getattr(fn, "__name__", None) or type(fn).__name__


def compute_rewards(
    funcs: Sequence[RewardFn],
    weights: Sequence[float],
    completions: list[str],
    answers: list[str],
    **kwargs: Any,
) -> tuple[list[float], dict[str, list[float]]]:
    """(weighted sum per completion, each function's raw rewards by name); raises RewardError naming the function."""
    total = [0.0] * len(completions)
    per_fn: dict[str, list[float]] = {}
    for i, (fn, w) in enumerate(zip(funcs, weights)):
        name = reward_name(fn)
        name = f"{name}_{i}" if name in per_fn else name  # the same function twice (e.g. two init_args)
        try:
            values = fn(completions, answers, **kwargs)
        except Exception as e:
            raise RewardError(
                f"reward function {name!r} raised {type(e).__name__}: {e} (on a batch of {len(completions)} "
                f"completions; reward functions take (completions, answers, **kwargs) and return one float each)"
            ) from e
        try:
            values = [float(v) for v in values]
        except (TypeError, ValueError) as e:
            raise RewardError(f"reward function {name!r} must return a list of floats, got {values!r:.200}") from e
        if len(values) != len(completions):
            raise RewardError(
                f"reward function {name!r} returned {len(values)} rewards for {len(completions)} completions"
            )
        bad = [i for i, v in enumerate(values) if not math.isfinite(v)]
        if bad:
            raise RewardError(f"reward function {name!r} returned non-finite rewards at completions {bad[:5]}")
        per_fn[name] = values
        total = [t + w * v for t, v in zip(total, values)]
    return total, per_fn
