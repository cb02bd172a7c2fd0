"""Checks of GRPO's settings, run at setup (jsonargparse would bury an error raised in `__init__`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cft.errors import GRPOConfigError
from cft.modules.grpo_objective import LossAgg
from cft.modules.rewards import reward_name

if TYPE_CHECKING:
    from cft.modules.grpo import GRPO


def check_grpo_settings(m: GRPO) -> None:
    """Raise GRPOConfigError, naming the setting, for settings that cannot work."""
    if m.num_generations < 2:
        raise GRPOConfigError(
            f"model.num_generations={m.num_generations}: GRPO needs at least 2 completions per prompt (advantages "
            "are relative to the prompt's group; with one, every advantage is 0)"
        )
    names = [reward_name(f) for f in m.reward_funcs]
    if len(m.reward_weights) != len(m.reward_funcs):
        raise GRPOConfigError(f"model.reward_weights has {len(m.reward_weights)} entries for reward_funcs {names}")
    for f in m.reward_funcs:
        if not callable(f):
            raise GRPOConfigError(f"model.reward_funcs: {f!r} is not callable")
    micro = m.micro_batch_size
    if min(m.num_iterations, m.num_mini_batches, m.max_new_tokens) < 1 or (micro is not None and micro < 1):
        raise GRPOConfigError(
            f"model.num_iterations={m.num_iterations}, num_mini_batches={m.num_mini_batches}, max_new_tokens="
            f"{m.max_new_tokens} and micro_batch_size={micro} must be >= 1"
        )
    if m.temperature <= 0 or not 0 < m.top_p <= 1:
        raise GRPOConfigError(f"model.temperature={m.temperature} must be > 0 and model.top_p={m.top_p} in (0, 1]")
    if not (0 <= m.epsilon_low < 1 and m.epsilon_high >= 0):
        raise GRPOConfigError(
            f"model.epsilon_low={m.epsilon_low} must be in [0, 1) and epsilon_high={m.epsilon_high} >= 0"
        )
    if m.beta < 0:
        raise GRPOConfigError(f"model.beta={m.beta} must be >= 0")
    if m.loss_agg not in LossAgg.__args__:  # type: ignore[attr-defined]
        raise GRPOConfigError(f"model.loss_agg={m.loss_agg!r}: expected one of {list(LossAgg.__args__)}")  # type: ignore
    if m.scale_rewards not in ("group", "batch", "none"):
        raise GRPOConfigError(f"model.scale_rewards={m.scale_rewards!r}: expected 'group', 'batch' or 'none'")


def check_round_shape(m: GRPO, num_prompts: int) -> None:
    """Settings that depend on the round's size (prompts x G completions)."""
    n = num_prompts * m.num_generations
    if n % m.num_mini_batches:
        raise GRPOConfigError(
            f"model.num_mini_batches={m.num_mini_batches} does not divide the round's {num_prompts} prompts x "
            f"{m.num_generations} generations = {n} completions"
        )
    if m.zero_stage() == 3 and m.micro_batch_size and m.micro_batch_size < n // m.num_mini_batches:
        # Measured with DeepSpeed 0.19.8 on CPU: under ZeRO-3 a second backward before step() leaves the
        # weights unchanged (managed and unmanaged accumulation alike), so a mini-batch is one backward.
        raise GRPOConfigError(
            f"model.micro_batch_size={m.micro_batch_size} splits a mini-batch of {n // m.num_mini_batches} "
            "completions, which ZeRO-3 does not support here; unset it and raise model.num_mini_batches instead"
        )
