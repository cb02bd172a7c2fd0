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
    answer_format: str | None = None
    """The extraction rule of the task's own solutions ("hashes": a `#### n` line, "boxed"), or None. Annotation
    grades rollouts in this format only, so a truncated "... = 228" cannot pass on its last number."""

    @abstractmethod
    def problems(self, split: str) -> list[Problem]:
        """All problems of `split` (deterministic order). Raises ValueError for an unknown split."""

    @property
    def splits(self) -> tuple[str, ...]:
        return ("train", "val", "test")

    grading: str = "math_verify"
    """How answers are extracted and compared: "math_verify" or "qwen_math" (see `cft.tasks.grading`)."""

    def extract(self, generation: str) -> tuple[str | None, str]:
        """`(answer, rule)`: the final answer of `generation` (None: none found) and the rule that found it."""
        from cft.tasks.graders import extract

        return extract(generation, self.grading)

    def extract_answer(self, generation: str) -> str | None:
        return self.extract(generation)[0]

    def answers_equal(self, pred: str | None, answer: str) -> bool:
        """True iff the extracted answer `pred` equals the gold `answer` (used for majority votes too)."""
        from cft.tasks.graders import answers_equal

        return pred is not None and answers_equal(pred, answer, self.grading)

    def grade(self, generation: str, answer: str) -> bool:
        """True iff the final answer extracted from `generation` equals the gold `answer`."""
        return self.answers_equal(self.extract_answer(generation), answer)

    def judge(self, generation: str, answer: str) -> tuple[str | None, str, bool]:
        """`(extracted answer, rule that found it, correct)` for one generation, as the predictions file records it."""
        extracted, rule = self.extract(generation)
        return extracted, rule, bool(self.grade(generation, answer))

    def grade_strict(self, generation: str, answer: str) -> bool:
        """`grade`, counting only an answer found by the task's `answer_format` rule; `grade` when it has none."""
        if self.answer_format is None:
            return self.grade(generation, answer)
        pred, rule = self.extract(generation)
        return rule == self.answer_format and self.answers_equal(pred, answer)
