"""Tasks: problems with gold answers, prompt templates and grading; `get_task` builds one by name."""

from __future__ import annotations

from typing import Any

from cft.errors import ConfigError
from cft.tasks.arithmetic import ArithmeticTask
from cft.tasks.base import Problem, Task
from cft.tasks.grading import extract_answer, grade_answer
from cft.tasks.math_benchmarks import BENCHMARKS, BenchmarkSpec, BenchmarkTask, benchmark_factories
from cft.tasks.templates import QWEN_MATH_COT_SYSTEM, ChatTemplate, PlainTemplate, PromptTemplate
from cft.tasks.testbed import TestbedTask

__all__ = [
    "QWEN_MATH_COT_SYSTEM",
    "TASKS",
    "ArithmeticTask",
    "BENCHMARKS",
    "BenchmarkSpec",
    "BenchmarkTask",
    "ChatTemplate",
    "PlainTemplate",
    "Problem",
    "PromptTemplate",
    "Task",
    "TestbedTask",
    "extract_answer",
    "get_task",
    "grade_answer",
]

TASKS: dict[str, type[Task]] = {"arithmetic": ArithmeticTask, "testbed": TestbedTask}
# Hub benchmarks by name: get_task("gsm8k", local_path=...) builds BenchmarkTask("gsm8k", ...).
TASKS.update(benchmark_factories())  # type: ignore[arg-type]


def get_task(name: str, **kwargs: Any) -> Task:
    """The task registered as `name`, built with `kwargs`. Raises ValueError naming the known tasks."""
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}")
    return TASKS[name](**kwargs)
