"""TrainDataModule: (prompt, response) rows with per-token weights from a selector, batched by optimisation step."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
from torch.utils.data import DataLoader

from cft.data.batching import ResumableTrainLoader, StepBatches
from cft.data.collate import Overlong, collate_weighted, encode_pair, fit_length
from cft.errors import ConfigError, DataError
from cft.io import atomic_write_json
from cft.selectors import AllTokens, TokenSelector
from cft.tasks.base import Task
from cft.tasks.templates import PlainTemplate, PromptTemplate

log = logging.getLogger(__name__)


class TrainDataModule(ResumableTrainLoader, L.LightningDataModule):
    """Training rows for the token-weighted learner; validation rows for loss and greedy accuracy.

    Args:
        task: where problems, reference solutions and grading come from.
        template: how a question becomes a prompt.
        annotations: annotated parquet shards (a dir or glob written by the scorer); when set, training rows
            are the model's own correct responses from them instead of the task's reference solutions.
        project_annotations: when the shards were annotated with another tokenizer, carry the critical tokens over
            by character spans (e.g. annotate with a small model, train a larger one) instead of refusing them.
        selector: which response tokens carry loss (AllTokens = SFT, CriticalTokens = CFT, baselines...).
        train_split: task split for training rows (without `annotations`).
        val_split: task split for validation loss and greedy accuracy.
        n_val: number of validation problems (0 = all).
        micro_batch_size: rows per device per forward pass.
        global_batch_size: rows per optimisation step over all devices; gradient accumulation is derived from it
            (global / (micro_batch_size x devices), which must be a whole number), as litgpt does. None: one
            micro-batch per device per step, or `trainer.accumulate_grad_batches` if set.
        max_length: cap on prompt+response tokens.
        overlong: what to do with a longer row: "error" (default), "truncate" the response, or "skip" it.
        loss_on_prompt: also put weight 1 on prompt tokens (language-model pretraining on the full text).
        max_train_rows: keep only the first N training rows (0 = all); for quick runs.
        seed: shuffling seed.
    """

    def __init__(
        self,
        task: Task,
        template: PromptTemplate | None = None,
        annotations: str | None = None,
        project_annotations: bool = False,
        selector: TokenSelector | None = None,
        train_split: str = "train",
        val_split: str = "val",
        n_val: int = 200,
        micro_batch_size: int = 16,
        global_batch_size: int | None = None,
        max_length: int = 256,
        overlong: Overlong = "error",
        loss_on_prompt: bool = False,
        max_train_rows: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.tokenizer: Any = None  # the model's, injected by whoever composes the run (python -m cft)
        if micro_batch_size < 1 or max_length < 1:
            raise ConfigError(
                f"data.micro_batch_size={micro_batch_size} and data.max_length={max_length}: expected >= 1"
            )
        if n_val < 0 or max_train_rows < 0:
            raise ConfigError(f"data.n_val={n_val} and data.max_train_rows={max_train_rows}: expected >= 0 (0 = all)")
        self.task = task
        self.template = template or PlainTemplate()
        self.annotations, self.project_annotations = annotations, project_annotations
        self.selector = selector or AllTokens()
        self.train_split, self.val_split, self.n_val = train_split, val_split, n_val
        self.micro_batch_size, self.global_batch_size = micro_batch_size, global_batch_size
        self.max_length, self.overlong, self.loss_on_prompt = max_length, overlong, loss_on_prompt
        self.max_train_rows, self.seed = max_train_rows, seed
        self.stats: dict[str, int] = {}
        self.train_rows: list[dict[str, Any]] = []
        self.val_rows: list[dict[str, Any]] = []

    def check_inputs(self) -> None:
        """Before the run directory exists (the CLI calls this first): the annotation parts exist and are readable."""
        if self.annotations is None:
            return
        from cft.data.annotation_format import list_parts, part_info

        parts = list_parts(self.annotations)
        if not parts:
            raise DataError(
                f"annotations {self.annotations!r}: no part-*.parquet files found (dir, glob or file expected)"
            )
        for part in parts:
            part_info(part)

    # -- rows -------------------------------------------------------------------------------------------------
    @property
    def tasks(self) -> list[Task]:
        """The task that grades each dataloader's problems (one task here), for the module."""
        return [self.task]

    def _tokenizer(self):
        if self.tokenizer is None:
            raise RuntimeError(
                "TrainDataModule.tokenizer is not set: give it the model's tokenizer (python -m cft does)"
            )
        return self.tokenizer

    def _solution_rows(self, split: str, tokenizer) -> list[dict[str, Any]]:
        rows = []
        for p in self.task.problems(split):
            where = f"task {self.task.name!r} split {split!r} problem {p.id!r}"
            if not p.solution:
                raise DataError(f"{where}: no reference solution (needed to train on the task's solutions)")
            prompt = self.template.render(p.question, tokenizer)
            prompt_ids, response_ids = encode_pair(tokenizer, prompt, p.solution, where)
            rows.append(
                {
                    "id": p.id,
                    "prompt": prompt,
                    "response": p.solution,
                    "answer": p.answer,
                    "prompt_ids": prompt_ids,
                    "response_ids": response_ids,
                }
            )
        return rows

    def _annotated_rows(self, tokenizer) -> list[dict[str, Any]]:
        from cft.data.annotation_format import read_annotated_rows

        return read_annotated_rows(
            self.annotations, tokenizer, required=self.selector.requires, project=self.project_annotations
        )

    def _finish(self, rows: list[dict[str, Any]], split: str) -> list[dict[str, Any]]:
        out, truncated, skipped = [], 0, 0
        for r in rows:
            missing = [f for f in self.selector.requires if r.get(f) is None]
            if missing:
                raise DataError(f"row {r.get('id')!r}: selector {self.selector.name!r} needs field(s) {missing}")
            fitted = fit_length(r, self.max_length, self.overlong, f"{split} row {r.get('id')!r}")
            if fitted is None:
                skipped += 1
                continue
            truncated += fitted is not r
            fitted = dict(fitted)
            fitted["weights"] = self.selector.weights(fitted)
            if self.loss_on_prompt:
                fitted["prompt_weights"] = [1.0] * len(fitted["prompt_ids"])
            out.append(fitted)
        self.stats[f"{split}/truncated"], self.stats[f"{split}/skipped"] = truncated, skipped
        if truncated or skipped:
            log.warning(
                "%s: %d over-long rows truncated, %d skipped (max_length=%d)",
                split,
                truncated,
                skipped,
                self.max_length,
            )
        if not out:
            raise DataError(f"{split}: no usable rows (all {len(rows)} skipped or none given)")
        return out

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit"):
            self._derive_accumulation()
        if self.train_rows or self.val_rows:
            return
        tok = self._tokenizer()
        self.selector.setup(tok)
        if stage in (None, "fit"):
            raw = self._annotated_rows(tok) if self.annotations else self._solution_rows(self.train_split, tok)
            if self.max_train_rows:
                raw = raw[: self.max_train_rows]
            self.train_rows = self._finish(raw, "train")
        val = self._solution_rows(self.val_split, tok)
        if self.n_val:
            val = val[: self.n_val]
        sel, self.selector = self.selector, AllTokens()
        try:  # validation loss is plain SFT loss on reference solutions, comparable across methods
            self.val_rows = self._finish(val, "val")
        finally:
            self.selector = sel
        n_w = sum(sum(r["weights"]) for r in self.train_rows)
        n_t = sum(len(r["response_ids"]) for r in self.train_rows)
        if self.train_rows and n_w == 0 and not self.loss_on_prompt:
            # Every step would be a zero loss on which the optimizer and the schedule still advance.
            raise DataError(
                f"train: selector {self.selector.name!r} selects none of the {n_t} response tokens of the "
                f"{len(self.train_rows)} training rows{f' in {self.annotations!r}' if self.annotations else ''}; "
                "nothing to train on"
            )
        self.stats.update(train_rows=len(self.train_rows), val_rows=len(self.val_rows))
        self.frac_tokens_selected = n_w / n_t if n_t else 0.0
        self._write_stats(n_w, n_t)

    def _write_stats(self, n_weighted: float, n_tokens: int) -> None:
        """`<run dir>/data_stats.json`: rows kept, truncated and skipped, and the fraction of tokens selected."""
        if self.trainer is None or not self.trainer.is_global_zero:
            return
        stats = {
            **self.stats,
            "selector": self.selector.name,
            "train_response_tokens": n_tokens,
            "train_weighted_tokens": n_weighted,
            "frac_tokens_selected": self.frac_tokens_selected,
        }
        root = Path(self.trainer.default_root_dir)
        # The validation problems by id, so a run can show that none of them is an evaluation problem.
        val = {"task": repr(self.task), "split": self.val_split, "ids": [r["id"] for r in self.val_rows]}
        for name, content in (("data_stats.json", stats), ("val_split.json", val)):
            atomic_write_json(root / name, content)

    @property
    def accumulate(self) -> int:
        return int(self.trainer.accumulate_grad_batches) if self.trainer else 1

    @property
    def world_size(self) -> int:
        return int(self.trainer.world_size) if self.trainer else 1

    def _derive_accumulation(self) -> None:
        """Set the trainer's gradient accumulation from global_batch_size (Lightning reads it during fit, DeepSpeed
        when the strategy is set up, both after this hook)."""
        if self.global_batch_size is None or self.trainer is None:
            return
        per_pass = self.micro_batch_size * self.world_size
        if self.global_batch_size < 1 or self.global_batch_size % per_pass:
            raise ConfigError(
                f"data.global_batch_size={self.global_batch_size} is not a multiple of micro_batch_size "
                f"{self.micro_batch_size} x {self.world_size} devices = {per_pass}"
            )
        accumulate = self.global_batch_size // per_pass
        if self.trainer.accumulate_grad_batches not in (1, accumulate):
            raise ConfigError(
                f"trainer.accumulate_grad_batches={self.trainer.accumulate_grad_batches} and data.global_batch_size="
                f"{self.global_batch_size} disagree (that size needs {accumulate}); set only global_batch_size"
            )
        self.trainer.accumulate_grad_batches = accumulate

    # -- loaders ----------------------------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        pad = self._tokenizer().pad_token_id
        ds = StepBatches(
            self.train_rows,
            collate=lambda rows: collate_weighted(rows, pad),
            micro_batch_size=self.micro_batch_size,
            accumulate=self.accumulate,
            rank=self.trainer.global_rank,
            world_size=self.world_size,
            seed=self.seed,
            epoch_fn=lambda: self.trainer.current_epoch,
        )
        return self._step_loader(ds)

    def val_dataloader(self) -> DataLoader:
        pad = self._tokenizer().pad_token_id
        return DataLoader(
            self.val_rows,
            batch_size=self.micro_batch_size,
            shuffle=False,
            collate_fn=lambda rows: collate_weighted(rows, pad, with_prompts=True),
        )
