"""PromptDataModule: a task's problems as prompts (+ gold answers) for RL, and held-out problems for greedy accuracy.

Training batches come from a small stateful loader, so a run resumed from a mid-epoch checkpoint sees exactly
the prompts the uninterrupted run would have seen.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from torch.utils.data import DataLoader

from cft.data.batching import ResumableTrainLoader, StepBatches, StepLoader
from cft.data.collate import collate_lists
from cft.errors import ConfigError, DataError
from cft.tasks.base import Task
from cft.tasks.templates import PlainTemplate, PromptTemplate, encode_prompt


class PromptDataModule(ResumableTrainLoader, L.LightningDataModule):
    """Prompts (token ids) and gold answers of a task's problems: training batches for GRPO, validation problems
    for periodic greedy accuracy. Grading uses `self.task`.

    Args:
        task: where problems, gold answers and grading come from.
        template: how a question becomes a prompt (PlainTemplate for the tiny world; ChatTemplate for instruct models).
        train_split: task split whose problems are the RL prompts.
        val_split: task split for greedy validation accuracy.
        batch_size: prompts per optimisation round per device (each is sampled `num_generations` times).
        val_batch_size: problems per validation step.
        n_val: number of validation problems (0 = all).
        max_prompts: keep only the first N training problems (0 = all); for quick runs.
        max_prompt_length: longest prompt in tokens; a longer one is an error naming the problem.
        shuffle: reshuffle the prompts every epoch (seeded).
        seed: shuffling seed.
    """

    def __init__(
        self,
        task: Task,
        template: PromptTemplate | None = None,
        train_split: str = "train",
        val_split: str = "val",
        batch_size: int = 8,
        val_batch_size: int = 64,
        n_val: int = 200,
        max_prompts: int = 0,
        max_prompt_length: int = 512,
        shuffle: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.tokenizer: Any = None  # the model's, injected by whoever composes the run (python -m cft)
        if batch_size < 1 or val_batch_size < 1:
            raise ConfigError(f"data.batch_size={batch_size} and data.val_batch_size={val_batch_size} must be >= 1")
        if n_val < 0 or max_prompts < 0:
            raise ConfigError(f"data.n_val={n_val} and data.max_prompts={max_prompts} must be >= 0 (0 = all)")
        self.task = task
        self.template = template or PlainTemplate()
        self.train_split, self.val_split = train_split, val_split
        self.batch_size, self.val_batch_size = batch_size, val_batch_size
        self.n_val, self.max_prompts, self.max_prompt_length = n_val, max_prompts, max_prompt_length
        self.shuffle, self.seed = shuffle, seed
        self.train_rows: list[dict[str, Any]] = []
        self.val_rows: list[dict[str, Any]] = []
        self._train_loader: StepLoader | None = None

    @property
    def tasks(self) -> list[Task]:
        """The task that grades each dataloader's problems (one task here), for the module."""
        return [self.task]

    def _tokenizer(self):
        if self.tokenizer is None:
            raise RuntimeError(
                "PromptDataModule.tokenizer is not set: give it the model's tokenizer (python -m cft does)"
            )
        return self.tokenizer

    def build_rows(self, split: str, tokenizer: Any, limit: int = 0) -> list[dict[str, Any]]:
        """Rows of `split`: id, prompt, prompt_ids, answer."""
        try:
            problems = self.task.problems(split)
        except ValueError as e:
            raise DataError(f"task {self.task.name!r}: split {split!r}: {e}") from e
        if limit:
            problems = problems[:limit]
        rows = []
        for p in problems:
            prompt = self.template.render(p.question, tokenizer)
            ids = encode_prompt(tokenizer, prompt)
            if len(ids) > self.max_prompt_length:
                raise DataError(
                    f"task {self.task.name!r} split {split!r} problem {p.id!r}: prompt is {len(ids)} tokens, "
                    f"over data.max_prompt_length={self.max_prompt_length}"
                )
            rows.append({"id": p.id, "prompt": prompt, "prompt_ids": ids, "answer": p.answer})
        if not rows:
            raise DataError(f"task {self.task.name!r} split {split!r}: no problems")
        return rows

    def setup(self, stage: str | None = None) -> None:
        tok = self._tokenizer()
        if stage in (None, "fit") and not self.train_rows:
            self.train_rows = self.build_rows(self.train_split, tok, self.max_prompts)
        if not self.val_rows:
            self.val_rows = self.build_rows(self.val_split, tok, self.n_val)

    def train_dataloader(self) -> StepLoader:
        world = self.trainer.world_size
        if len(self.train_rows) < self.batch_size * world:
            raise DataError(
                f"{len(self.train_rows)} training prompts is fewer than one step (data.batch_size {self.batch_size} x "
                f"{world} devices)"
            )
        # Step s of epoch e: prompts order[s*B*W:(s+1)*B*W] of a permutation seeded by (seed, e), rank r its slice;
        # the incomplete last step is dropped so every rank generates (and runs its collectives) equally often.
        ds = StepBatches(
            self.train_rows,
            collate=collate_lists,
            micro_batch_size=self.batch_size,
            rank=self.trainer.global_rank,
            world_size=world,
            seed=self.seed,
            shuffle=self.shuffle,
            epoch_fn=lambda: self.trainer.current_epoch,
            weight_key=None,
        )
        return self._step_loader(ds)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_rows, batch_size=self.val_batch_size, shuffle=False, collate_fn=collate_lists)
