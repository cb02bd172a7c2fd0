"""The embedded synthetic world: multi-step integer arithmetic with step-by-step solutions ending in `#### n`.

Deterministic per (config, split), with a harder out-of-distribution split (`test_hard`) and optional word problems.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from cft.errors import ConfigError
from cft.tasks.base import Problem
from cft.tasks.world import SyntheticWorld

__all__ = ["ArithmeticTask"]

_OPERATORS = "+-*/"

# (name, pronoun); (singular, plural) nouns. Few templates on purpose: the world tests arithmetic, not language.
_NAMES = (("Sam", "He"), ("Mia", "She"), ("Leo", "He"), ("Ava", "She"), ("Omar", "He"), ("Nora", "She"))
_ITEMS = (("apple", "apples"), ("marble", "marbles"), ("sticker", "stickers"), ("coin", "coins"), ("card", "cards"))
_CONTAINERS = (("bag", "bags"), ("box", "boxes"), ("pack", "packs"), ("jar", "jars"))


def _fmt(x: int) -> str:
    """An operand; negatives in parentheses so `3 - (-4)` never reads as a typo."""
    return f"({x})" if x < 0 else str(x)


def _noun(count: int, noun: tuple[str, str]) -> str:
    return noun[0] if count == 1 else noun[1]


class _Expression:
    """A flat expression `operands[0] ops[0] operands[1] ...` evaluated with * and / before + and -."""

    def __init__(self, operands: list[int], ops: list[str]) -> None:
        self.operands = operands
        self.ops = ops

    def text(self) -> str:
        parts = [_fmt(self.operands[0])]
        for op, x in zip(self.ops, self.operands[1:], strict=True):
            parts += [op, _fmt(x)]
        return " ".join(parts)

    def terms(self) -> list[tuple[str, list[int], list[str]]]:
        """Additive terms as (sign, factors, multiplicative ops between the factors)."""
        terms = [("+", [self.operands[0]], [])]
        for op, x in zip(self.ops, self.operands[1:], strict=True):
            if op in "+-":
                terms.append((op, [x], []))
            else:
                terms[-1][1].append(x)
                terms[-1][2].append(op)
        return terms

    def solve(self) -> tuple[list[str], int]:
        """One operation per line, products and quotients first (left to right), then sums; and the value."""
        lines: list[str] = []
        values: list[tuple[str, int]] = []
        for sign, factors, ops in self.terms():
            value = factors[0]
            for op, x in zip(ops, factors[1:], strict=True):
                # The generator only emits exact divisions, so // is exact here.
                result = value * x if op == "*" else value // x
                lines.append(f"{value} {op} {_fmt(x)} = {result}")
                value = result
            values.append((sign, value))
        total = values[0][1]
        for sign, value in values[1:]:
            result = total + value if sign == "+" else total - value
            lines.append(f"{total} {sign} {_fmt(value)} = {result}")
            total = result
        return lines, total


@dataclass(eq=False)
class ArithmeticTask(SyntheticWorld):
    """Synthetic multi-step arithmetic, e.g. "Compute 12 + 7 * 3 - 4." solved as
    "7 * 3 = 21\\n12 + 21 = 33\\n33 - 4 = 29\\n#### 29".

    Splits: `pretrain` (the base model's corpus), `train` (fine-tuning), `val`, `test`, and `test_hard` (bigger
    operands and more steps, out of distribution). No two splits share an expression: each split excludes the
    expressions of the splits before it in that order, so changing an earlier split's size changes later splits.

    Args:
        seed: Seed of the generator; each split draws from its own stream derived from (seed, split).
        min_operand: Smallest operand (negatives allowed; they are shown in parentheses).
        max_operand: Largest operand of the in-distribution splits.
        operators: Operators to draw from, a subset of "+-*/" ("/" only ever gives exact integer division).
        min_steps: Fewest operations per problem (2 operations = 3 operands).
        max_steps: Most operations per problem.
        word_problems: Fraction phrased as a short story instead of "Compute ..." (needs min_operand >= 0).
        hard_max_operand: Largest operand of the `test_hard` split.
        hard_min_steps: Fewest operations per `test_hard` problem.
        hard_max_steps: Most operations per `test_hard` problem.
        n_train: Problems in the `train` split.
        n_val: Problems in the `val` split.
        n_test: Problems in the `test` split.
        n_test_hard: Problems in the `test_hard` split.
        n_pretrain: Problems in the `pretrain` split (the base model's pretraining corpus).
        answer_format: The answer rule annotation grades rollouts by ("hashes": the world's `#### n` line); null for a
            chat model that states its answer in prose (then any rule counts, the last-number fallback included).
    """

    seed: int = 0
    min_operand: int = 0
    max_operand: int = 20
    operators: str = "+-*"
    min_steps: int = 2
    max_steps: int = 2
    word_problems: float = 0.0
    hard_max_operand: int = 50
    hard_min_steps: int = 3
    hard_max_steps: int = 4
    n_train: int = 2000
    n_val: int = 200
    n_test: int = 500
    n_test_hard: int = 500
    n_pretrain: int = 20000
    answer_format: str | None = "hashes"

    # Not a field (no annotation): a class attribute of every arithmetic task.
    name = "arithmetic"

    def __post_init__(self) -> None:
        # The fields above are the YAML schema (jsonargparse reads the generated __init__); checked once, here.
        if self.answer_format not in (None, "hashes", "boxed", "answer_is"):
            raise ConfigError(f"answer_format={self.answer_format!r}: expected 'hashes', 'boxed', 'answer_is' or null")
        if not self.operators or set(self.operators) - set(_OPERATORS):
            raise ConfigError(f"operators={self.operators!r}: expected a non-empty subset of {_OPERATORS!r}")
        if self.min_operand > self.max_operand or self.min_operand > self.hard_max_operand:
            raise ConfigError(
                f"min_operand={self.min_operand} exceeds max_operand={self.max_operand} "
                f"or hard_max_operand={self.hard_max_operand}"
            )
        if not 1 <= self.min_steps <= self.max_steps or not 1 <= self.hard_min_steps <= self.hard_max_steps:
            raise ConfigError(
                f"steps must satisfy 1 <= min <= max: got min_steps={self.min_steps}, max_steps={self.max_steps}, "
                f"hard_min_steps={self.hard_min_steps}, hard_max_steps={self.hard_max_steps}"
            )
        if not 0.0 <= self.word_problems <= 1.0:
            raise ConfigError(f"word_problems={self.word_problems}: expected a fraction in [0, 1]")
        if self.operators == "/" and self.min_operand == self.max_operand == 0:
            raise ConfigError("operators='/' with only the operand 0 gives no valid division")
        self._init_world()

    def _generate(self, split: str) -> list[Problem]:
        cfg = self
        n = getattr(cfg, f"n_{split}")
        hard = split == "test_hard"
        max_operand = cfg.hard_max_operand if hard else cfg.max_operand
        min_steps, max_steps = (cfg.hard_min_steps, cfg.hard_max_steps) if hard else (cfg.min_steps, cfg.max_steps)
        rng = self.split_rng(split)
        problems: list[Problem] = []
        attempts, max_attempts = 0, 50 * n + 1000
        while len(problems) < n:
            attempts += 1
            if attempts > max_attempts:
                raise ConfigError(
                    f"arithmetic split {split!r}: found only {len(problems)} of {n} distinct problems after "
                    f"{max_attempts} draws; widen the operand range or steps, or ask for fewer problems"
                )
            steps = rng.randint(min_steps, max_steps)
            word = cfg.word_problems > 0 and rng.random() < cfg.word_problems and cfg.min_operand >= 0
            expr = self._sample(rng, steps, max_operand, word)
            if expr is None and word:
                word = False
                expr = self._sample(rng, steps, max_operand, word)
            if expr is None:
                continue
            key = expr.text()
            if key in self._seen:
                continue
            self._seen.add(key)
            lines, answer = expr.solve()
            question = _word_problem(rng, expr) if word else f"Compute {key}."
            problems.append(
                Problem(
                    id=f"{self.name}/{split}/{len(problems):06d}",
                    question=question,
                    answer=str(answer),
                    solution="\n".join([*lines, f"#### {answer}"]),
                )
            )
        return problems

    def _sample(self, rng: random.Random, steps: int, max_operand: int, word: bool) -> _Expression | None:
        """A random expression with `steps` operations, or None when the operators allow none."""
        lo = self.min_operand
        operands = [rng.randint(lo, max_operand)]
        ops: list[str] = []
        term = operands[0]  # value of the current multiplicative term, to keep divisions exact
        for _ in range(steps):
            # Word problems only have terms of one or two factors ("buys 7 bags with 3 apples each").
            choices = [o for o in self.operators if not (word and (o == "/" or (o == "*" and ops and ops[-1] == "*")))]
            divisors = [d for d in range(lo, max_operand + 1) if d != 0 and term % d == 0] if "/" in choices else []
            if not divisors and "/" in choices:
                choices.remove("/")
            if not choices:
                return None
            op = rng.choice(choices)
            if op == "/":
                x = rng.choice(divisors)
                term //= x
            else:
                x = rng.randint(lo, max_operand)
                term = term * x if op == "*" else x
            ops.append(op)
            operands.append(x)
        return _Expression(operands, ops)


def _word_problem(rng: random.Random, expr: _Expression) -> str:
    """A short story whose arithmetic is exactly `expr` (terms of one or two factors, non-negative operands)."""
    name, pronoun = rng.choice(_NAMES)
    item = rng.choice(_ITEMS)
    sentences = []
    for i, (sign, factors, _) in enumerate(expr.terms()):
        container = rng.choice(_CONTAINERS)
        if len(factors) == 1:
            (x,) = factors
            if i == 0:
                sentences.append(f"{name} has {x} {_noun(x, item)}.")
            elif sign == "+":
                verb = rng.choice(("finds", "buys", "gets"))
                sentences.append(f"{pronoun} {verb} {x} more {_noun(x, item)}.")
            else:
                verb = rng.choice(("gives away", "loses"))
                sentences.append(f"{pronoun} {verb} {x} {_noun(x, item)}.")
        else:
            x, y = factors
            if i == 0:
                sentences.append(f"{name} has {x} {_noun(x, container)} with {y} {_noun(y, item)} each.")
            elif sign == "+":
                sentences.append(f"{pronoun} buys {x} {_noun(x, container)} with {y} {_noun(y, item)} each.")
            else:
                friends = "friend" if x == 1 else "friends"
                sentences.append(f"{pronoun} gives {x} {friends} {y} {_noun(y, item)} each.")
    sentences.append(f"How many {item[1]} does {name} have now?")
    return " ".join(sentences)
