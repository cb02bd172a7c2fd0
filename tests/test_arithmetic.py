"""The synthetic arithmetic world: determinism, correct solutions, disjoint splits, the harder split."""

from __future__ import annotations

import re
from fractions import Fraction

import pytest

from cft.tasks import TASKS, ArithmeticTask, get_task

SMALL = dict(n_pretrain=300, n_train=100, n_val=30, n_test=50, n_test_hard=50)
_STEP = re.compile(r"(-?\d+) ([-+*/]) (\(-\d+\)|\d+) = (-?\d+)")


def _apply(a: int, op: str, b: int) -> Fraction:
    if op == "/":
        return Fraction(a, b)
    return Fraction({"+": a + b, "-": a - b, "*": a * b}[op])


def _evaluate(expression: str) -> Fraction:
    """Standard precedence with exact rationals, written independently of the generator."""
    tokens = re.findall(r"\(-\d+\)|\d+|[-+*/]", expression)
    values = [Fraction(int(t.strip("()"))) for t in tokens[::2]]
    ops = tokens[1::2]
    terms, signs = [values[0]], []
    for op, v in zip(ops, values[1:], strict=True):
        if op == "*":
            terms[-1] *= v
        elif op == "/":
            terms[-1] /= v
        else:
            signs.append(op)
            terms.append(v)
    total = terms[0]
    for sign, v in zip(signs, terms[1:], strict=True):
        total = total + v if sign == "+" else total - v
    return total


def _all(task: ArithmeticTask) -> dict[str, list]:
    return {split: task.problems(split) for split in task.splits}


def test_same_seed_same_problems_different_seed_different() -> None:
    a, b = _all(ArithmeticTask(seed=3, **SMALL)), _all(ArithmeticTask(seed=3, **SMALL))
    assert a == b
    c = _all(ArithmeticTask(seed=4, **SMALL))
    assert [p.question for p in a["train"]] != [p.question for p in c["train"]]


def test_split_order_does_not_matter() -> None:
    """Asking for test first must give the same test as asking for every split in order."""
    direct = ArithmeticTask(seed=1, **SMALL).problems("test")
    assert direct == _all(ArithmeticTask(seed=1, **SMALL))["test"]


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"operators": "+-*/", "min_steps": 1, "max_steps": 4},
        {"min_operand": -9, "max_operand": 9, "operators": "-*/"},
        {"word_problems": 1.0, "operators": "+-*/"},
    ],
)
def test_every_solution_line_is_right(kwargs: dict) -> None:
    task = ArithmeticTask(**{**SMALL, **kwargs})
    for problems in _all(task).values():
        for p in problems:
            *steps, last = p.solution.split("\n")
            assert last == f"#### {p.answer}", p
            assert p.solution.endswith(f"#### {p.answer}")
            for line in steps:
                m = _STEP.fullmatch(line)
                assert m, f"{p.id}: malformed step {line!r}"
                a, op, b, result = int(m[1]), m[2], int(m[3].strip("()")), int(m[4])
                assert _apply(a, op, b) == result, f"{p.id}: {line!r}"
            assert int(p.answer) == int(steps[-1].split(" = ")[1])
            if p.question.startswith("Compute "):
                assert _evaluate(p.question.removeprefix("Compute ").removesuffix(".")) == int(p.answer)
            assert task.grade(p.solution, p.answer)


def test_splits_are_disjoint_and_sized() -> None:
    task = ArithmeticTask(**SMALL)
    problems = _all(task)
    questions = {split: {p.question for p in ps} for split, ps in problems.items()}
    for split, ps in problems.items():
        assert len(ps) == SMALL[f"n_{split}"]
        assert len(questions[split]) == len(ps), f"duplicates inside {split}"
        assert all(p.id == f"arithmetic/{split}/{i:06d}" for i, p in enumerate(ps))
    splits = list(questions)
    for i, s in enumerate(splits):
        for t in splits[i + 1 :]:
            assert not questions[s] & questions[t], f"{s} and {t} share questions"


def test_test_hard_is_harder() -> None:
    task = ArithmeticTask(**SMALL)

    def stats(split: str) -> tuple[float, int]:
        ps = task.problems(split)
        steps = sum(p.solution.count("\n") for p in ps) / len(ps)
        biggest = max(int(n) for p in ps for n in re.findall(r"\d+", p.question))
        return steps, biggest

    (steps, biggest), (hard_steps, hard_biggest) = stats("test"), stats("test_hard")
    assert hard_steps > steps
    assert biggest <= 20 < hard_biggest <= 50


def test_word_problems() -> None:
    words = ArithmeticTask(word_problems=1.0, **SMALL).problems("train")
    assert all(not p.question.startswith("Compute") and p.question.endswith("have now?") for p in words)
    plain = ArithmeticTask(**SMALL).problems("train")
    assert all(p.question.startswith("Compute ") for p in plain)
    mixed = ArithmeticTask(word_problems=0.5, **SMALL).problems("train")
    n_words = sum(not p.question.startswith("Compute") for p in mixed)
    assert 20 < n_words < 80


def test_unknown_split_and_bad_config() -> None:
    task = ArithmeticTask(**SMALL)
    with pytest.raises(ValueError, match="test_hard"):
        task.problems("dev")
    with pytest.raises(ValueError, match="operators"):
        ArithmeticTask(operators="+^")
    with pytest.raises(ValueError, match=r"word_problems=1.5: expected a fraction"):
        ArithmeticTask(word_problems=1.5)
    with pytest.raises(ValueError, match="distinct problems"):
        ArithmeticTask(max_operand=1, min_steps=1, max_steps=1, **SMALL).problems("train")


def test_registry_and_corpus() -> None:
    assert TASKS["arithmetic"] is ArithmeticTask
    task = get_task("arithmetic", seed=2, **SMALL)
    assert isinstance(task, ArithmeticTask) and task.seed == 2
    with pytest.raises(ValueError, match="arithmetic"):
        get_task("nope")
    corpus = list(task.corpus())
    assert len(corpus) == SMALL["n_pretrain"] + SMALL["n_train"]
    assert corpus[0].startswith("Question: Compute ") and "\nAnswer:\n" in corpus[0]
