"""Hub training sets for paper-scale runs: GSM8K (`main`) and MATH (seven subjects) with a held-out validation split.

The validation split is carved from the training sets by a seeded permutation, so `hf/best`, early stopping and
`val/acc` never see an evaluation problem; the chosen ids are written to the run dir by the DataModule.
"""

from __future__ import annotations

import random
import re

from cft.errors import BenchmarkLoadError, ConfigError
from cft.tasks.base import Problem, Task
from cft.tasks.math_benchmarks import BenchmarkTask

# GSM8K's calculator annotations: "48/2 = <<48/2=24>>24" -> "48/2 = 24".
_CALC_MARKUP_RE = re.compile(r"<<[^<>]*>>")
_HASH_LINE_RE = re.compile(r"\n?####\s*(.+?)\s*$")
TRAIN_SOURCES = ("gsm8k", "math")


def clean_gsm8k_solution(solution: str, boxed: bool = True) -> str:
    """Remove `<<...>>` calculator markup; with `boxed`, end with `\\boxed{answer}` instead of `#### answer`
    (the Qwen2.5-Math prompt asks for a boxed answer, and MATH's solutions box theirs)."""
    text = _CALC_MARKUP_RE.sub("", solution)
    if boxed:
        text = _HASH_LINE_RE.sub(lambda m: f"\nThe final answer is $\\boxed{{{m.group(1).replace(',', '')}}}$.", text)
    return text


class MathTrainTask(Task):
    """The training sets of GSM8K and MATH as one task with `train` and `val` splits.

    Args:
        sources: benchmarks whose hub training split is used ("gsm8k": openai/gsm8k config `main`; "math":
            EleutherAI/hendrycks_math, its seven subject configs concatenated).
        local_paths: benchmark name -> a .jsonl/.json/.parquet file in the hub's schema, used instead of the hub
            (offline machines; the result is the same as from the hub).
        n_val: problems held out of the training rows for validation (taken over all sources together).
        val_seed: seed of the permutation that picks them (fixed: changing the run seed keeps the same split).
        boxed_gsm8k: rewrite GSM8K's final `#### n` line as `The final answer is $\\boxed{n}$.`.
        limit: keep only the first N problems of each source before splitting (0 = all); for quick runs.
    """

    name = "math_train"

    def __init__(
        self,
        sources: list[str] | None = None,
        local_paths: dict[str, str] | None = None,
        n_val: int = 500,
        val_seed: int = 0,
        boxed_gsm8k: bool = True,
        limit: int = 0,
    ) -> None:
        self.sources = list(sources) if sources is not None else list(TRAIN_SOURCES)
        unknown = [s for s in self.sources if s not in TRAIN_SOURCES]
        if unknown or not self.sources:
            raise BenchmarkLoadError(
                f"MathTrainTask.sources: {unknown or '[]'}; expected some of {list(TRAIN_SOURCES)}"
            )
        self.local_paths = dict(local_paths or {})
        extra = sorted(set(self.local_paths) - set(self.sources))
        if extra:
            raise BenchmarkLoadError(
                f"MathTrainTask.local_paths names {extra}, which are not in sources {self.sources}"
            )
        if n_val < 1:
            raise BenchmarkLoadError(f"MathTrainTask.n_val={n_val}: a validation split needs at least 1 problem")
        self.n_val, self.val_seed, self.boxed_gsm8k, self.limit = n_val, val_seed, boxed_gsm8k, limit
        self._splits: dict[str, list[Problem]] | None = None

    @property
    def splits(self) -> tuple[str, ...]:
        return ("train", "val")

    def __repr__(self) -> str:
        return f"MathTrainTask(sources={self.sources!r}, n_val={self.n_val}, val_seed={self.val_seed})"

    def _all(self) -> list[Problem]:
        out: list[Problem] = []
        for name in self.sources:
            task = BenchmarkTask(name, local_path=self.local_paths.get(name), split="train", limit=self.limit)
            for p in task.problems():
                solution = p.solution
                if name == "gsm8k" and solution is not None:
                    solution = clean_gsm8k_solution(solution, self.boxed_gsm8k)
                out.append(Problem(id=f"train/{p.id}", question=p.question, answer=p.answer, solution=solution))
        return out

    def problems(self, split: str) -> list[Problem]:
        if split not in self.splits:
            raise ConfigError(f"task {self.name!r} has splits {list(self.splits)}, got {split!r}")
        if self._splits is None:
            rows = self._all()
            if self.n_val >= len(rows):
                raise BenchmarkLoadError(
                    f"MathTrainTask.n_val={self.n_val} leaves no training rows ({len(rows)} problems in {self.sources})"
                )
            order = list(range(len(rows)))
            random.Random(self.val_seed).shuffle(order)
            val = set(order[: self.n_val])
            self._splits = {
                "train": [p for i, p in enumerate(rows) if i not in val],
                "val": [p for i, p in enumerate(rows) if i in val],
            }
        return self._splits[split]
