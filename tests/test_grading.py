"""Answer extraction and grading: numbers, LaTeX, GSM8K markers, junk, and grading off the main thread."""

from __future__ import annotations

import threading

import pytest

from cft.tasks.grading import extract_answer, grade_answer, normalize_number, parse_number


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so the result is \\boxed{42}.", "42"),
        ("\\boxed{1} then finally \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("\\boxed{\\sqrt{\\frac{3}{4}}} and more", "\\sqrt{\\frac{3}{4}}"),
        ("7 * 3 = 21\n12 + 21 = 33\n#### 33", "33"),
        ("#### 5\nthen again\n#### 1,234", "1,234"),
        ("The answer is 42.", "42"),
        ("so THE ANSWER IS $-3.5$.", "-3.5"),
        ("The answer is 42 apples.", "42"),
        ("I think it's 12, no wait, 3/4", "3/4"),
        ("a total of 1,234 dollars", "1,234"),
        ("it drops to -7 degrees", "-7"),
        ("5-3", "3"),
        ("value 2.75.", "2.75"),
        ("\\boxed{7} was a guess; the truncated \\boxed{\\frac{1", "7"),
    ],
)
def test_extract_answer(text: str, expected: str) -> None:
    assert extract_answer(text) == expected


@pytest.mark.parametrize("text", ["", "no numbers here at all", "\\boxed{}", "####"])
def test_extract_answer_none(text: str) -> None:
    assert extract_answer(text) is None


@pytest.mark.parametrize(
    ("pred", "gold"),
    [
        ("42", "42"),
        ("42.0", "42"),
        ("0.5", "1/2"),
        ("1/2", "0.5"),
        ("-3", "-3.0"),
        ("1,234", "1234"),
        ("1,000", "1000"),
        ("$5", "5"),
        ("5.", "5"),
        ("0.5", "\\frac{1}{2}"),
        ("\\frac{1}{2}", "0.5"),
        ("\\dfrac{3}{4}", "0.75"),
        ("2\\sqrt{2}", "\\sqrt{8}"),
        ("x + 1", "1 + x"),
    ],
)
def test_grade_equal(pred: str, gold: str) -> None:
    assert grade_answer(pred, gold)


@pytest.mark.parametrize(
    ("pred", "gold"),
    [
        ("41", "42"),
        ("-3", "3"),
        ("0.333", "1/3"),
        ("1,235", "1234"),
        ("junk", "42"),
        ("", "42"),
        ("42", ""),
        ("x + 2", "x + 1"),
        ("1/0", "1"),
        ("9" * 2000, "9"),
    ],
)
def test_grade_different_or_junk(pred: str, gold: str) -> None:
    assert not grade_answer(pred, gold)


def test_extract_then_grade_boxed_fraction() -> None:
    assert grade_answer(extract_answer("so \\boxed{\\frac{1}{2}}"), "0.5")


def test_normalize_and_parse_number() -> None:
    assert normalize_number(" $1,234. ") == "1234"
    assert parse_number("1,234.5") == parse_number("2469/2")
    assert parse_number("-\\frac{1}{4}") == parse_number("-0.25")
    assert parse_number("1,2") is None
    assert parse_number("x") is None


def test_grading_in_worker_thread() -> None:
    """math-verify's signal-based timeout fails off the main thread; grading must still answer, and fast."""
    results: dict[str, object] = {}

    def work() -> None:
        try:
            results["latex"] = grade_answer("\\frac{1}{2}", "\\dfrac{2}{4}")
            results["symbolic"] = grade_answer("2\\sqrt{2}", "\\sqrt{8}")
            results["wrong"] = grade_answer("x + 2", "x + 1")
            # A power tower would take sympy minutes without a timeout; the guard must refuse it at once.
            results["tower"] = grade_answer("10^{10^{10^{10}}}", "10^{10^{10^{11}}}")
        except BaseException as e:  # reported below: an exception in a thread would otherwise vanish
            results["error"] = e

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive(), "grading hung in a worker thread"
    assert "error" not in results, results.get("error")
    assert results == {"latex": True, "symbolic": True, "wrong": False, "tower": False}
