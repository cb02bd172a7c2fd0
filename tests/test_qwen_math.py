"""The qwen_math mode's rules one at a time: extraction order, normalisation, equivalence, multiple choice."""

from __future__ import annotations

import pytest

from cft.tasks.qwen_math import extract_qwen, normalize, normalize_gold, qwen_equal, qwen_judge, words_to_number


@pytest.mark.parametrize(
    ("text", "answer", "rule"),
    [
        # Minerva's sentence beats a box; a box beats "the answer is"; that beats "final answer is"; then numbers.
        ("\\boxed{1} The final answer is $2$. I hope it is correct.", "2", "minerva"),
        ("The answer is 3. Checking: \\boxed{4}", "4", "boxed"),
        ("the final answer is 5, so the answer is 6", "6", "answer_is"),
        ("My final answer is 7", "7", "final_answer_is"),
        ("1,234 and then 5,678 apples", "5678", "last_number"),
        ("#### 9\nbut 10", "10", "last_number"),  # no #### rule
        ("nothing here", None, "none"),
        ("\\boxed{\\frac{1}{2", "\\frac{1}{2", "boxed"),  # unbalanced: to the end
        ("THE ANSWER IS 8", "8", "last_number"),  # the trigger is case-sensitive
    ],
)
def test_extraction_order(text, answer, rule):
    assert extract_qwen(text) == (answer, rule)


def test_normalisation_steps():
    assert normalize("\\dfrac{1}{2}") == "\\frac{1}{2}"
    assert normalize("5 \\text{ cm}") == "5"
    assert normalize("30^\\circ") == "30"
    assert normalize("x = 3") == "3"
    assert normalize("3/4") == "\\frac{3}{4}"
    assert normalize("\\frac12") == "\\frac{1}{2}"
    assert normalize("12 apples") == "12"
    assert normalize("12 apples", keep_units=True) == "12apples"
    assert normalize("50\\%") == "50"
    assert normalize("2.000") == "2"
    assert normalize("\\sqrt2") == "\\sqrt{2}"


@pytest.mark.parametrize(
    ("words", "number"),
    [
        ("five", "5"),
        ("twenty-one", "21"),
        ("three hundred twelve", "312"),
        ("two point five", "2.5"),
        ("one thousand two hundred", "1200"),
        ("no number", "no number"),
        ("007", "7"),
    ],
)
def test_number_words(words, number):
    assert words_to_number(words) == number


def test_equivalence_rules():
    assert qwen_equal("0.5", "50")  # a percentage equals its fraction
    assert qwen_equal("5000", "50")
    assert qwen_equal("10.0005", "10")  # relative tolerance 1e-4
    assert not qwen_equal("10.01", "10")
    assert qwen_equal("yes", "Yes")  # case-insensitive text
    assert qwen_equal("(1,2)", "(1, 2)")
    assert qwen_equal("x^2-4x-2=0", "x^{2}-4 x-2=0")  # equations by the difference of their sides
    assert not qwen_equal("", "5")
    assert normalize_gold("x \\neq 4", "carp_en") == "x \\ne 4"  # CARP golds are kept as written


def test_multiple_choice_step_needs_the_generation():
    # A letter gold: a non-letter answer is re-read from the whole text.
    assert qwen_judge("It is option B, worth 2. So \\boxed{2}.", "B") == ("B", "choice", True)
    assert qwen_judge("the answer is (C).", "C")[2]
    # An empty gold is "letters only": any answer without capital A-E letters matches it, as in the harness.
    assert qwen_judge("\\boxed{\\frac{3}{10}}", "")[2]
    assert not qwen_judge("\\boxed{12}", "13")[2]
    assert qwen_judge(None, "1") == (None, "none", False)
