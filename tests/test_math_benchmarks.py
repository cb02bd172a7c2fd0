"""Benchmark registry: each benchmark's own schema (3-row fixture files) mapped to Problems, and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cft.errors import BenchmarkLoadError
from cft.tasks import TASKS, BenchmarkTask, get_task
from cft.tasks.math_benchmarks import BENCHMARKS, QWEN_MATH_SUITE, extract_choice, parse_gold

FIXTURES = Path(__file__).parent / "fixtures" / "benchmarks"


def _task(name: str, file: str | None = None, **kwargs) -> BenchmarkTask:
    return BenchmarkTask(name, local_path=str(FIXTURES / (file or f"{name}.jsonl")), **kwargs)


def _assert_gold_grades(task: BenchmarkTask) -> None:
    for p in task.problems():
        assert task.grade(f"Some reasoning.\nThe final answer is $\\boxed{{{p.answer}}}$.", p.answer), p
        assert not task.grade("The final answer is $\\boxed{123456789}$.", p.answer), p


def test_gsm8k_fields_and_hash_answers():
    task = _task("gsm8k")
    problems = task.problems("test")
    assert [p.answer for p in problems] == ["72", "10", "2,700"]  # commas kept, as the harness
    assert problems[0].id == "gsm8k/000000"
    assert problems[0].question.startswith("Natalia sold clips")
    assert problems[0].solution.endswith("#### 72")
    # The reference solution itself grades correct (its own `#### n` line).
    assert all(task.grade(p.solution, p.answer) for p in problems)
    assert task.grade("so 2,700 pens.\n#### 2,700", "2700")
    _assert_gold_grades(task)


def test_math_last_boxed_is_the_answer():
    task = _task("math")
    problems = task.problems()
    assert [p.answer for p in problems] == ["\\frac{5}{6}", "\\sqrt{2}", "10"]
    assert problems[0].question == "What is $\\frac{1}{2} + \\frac{1}{3}$?"
    assert all(task.grade(p.solution, p.answer) for p in problems)
    assert task.grade("So the answer is \\boxed{5/6}.", "\\frac{5}{6}")  # math-verify equivalence
    _assert_gold_grades(task)


def test_svamp_composes_body_and_question():
    task = _task("svamp")
    problems = task.problems()
    assert problems[0].question == (
        "Each pack of dvds costs 76 dollars. If there is a discount of 25 dollars on each pack. "
        "How much do you have to pay to buy each pack?"
    )
    assert problems[1].question == "Dan had 5 marbles. He gave 2 to Mary. How many marbles does Dan have now?"
    assert [p.answer for p in problems] == ["51", "3", "2"]  # floats 51.0 -> "51"
    assert task.grade("76 - 25 = 51.0", "51")
    _assert_gold_grades(task)


def test_tabmwp_composes_table_question_and_choices():
    task = _task("tabmwp")
    problems = task.problems()
    assert problems[0].question == (
        'Read the following table regarding "Fruit" and answer a question:\n'
        "Fruit | Number\napples | 8\npears | 5\nHow many more apples than pears are there?"
    )
    assert problems[1].question.startswith("Read the following table and answer a question:\n")
    assert problems[1].question.endswith("Please select from the following options: ['even', 'odd']")
    assert [p.answer for p in problems] == ["3", "even", "2.5"]  # decimal_number: a float, as the harness
    assert problems[2].solution == "2 x 1.25 = 2.50."
    assert task.grade("2 x 1.25 = 2.5, so the answer is \\boxed{2.5}", "2.50")
    _assert_gold_grades(task)


def test_generic_question_answer_schema():
    task = _task("amc23")
    problems = task.problems()
    assert [p.answer for p in problems] == ["2", "9", "55"]
    assert problems[1].question == "How many positive divisors does 36 have?"
    assert problems[1].solution is None
    _assert_gold_grades(task)


def test_asdiv_strips_units_and_drops_multi_answer_rows():
    task = _task("asdiv")
    problems = task.problems()
    # The "3; 4" row is dropped as in the suite; ids keep the file's row index.
    assert [(p.id, p.answer) for p in problems] == [("asdiv/000000", "9"), ("asdiv/000002", "15")]
    assert problems[0].question == (
        "Seven red apples and two green apples are in the basket. How many apples are in the basket?"
    )
    _assert_gold_grades(task)


def test_olympiadbench_list_answers_and_solutions():
    task = _task("olympiadbench")
    problems = task.problems()
    assert [p.answer for p in problems] == ["23", "\\frac{1}{2}", "-2,2"]
    assert problems[0].solution == "The primes after 20 are 23, 29, ...\nSo the answer is 23."
    _assert_gold_grades(task)


def test_limit_parquet_and_json_list(tmp_path):
    import pandas as pd

    rows = [json.loads(line) for line in (FIXTURES / "gsm8k.jsonl").read_text().splitlines()]
    parquet = tmp_path / "gsm8k.parquet"
    pd.DataFrame(rows).to_parquet(parquet)
    as_json = tmp_path / "gsm8k.json"
    as_json.write_text(json.dumps(rows))
    for path in (parquet, as_json):
        task = BenchmarkTask("gsm8k", local_path=str(path), limit=2)
        assert [p.answer for p in task.problems()] == ["72", "10"]


def test_mixed_type_jsonl_falls_back_to_plain_json(tmp_path):
    path = tmp_path / "college_math.jsonl"
    rows = [{"question": "q1", "answer": 3}, {"question": "q2", "answer": "$\\frac{1}{2}$"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert [p.answer for p in BenchmarkTask("college_math", local_path=str(path)).problems()] == ["3", "\\frac{1}{2}"]


def test_registered_in_tasks_and_cli_class_path():
    assert set(BENCHMARKS) <= set(TASKS)
    assert len(QWEN_MATH_SUITE) == 11 and set(QWEN_MATH_SUITE) <= set(BENCHMARKS)
    task = get_task("svamp", local_path=str(FIXTURES / "svamp.jsonl"))
    assert isinstance(task, BenchmarkTask) and task.name == "svamp"
    assert len(task.problems()) == 3


def test_unknown_benchmark_lists_known_names():
    with pytest.raises(ValueError, match="unknown benchmark 'gsm9k'.*gsm8k.*svamp"):
        BenchmarkTask("gsm9k")


def test_missing_field_names_file_line_and_field():
    task = _task("svamp", "svamp_missing_answer.jsonl")
    with pytest.raises(BenchmarkLoadError, match=r"svamp_missing_answer\.jsonl' line 2: no field 'Answer'"):
        task.problems()
    with pytest.raises(BenchmarkLoadError, match=r"line 1: no field 'Body'"):
        _task("svamp", "gsm8k.jsonl").problems()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"question": "q", "answer": "#### 1"}\n\n{"question": "q2", "answer": \n', r"line 3: not valid JSON"),
        ('{"question": "q", "answer": "#### 1"}\n["q", "a"]\n', r"line 2: expected a JSON object, got list"),
        ('{"question": "q", "answer": "#### 1"}\n{"question": "q2"}\n', r"line 2: no field 'answer'"),
        ('{"question": "q", "answer": "no hashes"}\n', r"line 1: field 'answer' holds no gsm8k_hash answer"),
        ("\n\n", r"has no rows"),
    ],
)
def test_bad_local_file_one_error_with_file_and_line(tmp_path, content, message):
    from cft.errors import CFTError

    path = tmp_path / "gsm8k.jsonl"
    path.write_text(content)
    with pytest.raises(CFTError, match=rf"gsm8k\.jsonl.*{message}"):
        BenchmarkTask("gsm8k", local_path=str(path)).problems()


def test_missing_file_and_wrong_split():
    with pytest.raises(BenchmarkLoadError, match="does not exist"):
        BenchmarkTask("gsm8k", local_path="/nonexistent/gsm8k.jsonl").problems()
    with pytest.raises(ValueError, match="split 'test' only"):
        _task("gsm8k").problems("train")


def test_hub_unreachable_suggests_local_path(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("no internet")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(BenchmarkLoadError, match=r"openai/gsm8k.*offline or unreachable.*local_path"):
        BenchmarkTask("gsm8k").problems()
    with pytest.raises(BenchmarkLoadError, match=r"no hub copy.*local_path.*mawps/test\.jsonl"):
        BenchmarkTask("mawps").problems()


def test_answer_parsing_and_choice_grading():
    assert parse_gold(34.0, "number") == "34"
    assert parse_gold("1.5", "number") == "1.5"
    assert parse_gold("9 (apples)", "number") == "9"
    assert parse_gold("$\\frac{1}{2}$", "latex") == "\\frac{1}{2}"
    assert parse_gold(["$3$"], "latex") == "3"
    assert parse_gold("no hashes here", "gsm8k_hash") is None
    assert parse_gold("(c)", "choice") == "C"
    assert extract_choice("Comparing, the answer is (B).") == "B"
    assert extract_choice("so \\boxed{D}") == "D"
    assert extract_choice("nothing") is None


# -- the Qwen2.5-Math harness's own files (evaluation/data/<name>/test.jsonl), in their schemas ----------------------
def test_minerva_math_harness_file_problem_solution_last_boxed():
    task = _task("minerva_math")
    problems = task.problems()
    # Gold = the last \boxed of the solution (the third solution boxes twice).
    assert [p.answer for p in problems] == ["1.6", "0.25", "1.0"]
    assert problems[1].question == "Compute the number of moles in $8 \\mathrm{~g}$ of oxygen gas ($\\mathrm{O}_2$)."
    assert task.grade("So the diameter is \\boxed{1.6} cm.", "1.6")
    # Minerva keeps units in answers: "1.6 cm" is not stripped to 1.6 (the harness's STRIP_EXCEPTIONS).
    assert not task.grade("The final answer is $1.6 cm$. I hope it is correct.", "1.6")


def test_mawps_carp_en_gaokao_college_math_harness_files():
    assert [p.answer for p in _task("mawps").problems()] == ["43", "20", "10.25"]
    carp = _task("carp_en").problems()
    assert [p.answer for p in carp] == ["4 a ^ { 2 } - b ^ { 2 }", "x < - 2", "x \\neq 4"]
    assert carp[0].question == "Calculate $( 2 a - b ) ( 2 a + b )$ equals to ____?"
    assert carp[0].solution.startswith("By the difference of squares")
    gaokao = _task("gaokao2023en").problems()
    # Every $ removed; the empty gold is kept, as the harness keeps it (it counts 385 problems).
    assert [p.answer for p in gaokao] == ["\\{x|-2\\leq x < 1\\}", "5", ""]
    college = _task("college_math").problems()
    assert [p.answer for p in college] == ["10-4 n", "Yes", "(45,2),(-10,-9)"]
    # A yes/no gold gets the harness's suffix on the question.
    assert college[1].question == "Is the function $f(x)=x^{2}$ continuous at $x=1$? (Yes or No)"
    assert college[0].question == "Simplify: $-10-4(n-5)$"


def test_tabmwp_harness_file_golds_and_boolean_suffix():
    task = _task("tabmwp", "tabmwp_harness.jsonl")
    problems = task.problems()
    # integer_number/decimal_number answers become numbers ("3/4" -> 0.75, "1,250" -> 1250); text stays text.
    assert [p.answer for p in problems] == ["yes", "0.75", "1250"]
    assert problems[0].question == (
        "Read the following table and answer a question:\nbook | $12.00\nmap | $9.50\n"
        "Is the total cost of the books greater than $20.00? Please select from the following options: "
        "['yes', 'no'] (Yes or No)"
    )
    assert task.grade("So the answer is \\boxed{Yes}.", "yes")  # case-insensitive text
    assert task.grade("\\boxed{\\frac{3}{4}}", "0.75")
    assert task.grade("\\boxed{1,250}", "1250")


def test_olympiadbench_harness_schema_and_counts_documented():
    problems = _task("olympiadbench").problems()
    assert [p.answer for p in problems] == ["23", "\\frac{1}{2}", "-2,2"]
    # The harness's file counts: OlympiadBench 675 (the hub config 674), MATH the full 5,000 test problems.
    assert BENCHMARKS["olympiadbench"].harness_count == 675
    assert BENCHMARKS["math"].harness_count == 5000 and BENCHMARKS["math500"].harness_count == 500
    assert "math" in QWEN_MATH_SUITE and "math500" not in QWEN_MATH_SUITE


def test_grading_mode_is_chosen_per_task():
    qwen, exact = _task("gsm8k"), _task("gsm8k", grading="math_verify")
    assert qwen.grading == "qwen_math"
    # The harness treats a percentage and its fraction as one answer; exact rationals do not.
    assert qwen.grade("\\boxed{0.72}", "72") and not exact.grade("\\boxed{0.72}", "72")
    # The harness has no "####" step for its own prompts: the last number decides.
    assert exact.extract("#### 5\nso 6 apples") == ("5", "hashes")
    assert qwen.extract("#### 5\nso 6 apples") == ("6", "last_number")
    with pytest.raises(ValueError, match="grading='exact'"):
        BenchmarkTask("gsm8k", grading="exact")
