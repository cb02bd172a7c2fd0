"""The token-weighted learner: next-token cross-entropy with one weight per token.

SFT (weight 1 on every response token), CFT (weight 1 on critical tokens) and the baselines are the same
module; they differ in the DataModule's selector or in the `weighting`. The loss of a micro-batch is
sum(w * nll) divided by the sum of w over the whole optimisation step (all micro-batches, all ranks).

A step whose micro-batches select no token on any rank (that sum is 0) does not step the optimizer or the LR
schedule: AdamW would still move the weights through weight decay and momentum on a zero gradient. `global_step`
still counts it (it counts step batches consumed, which `max_steps`, checkpoints and resume go by), so the schedule
has advanced `global_step - skipped` times. Under DeepSpeed the engine still runs its step (its micro-step counter,
accumulation boundary and gradient buffers move as on any step); only the update inside it is left out.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from lightning.pytorch.cli import OptimizerCallable
from lightning.pytorch.utilities import rank_zero_warn

from cft.lm.chunked import chunked_mean_entropy, next_token_nll
from cft.lm.loading import ModelConfig
from cft.modules.causal_lm import CausalLMModule, _adamw
from cft.modules.schedule import LRSchedule
from cft.modules.weighting import TokenWeighting


class TokenWeightedLearner(CausalLMModule):
    """Weighted next-token cross-entropy; validation reports SFT loss on references and greedy accuracy.

    Args:
        model: which model and tokenizer to load.
        optimizer: optimiser factory.
        weighting: dynamic token weighting on top of the data's weights (None = use the data's weights as is).
        lr_schedule: warm-up and decay of the learning rate, in optimizer steps (None: constant, no warm-up).
        gradient_checkpointing: trade compute for memory on large models.
        val_max_new_tokens: generation budget for validation greedy accuracy (0 disables generation).
        val_generate_batch_size: sequences per generation batch during validation.
    """

    def __init__(
        self,
        model: ModelConfig,
        optimizer: OptimizerCallable = _adamw,
        weighting: TokenWeighting | None = None,
        lr_schedule: LRSchedule | None = None,
        gradient_checkpointing: bool = False,
        val_max_new_tokens: int = 128,
        val_generate_batch_size: int = 64,
    ) -> None:
        super().__init__(model, optimizer, lr_schedule, gradient_checkpointing)
        self.weighting = weighting or TokenWeighting()
        self.val_max_new_tokens, self.val_generate_batch_size = val_max_new_tokens, val_generate_batch_size
        self._t_last: float | None = None
        self._empty_micro_batches = 0
        self._step_total: torch.Tensor | None = None  # the current step's selected weight, summed over ranks
        self._skipped_step = False
        self.save_hyperparameters(ignore=["optimizer", "weighting"])

    def training_method(self, datamodule: Any) -> str | None:
        """ "pretrain" for loss on the whole text, else the weighting's method (dft, rho1), else the selector's."""
        if getattr(datamodule, "loss_on_prompt", False):
            return "pretrain"
        return self.weighting.method or getattr(getattr(datamodule, "selector", None), "method", None)

    def on_model_loaded(self) -> None:
        self.model.train()  # from_pretrained returns eval mode; Lightning toggles train/eval from here on
        self.weighting.setup(self)

    # -- loss ---------------------------------------------------------------------------------------------------
    def token_nll(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """(nll, logits) for predicting input_ids[:, 1:]; nll has shape (batch, length-1)."""
        return next_token_nll(self.model, batch)

    def loss_scale(self) -> float:
        """Undo the averaging done after `training_step`, so the step's gradient is d(sum w*nll / sum w).

        Lightning divides the returned loss by accumulate_grad_batches; DeepSpeed's engine divides by its
        gradient_accumulation_steps again; DDP and DeepSpeed average gradients over ranks.
        """
        accumulate = int(self.trainer.accumulate_grad_batches)
        scale = accumulate * self.trainer.world_size
        if self.uses_deepspeed():
            scale *= accumulate
        return float(scale)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        weights = batch["weights"][:, 1:]
        resp = batch["response_mask"][:, 1:]
        nll, logits = self.token_nll(batch)
        w = self.weighting(weights, nll, batch)
        step_total = batch["step_weight_sum"].to(nll.device, torch.float32)
        step_total = self.trainer.strategy.reduce(step_total, reduce_op="sum")
        # Counted on the device (no sync per step); the same on every rank, since the total is reduced.
        self._empty_micro_batches = self._empty_micro_batches + (step_total == 0).long()
        self._step_total = step_total
        step_total = step_total.clamp_min(1e-8)
        weighted = (w * nll).sum()
        loss = weighted / step_total * self.loss_scale()

        with torch.no_grad():
            n_resp = resp.sum().clamp_min(1)
            ent = _masked_entropy(logits, resp)
            local_w = weights.sum().clamp_min(1e-8)
            now = time.perf_counter()
            n_tok = batch["attention_mask"].sum()
            metrics = {
                "train/loss": weighted.detach() / local_w,
                "train/entropy": ent,
                "train/frac_tokens_selected": (weights > 0).sum() / ((weights > 0) | resp).sum().clamp_min(1),
                "train/nll_all_response": (nll * resp).sum() / n_resp,
            }
            if self._t_last is not None:
                metrics["train/tokens_per_s"] = n_tok.float() / max(now - self._t_last, 1e-6)
            self._t_last = now
        bs = batch["input_ids"].shape[0]
        self.log("train/loss", metrics.pop("train/loss"), prog_bar=True, on_step=True, on_epoch=False, batch_size=bs)
        self.log_dict(metrics, on_step=True, on_epoch=False, batch_size=bs)
        return loss

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None) -> None:
        """Skip the optimizer (and, in `lr_scheduler_step`, the schedule) on a step that selects no token.

        The step's total is reduced over ranks in `training_step`, so every rank takes the same decision and the
        collectives stay in step. One host sync per optimizer step, to read it."""
        self._skipped_step = False
        if optimizer_closure is None:
            return super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        if self.uses_deepspeed():
            # The engine steps at its accumulation boundary; the update in it is skipped by `_guard_engine_update`.
            out = super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
            if self._skipped_step:
                engine = self.trainer.model
                engine.skipped_steps += 1  # DeepSpeed's own count of steps it did not apply
                if hasattr(engine.optimizer, "_hp_optimizer_states_linked") and not any(
                    engine.basic_optimizer.state.values()
                ):
                    # ZeRO-1/2 (and bf16 without ZeRO) link each parameter to its slice of AdamW's state after the
                    # first update, once; that was this step, with no state yet: link after the next one instead.
                    engine.optimizer._hp_optimizer_states_linked = False
            return out
        loss = optimizer_closure()  # the step's last micro-batch: forward and backward
        if self._step_selects_nothing():
            self._skipped_step = True  # its gradient is zero; Lightning zeroes it before the next step's backward
            return None
        # The closure has run; the optimizer gets its result (precision plugins unscale/clip after calling it).
        return optimizer.step(closure=lambda: loss)

    def _step_selects_nothing(self) -> bool:
        return self._step_total is not None and float(self._step_total) == 0.0

    def _guard_engine_update(self) -> None:
        """Under DeepSpeed, make the engine's update a no-op on a step that selects no token.

        The engine owns the step: it advances its micro-step counter, finds the accumulation boundary, reduces and
        clears the (partitioned) gradients, and copies the fp32 master weights back to the model. Skipping
        `engine.step()` would leave all that half done, differently in each ZeRO stage. So the engine steps as
        always, and only the call it makes at the boundary to the optimizer we gave it (`basic_optimizer`, in ZeRO
        0, 1, 2 and 3 alike) does nothing: the master weights and AdamW's moments and step counts stay as they
        were, and the weights copied back are the ones the model had. The step's gradient is exactly zero, so
        nothing left in DeepSpeed's buffers differs from a step that did update. The LR schedule is Lightning's
        (the strategy takes it away from the engine), skipped in `lr_scheduler_step` as without DeepSpeed.
        Left as they would be on an update: the engine's `global_steps` (like `global_step`) and, in fp16 with a
        dynamic loss scale, the scaler's count of good steps.

        Not chosen: dropping the rows that select nothing in the DataModule, so that no step could be empty. That is
        exact too (such a row adds nothing to the loss or its normaliser; DFT and Rho-1 normalise by the same data
        weights and cannot empty a step themselves), but it changes which rows share a step, and how many steps an
        epoch has, in every run with such rows, with or without DeepSpeed."""
        engine = self.trainer.model
        # ZeRO-3 with a partial optimizer offload steps some sub-groups with a second optimizer of its own.
        for opt in (engine.basic_optimizer, getattr(engine.optimizer, "backup_optimizer", None)):
            if opt is None or getattr(opt.step, "skips_empty_steps", False):
                continue
            opt.step = _unless(self._step_selects_nothing, opt.step, self._mark_skipped)

    def _mark_skipped(self) -> None:
        self._skipped_step = True

    def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
        if self._skipped_step:
            return
        super().lr_scheduler_step(scheduler, metric)

    def on_train_epoch_start(self) -> None:
        self._t_last = None
        self._empty_micro_batches = 0

    def on_train_epoch_end(self) -> None:
        # Steps whose micro-batches (on all ranks) hold no selected token. Said once per epoch, with the count,
        # rather than silently.
        empty = int(self._empty_micro_batches) // int(self.trainer.accumulate_grad_batches)
        if empty:
            steps = int(self.trainer.num_training_batches) // int(self.trainer.accumulate_grad_batches)
            rank_zero_warn(
                f"epoch {self.current_epoch}: {empty} of {steps} optimisation steps selected no tokens (the optimizer "
                "and LR schedule skipped them; global_step counts them). Check the selector and the annotations"
            )
        self.log("train/empty_steps", float(empty), on_step=False, on_epoch=True)

    def on_train_start(self) -> None:
        self._t_start = time.perf_counter() - getattr(self, "_wall_offset", 0.0)
        if self.uses_deepspeed():
            self._guard_engine_update()  # the engine exists from here on

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # Wall time of training so far, carried across resumes through the checkpoint.
        self.log("train/wall_s", time.perf_counter() - self._t_start, on_step=True, on_epoch=False)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["cft_wall_s"] = time.perf_counter() - getattr(self, "_t_start", time.perf_counter())

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._wall_offset = float(checkpoint.get("cft_wall_s", 0.0))

    # -- validation ---------------------------------------------------------------------------------------------
    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        nll, logits = self.token_nll(batch)
        resp = batch["response_mask"][:, 1:]
        n = resp.sum()
        self.log("val/loss", (nll * resp).sum() / n.clamp_min(1), batch_size=int(n), sync_dist=True, prog_bar=True)
        self.log("val/entropy", _masked_entropy(logits, resp), batch_size=int(n), sync_dist=True)
        if self.val_max_new_tokens <= 0:
            return
        _, correct = self.greedy_graded(
            batch["prompt_ids"], batch["answer"], self.val_max_new_tokens, self.val_generate_batch_size
        )
        acc = torch.tensor(correct, device=self.device).mean()
        self.log("val/acc", acc, batch_size=len(correct), sync_dist=True, prog_bar=True)


def _masked_entropy(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean predictive entropy over masked positions (in chunks of positions, to spare memory on large vocabularies)."""
    return chunked_mean_entropy(logits, mask)


def _unless(skip: Any, step: Any, on_skip: Any) -> Any:
    """`step` wrapped to do nothing (and call `on_skip`) when `skip()` is true at the time of the call."""

    def step_unless(*args: Any, **kwargs: Any) -> Any:
        if skip():
            on_skip()
            return None
        return step(*args, **kwargs)

    step_unless.skips_empty_steps = True  # type: ignore[attr-defined]
    return step_unless
