"""GRPO: group-relative policy optimisation of a causal LM, initialised from any HF checkpoint (the SFT or CFT output).

Each training step is one round: sample G completions for each prompt of the batch, reward them with plain callables
(`cft.modules.rewards`), normalise rewards within each prompt's group, then take `num_iterations` x
`num_mini_batches` optimizer steps on the clipped surrogate (ratio against the sampling policy), optionally with a
k3 KL penalty to a frozen copy of the initial model. `trainer.max_steps` counts optimizer steps.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from typing import Any, Literal

import torch
from lightning.pytorch.cli import OptimizerCallable
from torch.nn.parallel import DistributedDataParallel

from cft.errors import GRPOConfigError
from cft.lm.engines import SamplingParams
from cft.lm.generation import Generation, left_pad
from cft.lm.loading import ModelConfig, load_model
from cft.lm.lora import is_lora
from cft.modules.causal_lm import CausalLMModule, _adamw
from cft.modules.grpo_objective import (
    LossAgg,
    aggregate_loss,
    clipped_surrogate,
    group_advantages,
    token_logps,
)
from cft.modules.grpo_settings import check_grpo_settings, check_round_shape
from cft.modules.grpo_stats import RoundSamples, RoundStats, round_metrics
from cft.modules.rewards import RewardFn, compute_rewards, correctness_reward
from cft.modules.schedule import LRSchedule


class GRPO(CausalLMModule):
    """GRPO learner with manual optimisation: one batch of prompts = one round of sampling and several updates.

    Args:
        model: which checkpoint to start from (e.g. runs/tiny/sft-.../hf/last) and its tokenizer.
        optimizer: optimiser factory.
        reward_funcs: reward callables `fn(completions, answers, **kwargs) -> list[float]` (see cft.modules.rewards).
        reward_weights: weight of each reward function in the summed reward (None: all 1).
        num_generations: completions sampled per prompt (G); advantages are relative to the group, so G >= 2.
        max_new_tokens: completion length limit (a completion that reaches it is "truncated").
        temperature: sampling temperature; the trained log-probabilities use the same temperature.
        top_p: nucleus sampling threshold (1.0 = off; below 1 the sampler is not exactly the trained policy).
        scale_rewards: divide advantages by the reward std of the "group", the "batch", or "none" (Dr. GRPO).
        num_iterations: passes over each batch of generations (mu); above 1 the ratio moves away from 1.
        num_mini_batches: optimizer steps per pass (the round's prompts x G completions are split this many ways).
        micro_batch_size: completions per forward/backward (None: the whole mini-batch); lower it to save memory.
        epsilon_low: lower clip range (ratio >= 1 - epsilon_low for negative advantages).
        epsilon_high: upper clip range (ratio <= 1 + epsilon_high for positive advantages; DAPO raises it).
        beta: weight of the k3 KL to a frozen copy of the initial model (0: no reference model is loaded).
        loss_agg: "token-mean" (every token of the mini-batch alike), "seq-mean-token-sum" (mean of per-sequence
            token sums), "seq-mean-token-sum-norm" (the same / max_new_tokens, Dr. GRPO), "seq-mean-token-mean" (GRPO).
        mask_truncated_completions: give completions that hit max_new_tokens no loss (DAPO's overlong filter).
        max_grad_norm: clip gradients to this global norm (None or 0: no clipping).
        lr_schedule: warm-up and decay of the learning rate, in optimizer steps (None: constant, no warm-up).
        gradient_checkpointing: trade compute for memory on large models.
        generation_batch_size: sequences (prompts x G) per generate call.
        val_max_new_tokens: generation budget of the periodic greedy validation (0: no validation generation).
        engine: inference engine of the sampling (`cft.lm.engines`): "hf" (the live model, batched generate) or
            "continuous" (transformers' continuous batching over the live model). Both use the current weights, so
            nothing is synced after an optimizer step; old log-probs are always recomputed by the trainer's forward
            pass (not taken from the engine), so engine/trainer numerics do not bias the ratio.

    Sample tables (prompts, completions, rewards) are the `cft.callbacks.GRPOSampleTable` callback's job; it reads
    `last_round`, the samples of the round just taken.
    """

    def __init__(
        self,
        model: ModelConfig,
        optimizer: OptimizerCallable = _adamw,
        reward_funcs: list[RewardFn] | None = None,
        reward_weights: list[float] | None = None,
        num_generations: int = 8,
        max_new_tokens: int = 256,
        temperature: float = 1.0,
        top_p: float = 1.0,
        scale_rewards: Literal["group", "batch", "none"] = "group",
        num_iterations: int = 1,
        num_mini_batches: int = 1,
        micro_batch_size: int | None = None,
        epsilon_low: float = 0.2,
        epsilon_high: float = 0.2,
        beta: float = 0.0,
        loss_agg: LossAgg = "token-mean",
        mask_truncated_completions: bool = False,
        max_grad_norm: float | None = 1.0,
        lr_schedule: LRSchedule | None = None,
        gradient_checkpointing: bool = False,
        generation_batch_size: int = 256,
        val_max_new_tokens: int = 256,
        engine: Literal["hf", "continuous"] = "hf",
    ) -> None:
        super().__init__(model, optimizer, lr_schedule, gradient_checkpointing)
        self.automatic_optimization = False
        self.reward_funcs = list(reward_funcs) if reward_funcs else [correctness_reward]
        self.reward_weights = list(reward_weights) if reward_weights is not None else [1.0] * len(self.reward_funcs)
        self.num_generations, self.max_new_tokens = num_generations, max_new_tokens
        self.temperature, self.top_p, self.scale_rewards = temperature, top_p, scale_rewards
        self.num_iterations, self.num_mini_batches = num_iterations, num_mini_batches
        self.micro_batch_size = micro_batch_size
        self.epsilon_low, self.epsilon_high, self.beta = epsilon_low, epsilon_high, beta
        self.loss_agg, self.mask_truncated_completions = loss_agg, mask_truncated_completions
        self.max_grad_norm = max_grad_norm or None
        self.generation_batch_size, self.val_max_new_tokens = generation_batch_size, val_max_new_tokens
        if engine not in ("hf", "continuous"):
            raise GRPOConfigError(f"model.engine={engine!r}: expected 'hf' or 'continuous' (vllm sampling has not run)")
        self.engine = engine
        self.last_round: RoundSamples | None = None
        # The frozen reference lives in a plain list: not a submodule, so no optimizer, checkpoint or DDP sees it.
        self._ref: list[torch.nn.Module] = []
        self.save_hyperparameters(ignore=["optimizer", "reward_funcs"])

    # -- setup --------------------------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        check_grpo_settings(self)
        super().setup(stage)
        if self.uses_deepspeed() and self.max_grad_norm:
            # Lightning forbids trainer.gradient_clip_val with manual optimisation; DeepSpeed clips inside its step.
            self.trainer.strategy.config.setdefault("gradient_clipping", self.max_grad_norm)
        if self.uses_deepspeed() and self.micro_batch_size and self.zero_stage() < 3:
            # Several backward passes per optimizer step: DeepSpeed's own accumulation counts micro-steps against
            # gradient_accumulation_steps (1 under manual optimisation); in unmanaged mode step() is the boundary.
            self.trainer.strategy.config["managed_gradient_accumulation"] = False

    def on_model_loaded(self) -> None:
        self.model.train()
        # Under LoRA the reference is the base with the adapter disabled (no second copy; see _reference_logps).
        if self.beta > 0 and not self._ref and not is_lora(self.model):
            ref = load_model(self.model_config, self.tokenizer).eval()
            ref.requires_grad_(False)
            self._ref.append(ref)

    def training_method(self, datamodule: Any) -> str | None:
        return "grpo"

    def on_fit_start(self) -> None:
        if self._ref:
            self._ref[0].to(self.device)

    def configure_optimizers(self) -> dict[str, Any]:
        cfg = super().configure_optimizers()
        decay = self.lr_schedule.decay
        if decay != "constant" and not (self.trainer.max_epochs == -1 and self.trainer.max_steps > 0):
            raise GRPOConfigError(
                f"model.lr_schedule.decay={decay!r} needs trainer.max_steps with trainer.max_epochs: -1 (the schedule's "
                f"length in optimizer steps; GRPO takes num_iterations x num_mini_batches steps per batch of prompts)"
            )
        # Manual optimisation: the scheduler is stepped by hand after every optimizer step.
        return {"optimizer": cfg["optimizer"], "lr_scheduler": cfg["lr_scheduler"]["scheduler"]}

    @property
    def steps_per_round(self) -> int:
        return self.num_iterations * self.num_mini_batches

    # -- one round ----------------------------------------------------------------------------------------------
    def _sampling_seed(self) -> int:
        """Samples depend only on (run seed, round, rank), so a resumed run draws what the uninterrupted one did."""
        seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
        return hash((seed, self.global_step // self.steps_per_round, self.global_rank)) % 2**63

    def sample(self, prompt_ids: list[list[int]]) -> list[Generation]:
        """G sampled completions per prompt, flattened prompt-major (completion j of prompt i at i*G + j)."""
        params = SamplingParams(
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            n=self.num_generations,
            seed=self._sampling_seed(),
            stop_strings=tuple(self.model_config.stop_strings),
        )
        gens = self.generation_engine(self.generation_batch_size).generate(prompt_ids, params)
        return [g for group in gens for g in group]

    def build_rollout(self, prompt_ids: list[list[int]], gens: list[Generation]) -> dict[str, torch.Tensor]:
        """Left-padded prompts + right-padded completions (with their EOS when finished), as one batch."""
        eos = self.tokenizer.eos_token_id
        # Only a drawn EOS is part of the completion (a stop string's tokens already are).
        comps = [g.token_ids + ([eos] if g.stop_reason == "eos" else []) for g in gens]
        p_ids, p_mask = left_pad(prompt_ids, self.tokenizer.pad_token_id, self.device)
        width = max(len(c) for c in comps)
        c_ids = torch.full((len(comps), width), self.tokenizer.pad_token_id, dtype=torch.long)
        c_mask = torch.zeros((len(comps), width), dtype=torch.long)
        for i, c in enumerate(comps):
            c_ids[i, : len(c)] = torch.as_tensor(c, dtype=torch.long)
            c_mask[i, : len(c)] = 1
        c_ids, c_mask = c_ids.to(self.device), c_mask.to(self.device)
        attn = torch.cat([p_mask, c_mask], dim=1)
        loss_mask = c_mask.float()
        if self.mask_truncated_completions:
            finished = torch.tensor([g.finished for g in gens], device=self.device)
            loss_mask = loss_mask * finished.unsqueeze(-1)
        return {
            "input_ids": torch.cat([p_ids, c_ids], dim=1),
            "attention_mask": attn,
            # Positions count real tokens only, so left padding gives the positions generation used.
            "position_ids": (attn.cumsum(-1) - 1).clamp(min=0),
            "completion_ids": c_ids,
            "completion_mask": c_mask,
            "loss_mask": loss_mask,
        }

    def completion_logps(
        self, model: torch.nn.Module, roll: dict[str, torch.Tensor], idx: torch.Tensor, with_entropy: bool = False
    ) -> tuple[torch.Tensor, Any, int]:
        """(log-probs, entropies, width) of the completion tokens of rows `idx` at the sampling temperature, with
        columns that are padding in every selected row trimmed off."""
        attn = roll["attention_mask"][idx]
        n_prompt = roll["input_ids"].shape[1] - roll["completion_ids"].shape[1]
        used = attn.any(0).nonzero().squeeze(-1)
        lo, width = int(used[0]), max(1, int(used[-1]) + 1 - n_prompt)
        hi = n_prompt + width
        out = model(
            input_ids=roll["input_ids"][idx, lo:hi],
            attention_mask=attn[:, lo:hi],
            position_ids=roll["position_ids"][idx, lo:hi],
            use_cache=False,
            logits_to_keep=width + 1,
        )
        logits = out.logits[:, :-1] / self.temperature
        logp, ent = token_logps(logits, roll["completion_ids"][idx, :width], with_entropy)
        return logp, ent, width

    def _micro_batches(self, rows: torch.Tensor) -> list[torch.Tensor]:
        size = self.micro_batch_size or len(rows)
        return list(rows.split(size))

    def training_step(self, batch: dict[str, list[Any]], batch_idx: int) -> None:
        opt, sched = self.optimizers(), self.lr_schedulers()
        lr = sched.get_last_lr()[0]  # the rate of this round's first update
        G, B = self.num_generations, len(batch["prompt_ids"])
        n = B * G
        check_round_shape(self, B)
        round_ = self.global_step // self.steps_per_round
        prompt_ids = [p for p in batch["prompt_ids"] for _ in range(G)]
        gens = self.sample(batch["prompt_ids"])
        texts = [g.text for g in gens]
        answers = [a for a in batch["answer"] for _ in range(G)]
        total, per_fn = compute_rewards(
            self.reward_funcs,
            self.reward_weights,
            texts,
            answers,
            task=self.task_for(0),
            prompts=[p for p in batch["prompt"] for _ in range(G)],
            finished=[g.finished for g in gens],
            completion_ids=[g.token_ids for g in gens],
        )
        rewards = torch.tensor(total, dtype=torch.float32, device=self.device).view(B, G)
        adv = group_advantages(rewards, self.scale_rewards).flatten()
        roll = self.build_rollout(prompt_ids, gens)
        mask = roll["loss_mask"]
        rows = torch.arange(n, device=self.device)

        # The sampling policy's log-probs; when every update is the first on fresh samples they equal the current
        # ones, so the training forward's detached values serve (ratio exactly 1) and this pass is skipped.
        old = ref = ent = None
        stats = RoundStats(self.device)
        with torch.no_grad():
            if self.steps_per_round > 1:
                old, ent = self._full_logps(self.model, roll, rows, with_entropy=True)
            if self._ref:
                ref, _ = self._full_logps(self._ref[0], roll, rows)
            elif self.beta > 0:  # LoRA: the start model is the base with the adapter disabled
                with self.model.disable_adapter():
                    ref, _ = self._full_logps(self.model, roll, rows)
        if ent is not None:
            stats.add("entropy", (ent * roll["completion_mask"]).sum(), roll["completion_mask"].sum())

        mini = n // self.num_mini_batches
        world = self.trainer.world_size
        for _ in range(self.num_iterations):
            for k in range(self.num_mini_batches):
                mb = rows[k * mini : (k + 1) * mini]
                if self.loss_agg == "token-mean":
                    denom = float(self.trainer.strategy.reduce(mask[mb].sum(), reduce_op="sum").clamp(min=1))
                else:
                    denom = float(mini * world) * (self.max_new_tokens if self.loss_agg.endswith("-norm") else 1)
                micros = self._micro_batches(mb)
                for j, mi in enumerate(micros):
                    with self._accumulation_boundary(j == len(micros) - 1):
                        # DDP and DeepSpeed average gradients over ranks; the denominator already counts every rank.
                        self._update_micro(roll, mi, adv, old, ref, denom / world, stats)
                self.clip_gradients(opt, gradient_clip_val=self.max_grad_norm, gradient_clip_algorithm="norm")
                opt.step()
                opt.zero_grad()
                sched.step()
        self._log_round(rewards, per_fn, gens, stats, lr)
        self.last_round = RoundSamples(round_, list(batch["prompt"]), list(batch["answer"]), gens, rewards, adv)

    def _full_logps(self, model, roll, rows, with_entropy: bool = False) -> tuple[torch.Tensor, Any]:
        """No-grad log-probs (and entropies) of all rows, padded to the full completion width."""
        width = roll["completion_ids"].shape[1]
        logp = torch.zeros(len(rows), width, device=self.device)
        ent = torch.zeros(len(rows), width, device=self.device) if with_entropy else None
        for mi in self._micro_batches(rows):
            lp, e, w = self.completion_logps(model, roll, mi, with_entropy)
            logp[mi, :w] = lp
            if ent is not None:
                ent[mi, :w] = e
        return logp, ent

    def _accumulation_boundary(self, last: bool):
        """Under DDP, reduce gradients over ranks only after the last micro-batch of a mini-batch."""
        wrapped = self.trainer.strategy.model
        if isinstance(wrapped, DistributedDataParallel) and not last:
            return wrapped.no_sync()
        return nullcontext()

    def _update_micro(self, roll, mi, adv, old, ref, denom: float, stats: RoundStats) -> None:
        first_pass = old is None
        logp, ent, w = self.completion_logps(self.model, roll, mi, with_entropy=first_pass)
        mask = roll["loss_mask"][mi, :w]
        old_lp = logp.detach() if first_pass else old[mi, :w]
        terms = clipped_surrogate(
            logp,
            old_lp,
            adv[mi],
            self.epsilon_low,
            self.epsilon_high,
            ref_logp=ref[mi, :w] if ref is not None else None,
            beta=self.beta,
        )
        loss = aggregate_loss(terms["loss"], mask, self.loss_agg, denom)
        self.manual_backward(loss)
        with torch.no_grad():
            n_tok = mask.sum()
            if first_pass:
                cm = roll["completion_mask"][mi, :w]
                stats.add("entropy", (ent * cm).sum(), cm.sum())
            stats.add("loss", (terms["loss"] * mask).sum(), n_tok)
            stats.add("clip_low", (terms["low"] * mask).sum(), n_tok)
            stats.add("clip_high", (terms["high"] * mask).sum(), n_tok)
            stats.add("ratio", (terms["ratio"] * mask).sum(), n_tok)
            if "kl" in terms:
                stats.add("kl", (terms["kl"] * mask).sum(), n_tok)

    # -- metrics ------------------------------------------------------------------------------------------------
    def _log_round(self, rewards, per_fn, gens, stats: RoundStats, lr: float) -> None:
        metrics = round_metrics(stats, rewards, per_fn, gens, self.trainer.strategy, lr)
        bs = len(gens)
        self.log(
            "rl/reward_mean", metrics.pop("rl/reward_mean"), prog_bar=True, on_step=True, on_epoch=False, batch_size=bs
        )
        self.log_dict(metrics, on_step=True, on_epoch=False, batch_size=bs)

    # -- periodic greedy evaluation -----------------------------------------------------------------------------
    def validation_step(self, batch: dict[str, list[Any]], batch_idx: int) -> None:
        if self.val_max_new_tokens <= 0:
            return
        flat, grades = self.greedy_graded(
            batch["prompt_ids"],
            batch["answer"],
            self.val_max_new_tokens,
            self.generation_batch_size,
            return_entropy=True,
        )
        correct = torch.tensor(grades)
        ents = [g.mean_entropy for g in flat if g.mean_entropy is not None]
        bs = len(flat)
        self.log("val/acc", correct.mean().to(self.device), batch_size=bs, sync_dist=True, prog_bar=True)
        self.log(
            "val/entropy",
            torch.tensor(sum(ents) / max(1, len(ents)), device=self.device),
            batch_size=bs,
            sync_dist=True,
        )
        mean_len = sum(len(g.token_ids) for g in flat) / bs
        self.log("val/mean_length", torch.tensor(mean_len, device=self.device), batch_size=bs, sync_dist=True)
