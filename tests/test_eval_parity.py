"""Parity with the Qwen2.5-Math harness: hand-written outputs, each with the harness's verdict and the reason
(tests/fixtures/eval_parity.jsonl), graded by our qwen_math mode; docs/eval_parity.md is generated from them."""

from __future__ import annotations

import importlib.util
from collections import Counter
from pathlib import Path

import pytest

from cft.tasks.math_benchmarks import QWEN_MATH_SUITE

REPO = Path(__file__).resolve().parents[1]


def _parity_module():
    spec = importlib.util.spec_from_file_location("eval_parity", REPO / "docs" / "eval_parity.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def graded() -> list[dict]:
    parity = _parity_module()
    return parity.grade_cases(parity.load_cases())


def test_every_benchmark_has_ten_cases_with_reasons(graded):
    counts = Counter(c["benchmark"] for c in graded)
    assert set(counts) == set(QWEN_MATH_SUITE)
    assert min(counts.values()) >= 10, counts
    assert all(c["reason"] and isinstance(c["harness_correct"], bool) for c in graded)
    # Both verdicts occur: the cases are not all easy successes.
    assert {c["harness_correct"] for c in graded} == {True, False}


def test_our_answers_and_verdicts_match_the_harness(graded):
    mismatched = [
        (c["benchmark"], c["case"], c["ours_answer"], c["harness_answer"])
        for c in graded
        if c["ours_answer"] != c["harness_answer"] and "disagreement" not in c
    ]
    assert not mismatched
    wrong = [
        (c["benchmark"], c["case"], c["ours_correct"], c["harness_correct"])
        for c in graded
        if (c["ours_correct"] != c["harness_correct"]) != ("disagreement" in c)
    ]
    # A case marked as a disagreement must still disagree (else the doc's explanation is stale), every other agree.
    assert not wrong


def test_parity_doc_is_up_to_date(graded):
    parity = _parity_module()
    assert (REPO / "docs" / "eval_parity.md").read_text(encoding="utf-8") == parity.render(graded), (
        "docs/eval_parity.md is out of date: run python docs/eval_parity.py"
    )
