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


# -- bounded grading: every call returns within a fixed budget, in any thread ------------------------------------
def _timed(fn, *args):
    import time

    start = time.monotonic()
    result = fn(*args)
    return result, time.monotonic() - start


@pytest.mark.parametrize("mode", ["math_verify", "qwen_math"])
@pytest.mark.parametrize(
    "text",
    [
        "\\boxed{" * 150_000,  # ~1 MB of unclosed boxes: was quadratic (30 KB took 6 s)
        "\\boxed$" * 150_000,
        ".$" * 500_000,
        "the answer is " + "1," * 500_000,
        "9" * 1_000_000 + " apples",
    ],
)
def test_extraction_is_linear_on_adversarial_text(text: str, mode: str) -> None:
    from cft.tasks.graders import extract

    (answer, rule), seconds = _timed(extract, text, mode)
    assert seconds < 2.0, f"{mode} extraction took {seconds:.1f}s on {text[:20]!r}..."
    assert answer is None or isinstance(answer, str)
    assert isinstance(rule, str)


def test_clean_is_linear() -> None:
    from cft.tasks.grading import _clean

    result, seconds = _timed(_clean, "$ " * 500_000 + "x" + ".$" * 500_000)
    assert result == "x" and seconds < 2.0
    assert _clean(" $ 3.5. $ ") == "3.5"


@pytest.mark.parametrize(
    ("pred", "gold"),
    [
        ("2^{50000 \\cdot 50000}", "2^{2500000000}"),  # was 19 s in a worker thread
        ("\\Gamma(10^{6})", "1"),  # was 8 s
        ("{" * 400 + "1" + "}" * 400, "2"),  # was 9 s
        ("10^{10^{10^{10}}}", "10^{10^{10^{11}}}"),
        ("(10^{5})!", "1"),
    ],
)
def test_explosive_expressions_grade_false_fast_off_the_main_thread(pred: str, gold: str) -> None:
    from cft.tasks.graders import answers_equal

    results: dict[str, object] = {}

    def work() -> None:
        for mode in ("math_verify", "qwen_math"):
            results[mode] = _timed(answers_equal, pred, gold, mode)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive()
    for mode in ("math_verify", "qwen_math"):
        verdict, seconds = results[mode]
        assert verdict is False and seconds < 2.0, (mode, verdict, seconds)


def test_symbolic_check_past_its_deadline_is_killed_and_the_worker_recovers(monkeypatch) -> None:
    """The process-level bound: an expression the guards let through but sympy cannot finish (minutes) is cut at
    the deadline, graded False, and the next check gets a fresh worker."""
    import cft.tasks.grading as grading

    monkeypatch.setattr(grading, "_VERDICTS", type(grading._VERDICTS)())  # every check below reaches the worker
    assert grading.symbolic_equal("x+1", "1+x")  # the worker is up
    monkeypatch.setattr(grading, "SYMBOLIC_TIMEOUT_S", 0.5)
    assert not grading.too_expensive("\\sin(99999^{99999})")
    verdict, seconds = _timed(grading.symbolic_equal, "\\sin(99999^{99999})", "0.5", True)
    assert verdict is False and seconds < 2.0
    assert grading.grade_answer("2\\sqrt{2}", "\\sqrt{8}")  # restarted


@pytest.mark.parametrize("pred", [None, 3, 3.0, ["3"], {"a": 1}, b"3"])
def test_non_string_answers_grade_false(pred) -> None:
    from cft.tasks.graders import answers_equal, extract

    assert grade_answer(pred, "3") is False
    assert answers_equal(pred, "3", "qwen_math") is False
    assert grade_answer("3", pred) is False
    assert extract(pred) == (None, "none")
    assert extract(pred, "qwen_math") == (None, "none")


# Degenerate rollout answers (what a model's "#### ..." line holds when it derails) and ordinary ones, each against
# numeric golds, some of them equal by math-verify only ("2\x03\x03" reads as 2).
_FAST_PATH_CASES = [
    (pred, gold)
    for pred in [
        "::::::",
        "\x03\x03\x03",
        "\x15\x15",
        "\ufffd\ufffd\ufffd",
        "- -\ufffd\ufffd",
        "-\ufffd",
        "()",
        "{}",
        "!",
        ".",
        "$$",
        "2\x03\x03\x03",
        "-1\ufffd\ufffd",
        "22\x03",
        "lololo",
        "ararar!!",
        "\\frac{4}{2}",
        "\\pi",
        "2.0",
        "x",
        "\u00bd",
        "\u0663",
    ]
    for gold in ["2", "-1", "0", "1/2"]
]


def test_fast_paths_give_the_workers_verdicts(monkeypatch) -> None:
    """The verdict cache and the no-math-content shortcut change no verdict: each case grades as the worker
    itself answers (asked directly, no cache), and a repeated answer does not reach the worker again."""
    import cft.tasks.grading as grading

    monkeypatch.setattr(grading, "_VERDICTS", type(grading._VERDICTS)())
    expected = {}
    for pred, gold in _FAST_PATH_CASES:
        p, g = parse_number(pred), parse_number(gold)
        if p is not None and g is not None:
            expected[pred, gold] = p == g
        else:
            verdict = grading._WORKER.ask("verify", pred, gold, grading.SYMBOLIC_TIMEOUT_S)
            assert verdict is not None, (pred, gold)
            expected[pred, gold] = verdict
    assert expected["2\x03\x03\x03", "2"] and expected["-1\ufffd\ufffd", "-1"]  # the shortcut must not catch these

    asked = []
    ask = grading._WORKER.ask
    monkeypatch.setattr(grading._WORKER, "ask", lambda *a: asked.append(a[1:3]) or ask(*a))
    for _ in range(2):
        assert {c: grade_answer(*c) for c in _FAST_PATH_CASES} == expected
    punctuation_only = {c for c in _FAST_PATH_CASES if not grading._MATH_CONTENT_RE.search(c[0])}
    assert len(punctuation_only) == 11 * 4
    assert not punctuation_only & set(asked)  # decided without math-verify
    assert len(asked) == len(set(asked))  # the second round came from the cache
