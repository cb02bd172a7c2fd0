"""Registry of hub math benchmarks (the Qwen2.5-Math evaluation suite and a few more) and `BenchmarkTask`.

Field names and answer parsing follow the Qwen2.5-Math evaluation code (`evaluation/parser.py`:
`parse_question`, `parse_ground_truth`). Hub ids are the public copies in common use; the suite itself reads
`evaluation/data/<name>/test.jsonl` files, so for benchmarks without a hub copy (and for offline machines)
pass `local_path` to such a file. A local file must use the schema listed in the benchmark's spec.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from cft.errors import BenchmarkLoadError, ConfigError
from cft.tasks.base import Problem, Task
from cft.tasks.grading import _boxed_contents, parse_number

__all__ = [
    "BENCHMARKS",
    "QWEN_MATH_SUITE",
    "BenchmarkSpec",
    "BenchmarkTask",
    "benchmark_factories",
    "get_benchmark",
]

AnswerFormat = Literal["number", "latex", "gsm8k_hash", "boxed", "choice"]


def _svamp_question(row: dict[str, Any]) -> str:
    body = str(row["Body"]).strip()
    if not body.endswith("."):
        body += "."
    return f"{body} {str(row['Question']).strip()}"


def _asdiv_question(row: dict[str, Any]) -> str:
    return f"{str(row['body']).strip()} {str(row['question']).strip()}"


def _single_answer(row: dict[str, Any]) -> bool:
    # ASDiv rows like "3; 4" have several answers; the suite drops them.
    return ";" not in str(row.get("answer", ""))


def _tabmwp_question(row: dict[str, Any]) -> str:
    title = row.get("table_title")
    title_str = f'regarding "{title}" ' if title else ""
    question = f"Read the following table {title_str}and answer a question:\n{row['table']}\n{row['question']}"
    choices = row.get("choices")
    if choices:
        question += f" Please select from the following options: {choices}"
    return question


@dataclass(frozen=True)
class BenchmarkSpec:
    """Where a benchmark lives on the hub and how its rows become `Problem`s.

    Args:
        name: Registry name (the Qwen2.5-Math data name, e.g. "gsm8k", "minerva_math").
        hub_id: Hub dataset id, or None when the benchmark is only distributed as a file (then `local_path`).
        config: Hub config name; a tuple loads and concatenates several configs (MATH's subjects).
        split: Hub split the suite evaluates on (may combine splits, e.g. "train+test").
        question_field: Field holding the question (with `compose`: the main one, for error messages).
        answer_field: Field holding the gold answer (or the solution it is parsed from, see `answer_format`).
        answer_format: "number" (a number, possibly a float like 34.0 or with a unit in parentheses),
            "latex" (LaTeX, surrounding $ stripped), "gsm8k_hash" (text after the last "####"), "boxed" (last
            \\boxed{} of a solution), "choice" (a letter A-E; generations are graded by the letter they pick).
        solution_field: Field holding a reference solution, if any.
        compose: Builds the question from several fields (SVAMP Body + Question, TabMWP table + question).
        required_fields: Fields `compose` needs (checked per row before composing).
        keep: Row filter (ASDiv: drop multi-answer rows, as the suite does).
    """

    name: str
    hub_id: str | None
    config: str | tuple[str, ...] | None
    split: str
    question_field: str
    answer_field: str
    answer_format: AnswerFormat
    solution_field: str | None = None
    compose: Callable[[dict[str, Any]], str] | None = None
    required_fields: tuple[str, ...] = ()
    keep: Callable[[dict[str, Any]], bool] | None = None

    @property
    def fields(self) -> tuple[str, ...]:
        """Fields every row must have."""
        question = self.required_fields if self.compose else (self.question_field,)
        return (*question, self.answer_field)


_MATH_SUBJECTS = (
    "algebra",
    "counting_and_probability",
    "geometry",
    "intermediate_algebra",
    "number_theory",
    "prealgebra",
    "precalculus",
)

# Hub ids are best public knowledge (checked against published loaders where possible); a hub id of None means
# the Qwen2.5-Math repository's `evaluation/data/<name>/test.jsonl` is the only source, in the schema given here.
_SPECS = (
    BenchmarkSpec("gsm8k", "openai/gsm8k", "main", "test", "question", "answer", "gsm8k_hash", "answer"),
    BenchmarkSpec(
        "math", "EleutherAI/hendrycks_math", _MATH_SUBJECTS, "test", "problem", "solution", "boxed", "solution"
    ),
    BenchmarkSpec("math500", "HuggingFaceH4/MATH-500", None, "test", "problem", "answer", "latex", "solution"),
    # The suite evaluates SVAMP on all 1000 problems (train and test concatenated).
    BenchmarkSpec(
        "svamp",
        "ChilleD/SVAMP",
        None,
        "train+test",
        "Question",
        "Answer",
        "number",
        compose=_svamp_question,
        required_fields=("Body", "Question"),
    ),
    BenchmarkSpec(
        "asdiv",
        "EleutherAI/asdiv",
        None,
        "validation",
        "question",
        "answer",
        "number",
        compose=_asdiv_question,
        required_fields=("body", "question"),
        keep=_single_answer,
    ),
    BenchmarkSpec("mawps", None, None, "test", "input", "target", "number"),
    BenchmarkSpec("carp_en", None, None, "test", "content", "answer", "latex"),
    BenchmarkSpec(
        "tabmwp",
        None,
        None,
        "test",
        "question",
        "answer",
        "number",
        "solution",
        compose=_tabmwp_question,
        required_fields=("table", "question"),
    ),
    BenchmarkSpec("minerva_math", "math-ai/minervamath", None, "test", "question", "answer", "latex"),
    BenchmarkSpec(
        "gaokao2023en", "MARIO-Math-Reasoning/Gaokao2023-Math-En", None, "train", "question", "answer", "latex"
    ),
    BenchmarkSpec(
        "olympiadbench",
        "Hothan/OlympiadBench",
        "OE_TO_maths_en_COMP",
        "train",
        "question",
        "final_answer",
        "latex",
        "solution",
    ),
    BenchmarkSpec("college_math", None, None, "test", "question", "answer", "latex"),
    BenchmarkSpec("aime24", "HuggingFaceH4/aime_2024", None, "train", "problem", "answer", "number", "solution"),
    BenchmarkSpec("amc23", "math-ai/amc23", None, "test", "question", "answer", "number"),
)

BENCHMARKS: dict[str, BenchmarkSpec] = {spec.name: spec for spec in _SPECS}

QWEN_MATH_SUITE = (
    "gsm8k",
    "math",
    "svamp",
    "asdiv",
    "mawps",
    "carp_en",
    "tabmwp",
    "minerva_math",
    "gaokao2023en",
    "olympiadbench",
    "college_math",
)
"""The 11 benchmarks of the Qwen2.5-Math evaluation suite that the CFT paper reports."""


def get_benchmark(name: str) -> BenchmarkSpec:
    """The spec registered as `name`. Raises ValueError listing the known benchmarks."""
    if name not in BENCHMARKS:
        raise ConfigError(f"unknown benchmark {name!r}; known benchmarks: {', '.join(sorted(BENCHMARKS))}")
    return BENCHMARKS[name]


# -- answers ------------------------------------------------------------------------------------------------------
_UNIT_IN_PARENS_RE = re.compile(r"^(.*?\S)\s*\([^()]*\)\s*$")
_CHOICE_RE = re.compile(r"answer\s+is\s*:?\s*\(?\s*([A-E])\b", re.IGNORECASE)


def _first(value: Any) -> Any:
    # OlympiadBench stores final answers as a one-element list.
    if isinstance(value, (list, tuple)):
        return value[0] if value else None
    return value


def _number_text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    text = str(value).strip()
    # ASDiv writes units after the number: "9 (apples)".
    m = _UNIT_IN_PARENS_RE.match(text)
    if m and parse_number(m.group(1)) is not None:
        text = m.group(1)
    return text


def parse_gold(value: Any, fmt: AnswerFormat) -> str | None:
    """The gold answer string from a raw field value, or None when it cannot be found."""
    value = _first(value)
    if value is None:
        return None
    if fmt == "number":
        text = _number_text(value)
    elif fmt == "gsm8k_hash":
        text = str(value).rsplit("####", 1)[-1].strip() if "####" in str(value) else ""
        text = text.replace(",", "")
    elif fmt == "boxed":
        text = _boxed_contents(str(value)) or ""
    elif fmt == "choice":
        text = str(value).strip().strip("()").upper()
    else:
        text = str(value).strip().strip("$").strip()
    return text or None


def extract_choice(generation: str) -> str | None:
    """The letter a generation picks: "the answer is (B)" first, then a boxed letter, then the last lone A-E."""
    matches = _CHOICE_RE.findall(generation)
    if matches:
        return matches[-1].upper()
    boxed = _boxed_contents(generation)
    if boxed:
        m = re.fullmatch(r"\(?\s*([A-Ea-e])\s*\)?", boxed.replace("\\text{", "").rstrip("}"))
        if m:
            return m.group(1).upper()
    letters = re.findall(r"\b([A-E])\b", generation)
    return letters[-1] if letters else None


# -- loading ------------------------------------------------------------------------------------------------------
def _read_json_rows(path: str) -> list[dict[str, Any]]:
    """Rows of a .jsonl file (or a .json list of objects) read with the json module."""
    import json

    with open(path, encoding="utf-8") as f:
        if path.lower().endswith(".json"):
            data = json.load(f)
            if not isinstance(data, list):
                raise BenchmarkLoadError(f"benchmark file {path!r}: expected a JSON list of objects")
            return data
        rows = []
        for i, line in enumerate(f):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise BenchmarkLoadError(f"benchmark file {path!r}: row {i} is not valid JSON: {e}") from e
        return rows


def _load_local(path: str) -> list[dict[str, Any]]:
    import datasets

    if not os.path.isfile(path):
        raise BenchmarkLoadError(f"benchmark file {path!r} does not exist")
    lower = path.lower()
    if lower.endswith((".jsonl", ".json")):
        builder = "json"
    elif lower.endswith(".parquet"):
        builder = "parquet"
    else:
        raise BenchmarkLoadError(f"benchmark file {path!r}: expected a .jsonl, .json or .parquet file")
    quiet = not datasets.utils.are_progress_bars_disabled()
    if quiet:
        datasets.utils.disable_progress_bars()
    try:
        return list(datasets.load_dataset(builder, data_files=path, split="train"))
    except Exception as e:  # noqa: BLE001 - any parse failure is the file's fault; say which file
        if builder == "json":
            # Arrow needs one type per column; the suite's files sometimes mix numbers and strings in a field.
            return _read_json_rows(path)
        raise BenchmarkLoadError(f"benchmark file {path!r} could not be read as {builder}: {e}") from e
    finally:
        if quiet:
            datasets.utils.enable_progress_bars()


def _load_hub(spec: BenchmarkSpec, split: str) -> Any:
    import datasets

    hint = (
        f"pass local_path= a .jsonl/.json/.parquet copy (the Qwen2.5-Math repository ships "
        f"evaluation/data/{spec.name}/test.jsonl) with fields {list(spec.fields)}"
    )
    if spec.hub_id is None:
        raise BenchmarkLoadError(f"benchmark {spec.name!r} has no hub copy; {hint}")
    configs = spec.config if isinstance(spec.config, tuple) else (spec.config,)
    try:
        parts = [datasets.load_dataset(spec.hub_id, c, split=split) for c in configs]
    except Exception as e:  # noqa: BLE001 - offline, missing, or gated: all are fixed the same way
        raise BenchmarkLoadError(
            f"benchmark {spec.name!r}: could not load {spec.hub_id!r} (split {split!r}) from the hub "
            f"(offline or unreachable?): {type(e).__name__}: {e}. Alternatively {hint}"
        ) from e
    return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)


class BenchmarkTask(Task):
    """A hub math benchmark as a `Task`: its test problems, gold answers and grading.

    Args:
        name: Benchmark name, one of `cft.tasks.benchmarks.BENCHMARKS` (e.g. "gsm8k", "math", "svamp").
        local_path: A .jsonl/.json/.parquet file in the benchmark's schema, instead of the hub (offline use).
        split: Split name; "test" means the split the evaluation suite uses (e.g. SVAMP's train+test), any other
            value is passed to the hub loader as is.
        limit: Keep only the first N problems (0 = all).
    """

    def __init__(self, name: str, local_path: str | None = None, split: str = "test", limit: int = 0) -> None:
        self.spec = get_benchmark(name)
        self.name = name
        self.local_path = local_path
        self.split = split
        self.limit = limit
        if limit < 0:
            raise ConfigError(f"benchmark {name!r}: limit={limit}, expected >= 0 (0 = all)")
        self._cache: list[Problem] | None = None

    @property
    def splits(self) -> tuple[str, ...]:
        return (self.split,)

    def __repr__(self) -> str:
        return f"BenchmarkTask(name={self.name!r}, local_path={self.local_path!r}, split={self.split!r})"

    def problems(self, split: str | None = None) -> list[Problem]:
        """The benchmark's problems in file order. `split` must be None or this task's split."""
        if split not in (None, self.split):
            raise ConfigError(f"benchmark {self.name!r} has split {self.split!r} only, got {split!r}")
        if self._cache is None:
            self._cache = self._load()
        return self._cache

    def _load(self) -> list[Problem]:
        spec = self.spec
        if self.local_path:
            rows, where = _load_local(self.local_path), repr(self.local_path)
        else:
            hub_split = spec.split if self.split == "test" else self.split
            rows, where = _load_hub(spec, hub_split), f"{spec.hub_id} split {hub_split!r}"
        problems: list[Problem] = []
        for index, row in enumerate(rows):
            if spec.keep is not None and not spec.keep(row):
                continue
            for field in spec.fields:
                if row.get(field) is None:
                    raise BenchmarkLoadError(
                        f"benchmark {self.name!r} file {where}: row {index} has no field {field!r} "
                        f"(rows of {self.name!r} need fields {list(spec.fields)}; this row has {sorted(k for k, v in row.items() if v is not None)})"
                    )
            question = spec.compose(row) if spec.compose else str(row[spec.question_field]).strip()
            answer = parse_gold(row[spec.answer_field], spec.answer_format)
            if answer is None:
                raise BenchmarkLoadError(
                    f"benchmark {self.name!r} file {where}: row {index} field {spec.answer_field!r} holds no "
                    f"{spec.answer_format} answer: {str(row[spec.answer_field])[:200]!r}"
                )
            solution = row.get(spec.solution_field) if spec.solution_field else None
            if isinstance(solution, (list, tuple)):
                solution = "\n".join(str(s) for s in solution)
            problems.append(
                Problem(
                    id=f"{self.name}/{index:06d}",
                    question=question,
                    answer=answer,
                    solution=str(solution) if solution is not None else None,
                )
            )
            if self.limit and len(problems) >= self.limit:
                break
        return problems

    def extract_answer(self, generation: str) -> str | None:
        if self.spec.answer_format == "choice":
            return extract_choice(generation)
        return super().extract_answer(generation)

    def grade(self, generation: str, answer: str) -> bool:
        if self.spec.answer_format == "choice":
            return extract_choice(generation) == answer.strip().strip("()").upper()
        return super().grade(generation, answer)


def benchmark_factories() -> dict[str, Callable[..., Task]]:
    """`{name: factory}` for `cft.tasks.TASKS`, so `get_task("gsm8k", local_path=...)` builds a BenchmarkTask."""
    return {name: functools.partial(BenchmarkTask, name) for name in BENCHMARKS}
