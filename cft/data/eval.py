"""EvalDataModule: one dataloader of prompts per (task, split) and per hub benchmark, for the Evaluator."""

from __future__ import annotations

from typing import Any

import lightning as L
from torch.utils.data import DataLoader

from cft.data.collate import collate_lists
from cft.errors import ConfigError
from cft.tasks.base import Task
from cft.tasks.grading import GradingMode
from cft.tasks.math_benchmarks import BenchmarkTask, get_benchmark
from cft.tasks.templates import PlainTemplate, PromptTemplate, encode_prompt


class EvalDataModule(L.LightningDataModule):
    """Evaluation prompts: the splits of a task (e.g. the arithmetic world's test and test_hard) and/or hub
    benchmarks by name. Dataloader i is named `self.names[i]` and graded by `self.task_for(i)`.

    Args:
        task: Task whose `splits` are evaluated (None: benchmarks only).
        benchmarks: Hub benchmark names (see `cft.tasks.math_benchmarks.BENCHMARKS`), each evaluated on its test set.
        splits: Splits of `task` to evaluate, one dataloader each.
        template: How a question becomes a prompt (PlainTemplate by default; ChatTemplate for instruct models).
        limit: Keep only the first N problems of every split and benchmark (0 = all).
        batch_size: Problems per test step (the Evaluator's own `batch_size` caps sequences per generate call).
        local_paths: Benchmark name -> local .jsonl/.json/.parquet file to read instead of the hub.
        grading: How benchmark answers are graded: "qwen_math" (the Qwen2.5-Math harness's rules, comparable with
            the CFT paper) or "math_verify" (exact numbers, then math-verify). `task` keeps its own grading.
    """

    def __init__(
        self,
        task: Task | None = None,
        benchmarks: tuple[str, ...] = (),
        splits: tuple[str, ...] = ("test", "test_hard"),
        template: PromptTemplate | None = None,
        limit: int = 0,
        batch_size: int = 64,
        local_paths: dict[str, str] | None = None,
        grading: GradingMode = "qwen_math",
    ) -> None:
        super().__init__()
        self.tokenizer: Any = None  # the model's, injected by whoever composes the run (python -m cft)
        benchmarks, splits = tuple(benchmarks), tuple(splits)
        local_paths = dict(local_paths or {})
        if task is None and not benchmarks:
            raise ConfigError("EvalDataModule needs a task, benchmarks, or both: got neither")
        if limit < 0 or batch_size < 1:
            raise ConfigError(f"EvalDataModule: limit={limit} must be >= 0 and batch_size={batch_size} >= 1")
        for name in benchmarks:
            get_benchmark(name)  # fail at construction, listing the known names
        unknown = sorted(set(local_paths) - set(benchmarks))
        if unknown:
            raise ConfigError(f"data.local_paths names {unknown}, which are not in data.benchmarks {list(benchmarks)}")
        self.template = template or PlainTemplate()
        self.limit, self.batch_size = limit, batch_size
        # (dataloader name, task, split of that task), in dataloader order.
        self.sources: list[tuple[str, Task, str | None]] = []
        if task is not None:
            self.sources += [(split, task, split) for split in (splits or ())]
        for name in benchmarks:
            self.sources.append(
                (name, BenchmarkTask(name, local_path=local_paths.get(name), limit=limit, grading=grading), None)
            )
        names = [s[0] for s in self.sources]
        if not names:
            raise ConfigError("EvalDataModule: data.splits is empty and there are no benchmarks: nothing to evaluate")
        if len(set(names)) != len(names):
            raise ConfigError(f"EvalDataModule: dataloader names must be unique, got {names}")
        self.names: list[str] = names
        self.rows: list[list[dict[str, Any]]] = []

    def check_inputs(self) -> None:
        """Before the run directory exists (the CLI calls this first): every split and benchmark file loads."""
        for _, task, split in self.sources:
            task.problems(split) if split is not None else task.problems()

    @property
    def tasks(self) -> list[Task]:
        """The task that grades each dataloader's problems, in dataloader order, for the module."""
        return [task for _, task, _ in self.sources]

    def task_for(self, dataloader_idx: int) -> Task:
        """The task that grades dataloader `dataloader_idx`."""
        return self.sources[dataloader_idx][1]

    def _tokenizer(self):
        if self.tokenizer is None:
            raise RuntimeError(
                "EvalDataModule.tokenizer is not set: give it the model's tokenizer (python -m cft does)"
            )
        return self.tokenizer

    def build_rows(self, tokenizer: Any) -> list[list[dict[str, Any]]]:
        """Rows of every dataloader: index, id, question, prompt, prompt_ids, answer."""
        out = []
        for _, task, split in self.sources:
            problems = task.problems(split) if split is not None else task.problems()
            if self.limit:
                problems = problems[: self.limit]
            rows = []
            for index, p in enumerate(problems):
                prompt = self.template.render(p.question, tokenizer)
                rows.append(
                    {
                        "index": index,
                        "id": p.id,
                        "question": p.question,
                        "prompt": prompt,
                        "prompt_ids": encode_prompt(tokenizer, prompt),
                        "answer": p.answer,
                    }
                )
            out.append(rows)
        return out

    def setup(self, stage: str | None = None) -> None:
        if not self.rows:
            self.rows = self.build_rows(self._tokenizer())

    def _loaders(self) -> list[DataLoader]:
        return [
            DataLoader(rows, batch_size=self.batch_size, shuffle=False, collate_fn=collate_lists) for rows in self.rows
        ]

    def test_dataloader(self) -> list[DataLoader]:
        return self._loaders()

    def val_dataloader(self) -> list[DataLoader]:
        return self._loaders()

    def predict_dataloader(self) -> list[DataLoader]:
        return self._loaders()
