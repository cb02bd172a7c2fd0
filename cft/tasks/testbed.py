"""The testbed world: short word problems whose solutions read like chain-of-thought, built so that CFT's premise
can be seen (most tokens are wording with several learned, interchangeable phrasings; a few tokens decide the result).

A solution is a few sentences: an optional restatement of the start, one sentence per step with a free choice of
lead-in, explanation, operator word ("+", "plus", "and"), "=" word ("=", "is", "makes") and operand order where the
operation commutes, a closing phrase, and a final `#### n` line. Every wording choice point has at least three
valid options, because a token is non-critical only if both its rank-2 and rank-3 alternatives still lead to the
right answer. Questions carry distractor numbers that never enter the solution.

The `pretrain` split (the base model's corpus) is noisier on purpose: a share of its solutions make one decisive
error (a wrong operation or a wrongly carried value, followed through to a wrong final answer) and a share have
filler words inserted between words, where they do not change the result. The base thus learns to be unsure at
decisive positions and to recover from odd wording, as a real model is and does.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from cft.errors import ConfigError
from cft.tasks.base import Problem
from cft.tasks.world import SyntheticWorld

__all__ = ["TestbedTask"]


# (name, subject pronoun, possessive)
_NAMES = (
    ("Sam", "he", "his"),
    ("Mia", "she", "her"),
    ("Leo", "he", "his"),
    ("Ava", "she", "her"),
    ("Omar", "he", "his"),
    ("Nora", "she", "her"),
    ("Ben", "he", "his"),
    ("Zoe", "she", "her"),
)
_ITEMS = (("apple", "apples"), ("marble", "marbles"), ("sticker", "stickers"), ("coin", "coins"), ("shell", "shells"))
_CONTAINERS = (("bag", "bags"), ("box", "boxes"), ("pack", "packs"), ("jar", "jars"))
_FILLERS = ("well", "um", "okay", "basically", "actually", "right")

# Wording choice points: every list has >= 3 options, drawn uniformly.
_RESTATE = (
    "{Name} starts with {a} {items}.",
    "At first, {name} has {a} {items}.",
    "{Name} has {a} {items} to begin with.",
    "We begin with {a} {items}.",
    "",  # no restatement
)
_LEAD = ("Then", "Next,", "After that,", "Now")
_ADD_WHY = ("{pron} gets more, so we add", "{pron} gets some more, so we add them up:", "adding the new ones gives")
_SUB_WHY = ("{pron} loses some, so we subtract", "{pron} has fewer now, so we take them away", "removing them gives")
_MUL_WHY = (
    "each {bag} holds the same number, so we multiply",
    "the {bags} hold",
    "we multiply to count them, which gives",
)
_PLUS = ("+", "plus", "and")
_MINUS = ("-", "minus", "take away")
_TIMES = ("*", "x", "times")
_EQ = ("=", "is", "makes")
_AFTER = (".", " {items} in total.", ", which is what {pron} has now.", ", so that is the new count.")
_CLOSE = ("", " The answer is {r}.", " So the answer is {r}.", " That is the final count.")

_ADD_Q = ("{Pron} finds {x} more {items}.", "{Pron} buys {x} more {items}.", "{Pron} gets {x} more {items}.")
_SUB_Q = ("{Pron} gives away {x} {items}.", "{Pron} loses {x} {items}.", "{Pron} eats {x} {items}.")
_MUL_Q = ("{Pron} buys {b} {bags} with {c} {items} each.", "{Pron} gets {b} {bags} of {c} {items} each.")
_DISTRACT = (
    "{Pron} is {n} years old.",
    "{Poss} friend has {n} {other}.",
    "The shop is {n} minutes away.",
    "It is {n} o'clock.",
)


@dataclass(frozen=True)
class _Step:
    kind: str  # "add", "sub" or "mul" (buy b containers of c items: add b * c)
    x: int  # the added/removed count, or b for "mul"
    c: int = 0  # items per container for "mul"


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


@dataclass(eq=False)
class TestbedTask(SyntheticWorld):
    """Word problems with 2 steps (`test_hard`: 3 steps, bigger starts) and paraphrase-rich solutions, e.g.

    "Mia has 12 apples. She is 9 years old. She buys 3 bags with 4 apples each. How many apples does Mia have now?"
    -> "At first, mia has 12 apples. Then the bags hold 4 x 3 is 12. Next, adding the new ones gives 12 plus 12
    = 24 now. The answer is 24.\\n#### 24"

    Splits: `pretrain` (the base's corpus, with injected errors and fillers), `train`, `val`, `test`, `test_hard`
    (out of distribution). No two splits share a question's arithmetic (start and steps).

    Args:
        seed: Seed of the generator; each split draws from its own stream derived from (seed, split).
        max_start: Largest starting count of the in-distribution splits.
        max_operand: Largest step operand (2..9).
        steps: Steps per in-distribution problem.
        hard_max_start: Largest starting count of `test_hard`.
        hard_steps: Steps per `test_hard` problem.
        max_distractors: Most distractor sentences (numbers not used by the solution) per question.
        error_rate: Share of `pretrain` solutions with one decisive error (wrong operation or carried value).
        filler_rate: Share of `pretrain` solutions with filler words inserted between words.
        n_train: Problems in `train`.
        n_val: Problems in `val`.
        n_test: Problems in `test`.
        n_test_hard: Problems in `test_hard`.
        n_pretrain: Problems in `pretrain`.
    """

    __test__ = False  # pytest: "Test..." names a world here, not a test class
    name = "testbed"
    answer_format = "hashes"
    tokenizer_vocab_size = 768  # enough merges for every word of the world to be one token

    seed: int = 0
    max_start: int = 20
    max_operand: int = 9
    steps: int = 2
    hard_max_start: int = 40
    hard_steps: int = 3
    max_distractors: int = 2
    error_rate: float = 0.25
    filler_rate: float = 0.3
    n_train: int = 600
    n_val: int = 200
    n_test: int = 300
    n_test_hard: int = 300
    n_pretrain: int = 20000

    def __post_init__(self) -> None:
        # The fields above are the YAML schema (jsonargparse reads the generated __init__); checked once, here.
        if not 2 <= self.max_operand <= 9:
            raise ConfigError(f"max_operand={self.max_operand}: expected 2..9 (single-digit step operands)")
        if self.max_start < 2 or self.hard_max_start < 2:
            raise ConfigError(f"max_start={self.max_start}, hard_max_start={self.hard_max_start}: expected >= 2")
        if self.steps < 1 or self.hard_steps < 1:
            raise ConfigError(f"steps={self.steps}, hard_steps={self.hard_steps}: expected >= 1")
        for name in ("error_rate", "filler_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name}={getattr(self, name)}: expected a fraction in [0, 1]")
        if self.max_distractors < 0:
            raise ConfigError(f"max_distractors={self.max_distractors}: expected >= 0")
        self._init_world()

    # -- generation -------------------------------------------------------------------------------------------------
    def _generate(self, split: str) -> list[Problem]:
        cfg = self
        n = getattr(cfg, f"n_{split}")
        hard = split == "test_hard"
        max_start, steps = (cfg.hard_max_start, cfg.hard_steps) if hard else (cfg.max_start, cfg.steps)
        rng = self.split_rng(split)
        problems: list[Problem] = []
        attempts, max_attempts = 0, 50 * n + 1000
        while len(problems) < n:
            attempts += 1
            if attempts > max_attempts:
                raise ConfigError(
                    f"testbed split {split!r}: found only {len(problems)} of {n} distinct problems after "
                    f"{max_attempts} draws; widen max_start or max_operand, or ask for fewer problems"
                )
            start, plan = self._sample(rng, steps, max_start)
            # The split key includes the surface (who, what) so pretrain can hold many stories per arithmetic.
            who, item = rng.randrange(len(_NAMES)), rng.randrange(len(_ITEMS))
            key = (start, plan) if split != "pretrain" else (start, plan, who, item)
            if key in self._seen or (split != "pretrain" and (start, plan, "any") in self._seen):
                continue
            self._seen.add(key)
            if split != "pretrain":
                self._seen.add((start, plan, "any"))
            story = _Story(_NAMES[who], _ITEMS[item], rng.choice(_CONTAINERS))
            question = story.question(rng, start, plan, rng.randint(0, cfg.max_distractors), cfg.max_start)
            answer = _evaluate(start, plan)
            noisy = split == "pretrain"
            error = noisy and rng.random() < cfg.error_rate
            solution, final = story.solution(rng, start, plan, error=error)
            if noisy and rng.random() < cfg.filler_rate:
                solution = _insert_fillers(rng, solution)
            problems.append(
                Problem(
                    id=f"{self.name}/{split}/{len(problems):06d}",
                    question=question,
                    answer=str(answer),
                    # A pretrain row with an injected error keeps the true gold: the corpus text is what is wrong.
                    solution=solution,
                )
            )
            assert error or final == answer
        return problems

    def _sample(self, rng: random.Random, steps: int, max_start: int) -> tuple[int, tuple[_Step, ...]]:
        hi = self.max_operand
        start = rng.randint(2, max_start)
        plan: list[_Step] = []
        value = start
        for _ in range(steps):
            kinds = ["add", "mul"] + (["sub"] if value > 3 else [])
            kind = rng.choice(kinds)
            if kind == "sub":
                step = _Step("sub", rng.randint(2, min(hi, value - 1)))
            elif kind == "mul":
                step = _Step("mul", rng.randint(2, hi), rng.randint(2, hi))
            else:
                step = _Step("add", rng.randint(2, hi))
            value = _apply(value, step)
            plan.append(step)
        return start, tuple(plan)


def _apply(value: int, step: _Step) -> int:
    if step.kind == "add":
        return value + step.x
    if step.kind == "sub":
        return value - step.x
    return value + step.x * step.c


def _evaluate(start: int, plan: tuple[_Step, ...]) -> int:
    value = start
    for step in plan:
        value = _apply(value, step)
    return value


def _insert_fillers(rng: random.Random, text: str) -> str:
    """1-3 filler words at random word boundaries of the sentences (never inside a number or the `####` line)."""
    body, sep, final = text.rpartition("\n")
    words = body.split(" ")
    for _ in range(rng.randint(1, 3)):
        i = rng.randint(1, len(words) - 1)
        words.insert(i, rng.choice(_FILLERS))
    return " ".join(words) + sep + final


class _Story:
    """One problem's surface: who, which item, which container."""

    def __init__(self, who: tuple[str, str, str], item: tuple[str, str], container: tuple[str, str]) -> None:
        self.name, self.pron, self.poss = who
        self.item, self.container = item, container

    def _fill(self, template: str, **kw: object) -> str:
        return template.format(
            Name=self.name,
            name=self.name,
            Pron=_cap(self.pron),
            pron=self.pron,
            Poss=_cap(self.poss),
            items=self.item[1],
            bag=self.container[0],
            bags=self.container[1],
            **kw,
        )

    def question(self, rng: random.Random, start: int, plan: tuple[_Step, ...], n_distract: int, hi: int) -> str:
        sentences = [f"{self.name} has {start} {self.item[1]}."]
        for step in plan:
            if step.kind == "add":
                sentences.append(self._fill(rng.choice(_ADD_Q), x=step.x))
            elif step.kind == "sub":
                sentences.append(self._fill(rng.choice(_SUB_Q), x=step.x))
            else:
                sentences.append(self._fill(rng.choice(_MUL_Q), b=step.x, c=step.c))
        others = [i[1] for i in _ITEMS if i[1] != self.item[1]]
        for _ in range(n_distract):
            text = self._fill(rng.choice(_DISTRACT), n=rng.randint(2, hi), other=rng.choice(others))
            sentences.insert(rng.randint(1, len(sentences)), text)
        sentences.append(f"How many {self.item[1]} does {self.name} have now?")
        return " ".join(sentences)

    def solution(self, rng: random.Random, start: int, plan: tuple[_Step, ...], error: bool = False) -> tuple[str, int]:
        """The solution text and the final value it reaches; with `error`, one step goes wrong (and is followed)."""
        wrong_at = rng.randrange(len(plan)) if error else -1
        parts = [self._fill(rng.choice(_RESTATE), a=start)]
        value = start
        for i, step in enumerate(plan):
            lead = rng.choice(_LEAD)
            kind, carried = step.kind, value
            if i == wrong_at:
                if rng.random() < 0.5:
                    # A wrong operation: subtract instead of add, add instead of subtract, add b instead of b * c.
                    kind = {"add": "sub", "sub": "add", "mul": "add"}[kind] if value > step.x else "add"
                else:
                    carried = max(0, value + rng.choice((-3, -2, -1, 1, 2, 3)))
            if kind == "mul":
                product = step.x * step.c
                b, c = (step.x, step.c) if rng.random() < 0.5 else (step.c, step.x)
                why = self._fill(rng.choice(_MUL_WHY))
                parts.append(f"{lead} {why} {b} {rng.choice(_TIMES)} {c} {rng.choice(_EQ)} {product}.")
                lead, x = rng.choice(_LEAD), product
                kind = "add"
            else:
                x = step.x
            if kind == "add":
                new = carried + x
                why = self._fill(rng.choice(_ADD_WHY))
                left, right = (carried, x) if rng.random() < 0.5 else (x, carried)
                expr = f"{left} {rng.choice(_PLUS)} {right}"
            else:
                new = carried - x
                why = self._fill(rng.choice(_SUB_WHY))
                expr = f"{carried} {rng.choice(_MINUS)} {x}"
            after = self._fill(rng.choice(_AFTER))
            parts.append(f"{lead} {why} {expr} {rng.choice(_EQ)} {new}{after}")
            value = new
        text = " ".join(p for p in parts if p)
        text += self._fill(rng.choice(_CLOSE), r=value)
        return f"{text}\n#### {value}", value
