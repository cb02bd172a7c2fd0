"""Evaluation metrics against hand computation."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest

from cft.metrics import answer_key, distinct_answers, distinct_n, maj_at_k, mean_token_entropy, pass_at_k
from cft.tasks.grading import grade_answer


def _pass_at_k_naive(n: int, c: int, k: int) -> float:
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def test_pass_at_k_hand_values():
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)  # C(3,2)/C(5,2) = 3/10
    assert pass_at_k(5, 2, 1) == pytest.approx(2 / 5)
    assert pass_at_k(5, 0, 3) == 0.0
    assert pass_at_k(5, 5, 1) == 1.0
    assert pass_at_k(4, 3, 2) == 1.0  # every pair holds a correct sample
    assert pass_at_k(1, 1, 1) == 1.0


@pytest.mark.parametrize("n,c,k", [(10, 3, 4), (16, 1, 8), (64, 5, 32), (7, 6, 7), (20, 0, 5)])
def test_pass_at_k_matches_combinatorial_formula(n, c, k):
    assert pass_at_k(n, c, k) == pytest.approx(_pass_at_k_naive(n, c, k), abs=1e-12)


def test_pass_at_k_stable_for_large_n():
    # 1 - C(1993, 1000) / C(2000, 1000) = 1 - prod_{i<7} (1000 - i) / (2000 - i), in exact arithmetic
    exact = 1 - math.prod(Fraction(1000 - i, 2000 - i) for i in range(7))
    assert pass_at_k(2000, 7, 1000) == pytest.approx(float(exact), abs=1e-12)
    assert pass_at_k(2000, 7, 1) == pytest.approx(7 / 2000)


def test_pass_at_k_rejects_k_above_n():
    with pytest.raises(ValueError, match=r"k=6.*n=5"):
        pass_at_k(5, 1, 6)
    with pytest.raises(ValueError, match="c=7"):
        pass_at_k(5, 7, 1)


def test_maj_at_k_majority_and_ties():
    answers = ["3", "4", "4", "3", "5"]
    assert maj_at_k(answers, "4", 3, grade_answer) == 1.0  # 4 wins 2-1 among the first three
    # First four: 3 and 4 tie 2-2; the first to appear (3) wins.
    assert maj_at_k(answers, "3", 4, grade_answer) == 1.0
    assert maj_at_k(answers, "4", 4, grade_answer) == 0.0
    assert maj_at_k(answers, "3", 1, grade_answer) == 1.0


def test_maj_at_k_groups_equal_numbers_and_skips_missing():
    answers = [None, "0.5", "7", "1/2", None, "7", "\\frac{1}{2}"]
    # 1/2 appears three times under different spellings, 7 twice.
    assert maj_at_k(answers, "1/2", 7, grade_answer) == 1.0
    assert maj_at_k([None, None], "1", 2, grade_answer) == 0.0
    with pytest.raises(ValueError, match="k=3"):
        maj_at_k(["1", "2"], "1", 3, grade_answer)


def test_distinct_answers_and_keys():
    assert answer_key("1,000") == answer_key("1000")
    assert distinct_answers(["1/2", "0.5", "3", None, "x+1", "x + 1"]) == 3
    assert distinct_answers([None]) == 0


def test_distinct_n_hand_values():
    # unigrams: a b a c -> 3 distinct of 4
    assert distinct_n(["a b a c"], 1) == pytest.approx(3 / 4)
    # bigrams pooled over texts: (a b) (b c) | (a b) (b d) -> 3 distinct of 4
    assert distinct_n(["a b c", "a b d"], 2) == pytest.approx(3 / 4)
    assert distinct_n(["a", ""], 2) == 0.0
    with pytest.raises(ValueError):
        distinct_n(["a"], 0)


def test_mean_token_entropy_weights_by_tokens():
    assert mean_token_entropy([1.0, 3.0]) == pytest.approx(2.0)
    # 1 token at 1.0 and 3 tokens at 3.0 -> (1 + 9) / 4
    assert mean_token_entropy([1.0, 3.0], [1, 3]) == pytest.approx(2.5)
    assert mean_token_entropy([None, 2.0], [5, 1]) == pytest.approx(2.0)
    assert mean_token_entropy([]) == 0.0
    with pytest.raises(ValueError):
        mean_token_entropy([1.0], [1, 2])
