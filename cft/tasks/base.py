"""The Task protocol: problems with gold answers, a prompt, answer extraction and grading."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One question with its gold final answer (and a reference solution where known)."""

    id: str
    question: str
    answer: str
    solution: str | None = None


class Task(ABC):
    """A source of problems plus the way its generations are graded.

    Prompt rendering lives in `cft.tasks.templates` (plain or chat templates), so the same task can be used
    with the tiny world's plain format and with a chat model.
    """

    name: str = "task"

    @abstractmethod
    def problems(self, split: str) -> list[Problem]:
        """All problems of `split` (deterministic order). Raises ValueError for an unknown split."""

    @property
    def splits(self) -> tuple[str, ...]:
        return ("train", "val", "test")

    def extract_answer(self, generation: str) -> str | None:
        from cft.tasks.grading import extract_answer

        return extract_answer(generation)

    def grade(self, generation: str, answer: str) -> bool:
        """True iff the final answer extracted from `generation` equals the gold `answer`."""
        from cft.tasks.grading import grade_answer

        pred = self.extract_answer(generation)
        return pred is not None and grade_answer(pred, answer)
