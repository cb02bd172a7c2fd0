"""AnnotationDataModule: the questions the perturbation scorer annotates, sharded over array jobs and ranks.

It yields batches of prompts (and, with `responses: reference`, given responses); the scorer generates the
model's own greedy responses, grades them and keeps the correct ones (the paper's D_correct), because generation
needs the model, which Lightning builds after the DataModule is set up. The AnnotationWriter reports the yield.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from typing import Any, Literal

import lightning as L
from torch.utils.data import DataLoader, IterableDataset

from cft.errors import ConfigError, DataError
from cft.io import read_jsonl
from cft.tasks.base import Problem, Task
from cft.tasks.templates import PlainTemplate, PromptTemplate, encode_prompt

__all__ = ["AnnotationDataModule", "load_problems"]

# Our iterable dataset has a __len__ (for the progress bar) and is read by the main process only.
warnings.filterwarnings("ignore", message=r"Your `IterableDataset` has `__len__` defined", category=UserWarning)


def load_problems(
    path: str, split: str, question_field: str, answer_field: str, solution_field: str | None
) -> list[Problem]:
    """Problems from a hub id or a local json/jsonl/csv/parquet file or dir, read with `datasets.load_dataset`.

    A gold answer written as a solution (GSM8K's `... #### 72`, or a `\\boxed{}`) is reduced to its final answer.
    """
    import datasets

    from cft.tasks.grading import extract_answer

    ext = os.path.splitext(path)[1].lstrip(".")
    builder = {"jsonl": "json", "json": "json", "csv": "csv", "parquet": "parquet"}.get(ext)
    if builder == "json" and os.path.isfile(path):
        read_jsonl(path)  # names a bad line (Arrow's own error does not); the rows are then read by `datasets`
    try:
        ds = (
            datasets.load_dataset(builder, data_files=path, split=split)
            if builder
            else datasets.load_dataset(path, split=split)
        )
    except Exception as e:  # noqa: BLE001 - datasets raises many types; the user needs the path and the cause
        raise DataError(f"dataset {path!r} split {split!r} could not be loaded: {e}") from e
    for field in (question_field, answer_field, solution_field):
        if field is not None and field not in ds.column_names:
            raise DataError(f"dataset {path!r}: no column {field!r} (columns: {', '.join(ds.column_names)})")
    problems = []
    for i, rec in enumerate(ds):
        raw = str(rec[answer_field])
        answer = extract_answer(raw) if ("####" in raw or "\\boxed" in raw) else raw.strip()
        if not answer or not str(rec[question_field]).strip():
            raise DataError(f"dataset {path!r} row {i}: empty {question_field!r} or {answer_field!r}")
        solution = str(rec[solution_field]) if solution_field and rec[solution_field] is not None else None
        problems.append(
            Problem(
                id=f"{os.path.basename(path)}/{split}/{i:06d}",
                question=str(rec[question_field]),
                answer=answer,
                solution=solution,
            )
        )
    return problems


class _Batches(IterableDataset):
    """Fixed batches for one rank; at least one (maybe empty), so every rank runs the predict hooks."""

    def __init__(self, batches: list[list[dict[str, Any]]]) -> None:
        self.batches = batches or [[]]

    def __iter__(self) -> Iterator[list[dict[str, Any]]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else None


def _describe(obj: Any) -> str:
    """A stable description for the resume check (a default repr holds a memory address, which changes)."""
    text = repr(obj)
    if " object at 0x" in text:
        config = getattr(obj, "config", None)
        text = f"{type(obj).__module__}.{type(obj).__qualname__}({config!r})"
    return text


class AnnotationDataModule(L.LightningDataModule):
    """Questions to annotate, from a task split or a data set with question and answer columns.

    Args:
        task: grading (and, without `dataset`, the problems).
        template: how a question becomes a prompt (PlainTemplate for the tiny world, ChatTemplate for instruct models).
        split: task split to annotate (the fine-tuning split).
        responses: "self" (paper: the model's own greedy responses, correct ones kept) or "reference" (the task's
            reference solutions, correct ones kept; a departure from the paper, which annotates the model's outputs).
        dataset: hub id or local json/jsonl/csv/parquet with the problems, instead of the task's split.
        dataset_split: split of `dataset`.
        question_field: question column of `dataset`.
        answer_field: gold answer column of `dataset` (a `#### n` or boxed solution is reduced to its answer).
        solution_field: reference solution column of `dataset` (needed with responses "reference").
        limit: annotate only the first N problems (0 = all), before sharding.
        batch_size: questions per predict step (responses generated and rollouts batched over all of them).
        shard_index: this job's shard (default: $SLURM_ARRAY_TASK_ID, else 0).
        shard_count: number of shards (default: $SLURM_ARRAY_TASK_COUNT, else 1).
    """

    def __init__(
        self,
        task: Task,
        template: PromptTemplate | None = None,
        split: str = "train",
        responses: Literal["self", "reference"] = "self",
        dataset: str | None = None,
        dataset_split: str = "train",
        question_field: str = "question",
        answer_field: str = "answer",
        solution_field: str | None = None,
        limit: int = 0,
        batch_size: int = 16,
        shard_index: int | None = None,
        shard_count: int | None = None,
    ) -> None:
        super().__init__()
        self.tokenizer: Any = None  # the model's, injected by whoever composes the run (python -m cft)
        if responses not in ("self", "reference"):
            raise ConfigError(f"data.responses={responses!r}: expected 'self' or 'reference'")
        if batch_size < 1 or limit < 0:
            raise ConfigError(f"data.batch_size={batch_size} must be >= 1 and data.limit={limit} >= 0")
        self.task, self.template, self.split, self.responses = task, template or PlainTemplate(), split, responses
        self.dataset, self.dataset_split = dataset, dataset_split
        self.question_field, self.answer_field, self.solution_field = question_field, answer_field, solution_field
        self.limit, self.batch_size = limit, batch_size
        self.shard_count = shard_count if shard_count is not None else (_env_int("SLURM_ARRAY_TASK_COUNT") or 1)
        index = shard_index if shard_index is not None else _env_int("SLURM_ARRAY_TASK_ID")
        if index is not None and shard_index is None:
            # Arrays may start at an offset (--array=1-8): index relative to the first task.
            index -= _env_int("SLURM_ARRAY_TASK_MIN") or 0
        self.shard_index = index or 0
        if not 0 <= self.shard_index < self.shard_count:
            raise ConfigError(f"data.shard_index={self.shard_index} is outside [0, shard_count={self.shard_count})")
        self.items: list[dict[str, Any]] = []
        self._loaded: list[Problem] | None = None
        self.done: set[str] = set()
        self.n_problems = 0

    def describe(self) -> dict[str, Any]:
        """What defines the questions of this shard, for metadata.json and the resume check."""
        return {
            "task": _describe(self.task),
            "template": _describe(self.template),
            "split": self.dataset_split if self.dataset else self.split,
            "dataset": self.dataset,
            "fields": [self.question_field, self.answer_field, self.solution_field] if self.dataset else None,
            "responses": self.responses,
            "limit": self.limit,
        }

    def _problems(self) -> list[Problem]:
        if self.dataset:
            if self._loaded is None:
                self._loaded = load_problems(
                    self.dataset, self.dataset_split, self.question_field, self.answer_field, self.solution_field
                )
            return self._loaded
        return self.task.problems(self.split)

    @property
    def tasks(self) -> list[Task]:
        """The task that grades each dataloader's problems (one task here), for the module."""
        return [self.task]

    def check_inputs(self) -> None:
        """Before the run directory exists (the CLI calls this first): the questions load."""
        self._problems()

    def setup(self, stage: str | None = None) -> None:
        if self.items:
            return
        tokenizer = self.tokenizer
        if tokenizer is None:
            raise RuntimeError(
                "AnnotationDataModule.tokenizer is not set: give it the model's tokenizer (python -m cft does)"
            )
        problems = self._problems()
        source = f"dataset {self.dataset!r}" if self.dataset else f"task {self.task.name!r} split {self.split!r}"
        if self.limit:
            problems = problems[: self.limit]
        if not problems:
            raise DataError(f"{source}: no problems to annotate (empty data set or limit 0)")
        self.n_problems = len(problems)
        # Strided shards: each gets a similar mix of easy and hard problems.
        mine = problems[self.shard_index :: self.shard_count]
        if not mine:
            raise DataError(
                f"{source}: shard {self.shard_index} of {self.shard_count} is empty ({len(problems)} problems)"
            )
        for p in mine:
            prompt = self.template.render(p.question, tokenizer)
            item = {
                "id": p.id,
                "question": p.question,
                "answer": p.answer,
                "prompt": prompt,
                "prompt_ids": encode_prompt(tokenizer, prompt),
                "response_token_ids": None,
            }
            if self.responses == "reference":
                if not p.solution:
                    raise DataError(
                        f"{source} problem {p.id!r}: no reference solution (needed with responses: reference)"
                    )
                item["response_token_ids"] = tokenizer(p.solution, add_special_tokens=False)["input_ids"]
            self.items.append(item)
        ids = [it["id"] for it in self.items]
        if len(set(ids)) != len(ids):
            raise DataError(f"{source}: problem ids are not unique; resuming by id would lose rows")

    def exclude(self, ids: set[str]) -> None:
        """Skip questions already annotated (called by the writer on resume, before the dataloader is built)."""
        self.done = set(ids)

    @property
    def remaining(self) -> list[dict[str, Any]]:
        return [it for it in self.items if it["id"] not in self.done]

    def predict_dataloader(self) -> DataLoader:
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        mine = self.remaining[rank::world]
        batches = [mine[i : i + self.batch_size] for i in range(0, len(mine), self.batch_size)]
        # An iterable dataset, so Lightning does not add a DistributedSampler (which would pad with repeats).
        return DataLoader(_Batches(batches), batch_size=None, collate_fn=lambda b: b)
