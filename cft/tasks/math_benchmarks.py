"""Registry of hub math benchmarks (the Qwen2.5-Math evaluation suite and a few more) and `BenchmarkTask`.

Field names, gold answers and question composition follow the Qwen2.5-Math evaluation harness (`evaluation/parser.py`:
`parse_question`, `parse_ground_truth`; `data_loader.py`), including its suffixes " (Yes or No)" / " (True or False)"
for questions whose gold is one of those words. Hub ids are the public copies in common use; the harness itself
reads `evaluation/data/<name>/test.jsonl`, so for benchmarks without a hub copy (and for offline machines) pass
`local_path` to such a file (`.jsonl` with one JSON object per line, a `.json` list, or `.parquet`), in the
harness's schema (`BenchmarkSpec.fields`, or `local_fields` where the harness's file differs from the hub copy).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from cft.errors import BenchmarkLoadError, ConfigError, DataError
from cft.io import read_json_rows
from cft.tasks.base import Problem, Task
from cft.tasks.graders import answers_equal, extract
from cft.tasks.grading import GRADING_MODES, GradingMode, _boxed_contents, parse_number

__all__ = [
    "BENCHMARKS",
    "QWEN_MATH_SUITE",
    "BenchmarkSpec",
    "BenchmarkTask",
    "benchmark_factories",
    "get_benchmark",
]

AnswerFormat = Literal["number", "latex", "latex_ends", "gsm8k_hash", "boxed", "choice", "asdiv", "tabmwp"]


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
            "latex" (LaTeX, every $ removed), "latex_ends" (only the $ at either end removed: OlympiadBench,
            whose answers keep inner "$b$", which matters to the harness's unit-word step),
            "gsm8k_hash" (text after the last "####", thousands commas kept as the harness keeps them), "boxed" (last
            \\boxed{} of a solution), "choice" (a letter A-E; generations are graded by the letter they pick),
            "asdiv" (parenthesised units removed), "tabmwp" (numbers by the row's `ans_type`: "3/4" -> 0.75,
            "1,000" -> 1000, "5%" -> 0.05; text answers as written).
        solution_field: Field holding a reference solution, if any.
        compose: Builds the question from several fields (SVAMP Body + Question, TabMWP table + question).
        required_fields: Fields `compose` needs (checked per row before composing).
        keep: Row filter (ASDiv: drop multi-answer rows, as the suite does).
        local_fields: `(question_field, answer_field, answer_format)` of the harness's own file where it differs
            from the hub copy (Minerva-Math: problem/solution, gold = last \\boxed of the solution).
        harness_count: Problems in the harness's `evaluation/data/<name>/test.jsonl` (None: not checked here).
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
    local_fields: tuple[str, str, AnswerFormat] | None = None
    harness_count: int | None = None

    @property
    def fields(self) -> tuple[str, ...]:
        """Fields every row must have."""
        question = self.required_fields if self.compose else (self.question_field,)
        return (*question, self.answer_field)

    def for_local_file(self) -> BenchmarkSpec:
        """This spec as it reads the harness's own file (`local_fields` applied)."""
        if self.local_fields is None:
            return self
        question, answer, fmt = self.local_fields
        return dataclasses.replace(self, question_field=question, answer_field=answer, answer_format=fmt)


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
    BenchmarkSpec(
        "gsm8k", "openai/gsm8k", "main", "test", "question", "answer", "gsm8k_hash", "answer", harness_count=1319
    ),
    # The harness's `math` is the full 5,000-problem MATH test set (its data/math/test.jsonl: problem, level,
    # type, solution), which is what the CFT paper's table reports; MATH-500 is the separate `math500`.
    BenchmarkSpec(
        "math",
        "EleutherAI/hendrycks_math",
        _MATH_SUBJECTS,
        "test",
        "problem",
        "solution",
        "boxed",
        "solution",
        harness_count=5000,
    ),
    BenchmarkSpec(
        "math500", "HuggingFaceH4/MATH-500", None, "test", "problem", "answer", "latex", "solution", harness_count=500
    ),
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
        harness_count=1000,
    ),
    BenchmarkSpec(
        "asdiv",
        "EleutherAI/asdiv",
        None,
        "validation",
        "question",
        "answer",
        "asdiv",
        compose=_asdiv_question,
        required_fields=("body", "question"),
        keep=_single_answer,
        harness_count=2215,
    ),
    BenchmarkSpec("mawps", None, None, "test", "input", "target", "number", harness_count=2065),
    BenchmarkSpec("carp_en", None, None, "test", "content", "answer", "latex", "steps", harness_count=976),
    # The harness's tabmwp file is TabMWP's 1,000-problem test1k subset.
    BenchmarkSpec(
        "tabmwp",
        None,
        None,
        "test",
        "question",
        "answer",
        "tabmwp",
        "solution",
        compose=_tabmwp_question,
        required_fields=("table", "question"),
        harness_count=1000,
    ),
    # The hub copy has question/answer; the harness's own file has problem/solution (gold: last \boxed).
    BenchmarkSpec(
        "minerva_math",
        "math-ai/minervamath",
        None,
        "test",
        "question",
        "answer",
        "latex",
        local_fields=("problem", "solution", "boxed"),
        harness_count=272,
    ),
    BenchmarkSpec(
        "gaokao2023en",
        "MARIO-Math-Reasoning/Gaokao2023-Math-En",
        None,
        "train",
        "question",
        "answer",
        "latex",
        harness_count=385,
    ),
    # The hub config has 674 problems, the harness's file 675 (same fields): pass local_path for the paper's set.
    BenchmarkSpec(
        "olympiadbench",
        "Hothan/OlympiadBench",
        "OE_TO_maths_en_COMP",
        "train",
        "question",
        "final_answer",
        "latex_ends",
        "solution",
        harness_count=675,
    ),
    BenchmarkSpec("college_math", None, None, "test", "question", "answer", "latex", harness_count=2818),
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


def _tabmwp_number(text: str) -> str:
    # The harness turns TabMWP's numeric answers into floats: "3/4" -> 0.75, "1,000" -> 1000.0, "5%" -> 0.05.
    if "/" in text:
        numerator, denominator = text.split("/", 1)
        value = int(numerator) / int(denominator)
    elif "," in text:
        value = float(text.replace(",", ""))
    elif "%" in text:
        value = float(text.split("%", 1)[0]) / 100
    else:
        value = float(text)
    return _number_text(value)


def parse_gold(value: Any, fmt: AnswerFormat, row: dict[str, Any] | None = None) -> str | None:
    """The gold answer string from a raw field value (and its row, for TabMWP's `ans_type`), or None when it
    cannot be found."""
    value = _first(value)
    if value is None:
        return None
    if fmt == "number":
        text = _number_text(value)
    elif fmt == "gsm8k_hash":
        text = str(value).rsplit("####", 1)[-1].strip() if "####" in str(value) else ""
    elif fmt == "boxed":
        text = _boxed_contents(str(value)) or ""
    elif fmt == "choice":
        text = str(value).strip().strip("()").upper()
    elif fmt == "asdiv":
        # "9 (apples)" -> "9": the harness deletes every parenthesised group.
        text = re.sub(r"\(.*?\)", "", str(value)).strip()
    elif fmt == "latex_ends":
        return str(value).strip("$")
    elif fmt == "tabmwp":
        text = str(value).strip()
        if (row or {}).get("ans_type") in ("integer_number", "decimal_number"):
            try:
                text = _tabmwp_number(text)
            except (ValueError, ZeroDivisionError):
                return None
    else:
        text = _number_text(value) if isinstance(value, (int, float)) else str(value).replace("$", "").strip()
        # The harness keeps the two Gaokao2023-En problems whose gold is empty (it counts 385), so do we.
        return text
    return text or None


def boolean_suffix(gold: str) -> str:
    """What the harness appends to a question whose gold answer is a yes/no or true/false word."""
    from cft.tasks.qwen_math import normalize

    word = normalize(gold).lower()
    if word in ("true", "false"):
        return " (True or False)"
    if word in ("yes", "no"):
        return " (Yes or No)"
    return ""


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
Row = tuple[str, dict[str, Any]]
"""A row and where it is, for error messages ("line 12", "item 3", "row 7")."""


def _read_json_rows(path: str) -> list[Row]:
    try:
        return read_json_rows(path)
    except DataError as e:
        raise BenchmarkLoadError(f"benchmark file {e}") from e


def _load_local(path: str) -> list[Row]:
    """The rows of a local benchmark file, each with its line (.jsonl), item (.json) or row (.parquet) number."""
    if not os.path.isfile(path):
        raise BenchmarkLoadError(f"benchmark file {path!r} does not exist")
    lower = path.lower()
    # The json module, not Arrow: the harness's files mix numbers and strings in one field, and errors need lines.
    if lower.endswith((".jsonl", ".json")):
        rows = _read_json_rows(path)
    elif lower.endswith(".parquet"):
        import pandas as pd

        try:
            frame = pd.read_parquet(path)
        except Exception as e:  # noqa: BLE001 - any parse failure is the file's fault; say which file
            raise BenchmarkLoadError(f"benchmark file {path!r} could not be read as parquet: {e}") from e
        rows = [(f"row {i}", {k: _plain(v) for k, v in r.items()}) for i, r in enumerate(frame.to_dict("records"))]
    else:
        raise BenchmarkLoadError(f"benchmark file {path!r}: expected a .jsonl, .json or .parquet file")
    if not rows:
        raise BenchmarkLoadError(f"benchmark file {path!r} has no rows")
    return rows


def _plain(value: Any) -> Any:
    # Parquet gives numpy arrays for list columns and NaN for missing values; rows should look like JSON.
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, float) and value != value:
        return None
    return value


def _load_hub(spec: BenchmarkSpec, split: str) -> list[Row]:
    import datasets

    hint = (
        f"pass local_path= a .jsonl/.json/.parquet copy (the Qwen2.5-Math repository ships "
        f"evaluation/data/{spec.name}/test.jsonl) with fields {list(spec.for_local_file().fields)}"
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
    rows = parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
    return [(f"row {i}", row) for i, row in enumerate(rows)]


_QUESTION_KEYS = ("question", "problem", "Question", "input")


class BenchmarkTask(Task):
    """A hub math benchmark as a `Task`: its test problems, gold answers and grading.

    Args:
        name: Benchmark name, one of `cft.tasks.math_benchmarks.BENCHMARKS` (e.g. "gsm8k", "math", "svamp").
        local_path: A .jsonl/.json/.parquet file in the benchmark's schema, instead of the hub (offline use).
        split: Split name; "test" means the split the evaluation suite uses (e.g. SVAMP's train+test), any other
            value is passed to the hub loader as is.
        limit: Keep only the first N problems (0 = all).
        grading: "qwen_math" (the Qwen2.5-Math harness's extraction and equivalence, as the CFT paper's numbers)
            or "math_verify" (exact numbers, then math-verify).
    """

    def __init__(
        self,
        name: str,
        local_path: str | None = None,
        split: str = "test",
        limit: int = 0,
        grading: GradingMode = "qwen_math",
    ) -> None:
        self.spec = get_benchmark(name)
        self.name = name
        self.local_path = local_path
        self.split = split
        self.limit = limit
        if limit < 0:
            raise ConfigError(f"benchmark {name!r}: limit={limit}, expected >= 0 (0 = all)")
        if grading not in GRADING_MODES:
            raise ConfigError(f"benchmark {name!r}: grading={grading!r}, expected one of {list(GRADING_MODES)}")
        self.grading = grading
        self._cache: list[Problem] | None = None

    @property
    def splits(self) -> tuple[str, ...]:
        return (self.split,)

    def __repr__(self) -> str:
        return (
            f"BenchmarkTask(name={self.name!r}, local_path={self.local_path!r}, split={self.split!r}, "
            f"grading={self.grading!r})"
        )

    def problems(self, split: str | None = None) -> list[Problem]:
        """The benchmark's problems in file order. `split` must be None or this task's split."""
        if split not in (None, self.split):
            raise ConfigError(f"benchmark {self.name!r} has split {self.split!r} only, got {split!r}")
        if self._cache is None:
            self._cache = self._load()
        return self._cache

    def _question(self, spec: BenchmarkSpec, row: dict[str, Any]) -> str | None:
        if spec.compose:
            return spec.compose(row)
        # As the harness: the spec's field, else the first of its usual question fields that the row has.
        for key in (spec.question_field, *_QUESTION_KEYS):
            if row.get(key) is not None:
                return str(row[key])
        return None

    def _load(self) -> list[Problem]:
        if self.local_path:
            spec, where = self.spec.for_local_file(), f"file {self.local_path!r}"
            rows = _load_local(self.local_path)
        else:
            spec = self.spec
            hub_split = spec.split if self.split == "test" else self.split
            rows, where = _load_hub(spec, hub_split), f"{spec.hub_id} split {hub_split!r}"
        problems: list[Problem] = []
        for index, (position, row) in enumerate(rows):
            if spec.keep is not None and not spec.keep(row):
                continue
            required = spec.required_fields if spec.compose else ()
            for field in (*required, spec.answer_field):
                if row.get(field) is None:
                    present = sorted(k for k, v in row.items() if v is not None)
                    raise BenchmarkLoadError(
                        f"benchmark {self.name!r} {where} {position}: no field {field!r} (rows of {self.name!r} "
                        f"need fields {list(spec.fields)}; this row has {present})"
                    )
            question = self._question(spec, row)
            if question is None:
                raise BenchmarkLoadError(
                    f"benchmark {self.name!r} {where} {position}: no field {spec.question_field!r} (nor any of "
                    f"{list(_QUESTION_KEYS)}); this row has {sorted(row)}"
                )
            answer = parse_gold(row[spec.answer_field], spec.answer_format, row)
            if answer is None:
                raise BenchmarkLoadError(
                    f"benchmark {self.name!r} {where} {position}: field {spec.answer_field!r} holds no "
                    f"{spec.answer_format} answer: {str(row[spec.answer_field])[:200]!r}"
                )
            solution = row.get(spec.solution_field) if spec.solution_field else None
            if isinstance(solution, (list, tuple)):
                solution = "\n".join(str(s) for s in solution)
            problems.append(
                Problem(
                    id=f"{self.name}/{index:06d}",
                    question=(question + boolean_suffix(answer)).strip(),
                    answer=answer,
                    solution=str(solution) if solution is not None else None,
                )
            )
            if self.limit and len(problems) >= self.limit:
                break
        if not problems:
            raise BenchmarkLoadError(f"benchmark {self.name!r} {where}: no problems to evaluate")
        return problems

    def extract(self, generation: str) -> tuple[str | None, str]:
        if self.spec.answer_format == "choice":
            letter = extract_choice(generation) if isinstance(generation, str) else None
            return letter, ("choice" if letter else "none")
        return extract(generation, self.grading, self.name)

    def judge(self, generation: str, answer: str) -> tuple[str | None, str, bool]:
        if self.grading == "qwen_math" and self.spec.answer_format != "choice":
            from cft.tasks.qwen_math import qwen_judge

            # The harness's multiple-choice step needs the gold and the whole generation, not only the answer.
            return qwen_judge(generation, answer, self.name)
        extracted, rule = self.extract(generation)
        return extracted, rule, self.answers_equal(extracted, answer)

    def grade(self, generation: str, answer: str) -> bool:
        return self.judge(generation, answer)[2]

    def answers_equal(self, pred: str | None, answer: str) -> bool:
        if pred is None:
            return False
        if self.spec.answer_format == "choice":
            return str(pred).strip().strip("()").upper() == answer.strip().strip("()").upper()
        return answers_equal(pred, answer, self.grading, self.name)


def benchmark_factories() -> dict[str, Callable[..., Task]]:
    """`{name: factory}` for `cft.tasks.TASKS`, so `get_task("gsm8k", local_path=...)` builds a BenchmarkTask."""
    return {name: functools.partial(BenchmarkTask, name) for name in BENCHMARKS}
