"""The testbed world: deterministic, every phrasing graded correct, distractors never change the gold, whole-word
tokens, noisy pretraining corpus, and exact fast-vs-naive annotation on its (long, wordy) responses."""

from __future__ import annotations

import hashlib
import random
import re

import pytest
import torch

from cft.lm.loading import TinyArch, build_tiny_model
from cft.lm.tokenizer import world_tokenizer
from cft.modules.scorer import ScorerSettings, annotate
from cft.tasks import PlainTemplate, TestbedTask, get_task
from cft.tasks.testbed import (
    _AFTER,
    _CLOSE,
    _CONTAINERS,
    _EQ,
    _ITEMS,
    _LEAD,
    _MINUS,
    _NAMES,
    _PLUS,
    _RESTATE,
    _TIMES,
    _evaluate,
    _Step,
    _Story,
)

SMALL = dict(n_pretrain=400, n_train=100, n_val=50, n_test=50, n_test_hard=50)


def test_generator_is_deterministic_from_the_seed():
    a, b, c = TestbedTask(seed=3, **SMALL), TestbedTask(seed=3, **SMALL), TestbedTask(seed=4, **SMALL)
    for split in a.splits:
        assert a.problems(split) == b.problems(split)
        assert a.problems(split) != c.problems(split)
    assert get_task("testbed", seed=3, **SMALL).problems("test") == a.problems("test")


def test_splits_share_no_arithmetic_and_reference_solutions_grade_correct():
    task = TestbedTask(**SMALL)
    for split in ("train", "val", "test", "test_hard"):
        for p in task.problems(split):
            assert p.solution.endswith(f"\n#### {p.answer}")
            assert task.grade_strict(p.solution, p.answer), (split, p.solution)
    numbers = lambda p: tuple(re.findall(r"\d+", p.solution))  # noqa: E731
    train = {numbers(p) for p in task.problems("train")}
    assert not train & {numbers(p) for p in task.problems("test")}


class _Fixed(random.Random):
    """An rng whose every choice is option k (mod the list's length) and every coin flip is `flip`."""

    def __init__(self, k: int, flip: float) -> None:
        super().__init__(0)
        self.k, self.flip = k, flip

    def choice(self, seq):
        return seq[self.k % len(seq)]

    def random(self) -> float:
        return self.flip


PLANS = [
    (12, (_Step("add", 5), _Step("sub", 3))),
    (7, (_Step("mul", 3, 4), _Step("add", 9))),
    (20, (_Step("sub", 8), _Step("mul", 9, 9), _Step("sub", 2))),
]


@pytest.mark.parametrize("who", range(len(_NAMES)))
def test_every_phrasing_gives_a_solution_the_grader_accepts(who):
    task = TestbedTask(**SMALL)
    story = _Story(_NAMES[who], _ITEMS[who % len(_ITEMS)], _CONTAINERS[who % len(_CONTAINERS)])
    width = max(map(len, (_RESTATE, _LEAD, _PLUS, _MINUS, _TIMES, _EQ, _AFTER, _CLOSE)))
    seen = set()
    for start, plan in PLANS:
        gold = _evaluate(start, plan)
        for k in range(width):
            for flip in (0.1, 0.9):  # both operand orders
                text, final = story.solution(_Fixed(k, flip), start, plan)
                assert final == gold and task.grade_strict(text, str(gold)), text
                seen.add(text)
                # Wording only: the same numbers in the same order whichever phrasing was drawn.
                assert text.endswith(f"#### {gold}")
    assert len(seen) >= 2 * width  # the phrasings really differ


def _naive_solve(question: str) -> int:
    """Reads the question sentence by sentence, skipping the distractor sentences."""
    value = None
    for s in re.split(r"(?<=[.?])\s", question):
        nums = [int(x) for x in re.findall(r"\d+", s)]
        if re.search(r"years old|friend has|minutes away|o'clock|How many", s):
            continue
        if value is None:
            (value,) = nums
        elif "each" in s:
            value += nums[0] * nums[1]
        elif "more" in s:
            value += nums[0]
        else:
            assert re.search(r"gives away|loses|eats", s), s
            value -= nums[0]
    return value


def test_distractors_never_change_the_gold():
    task = TestbedTask(max_distractors=3, **SMALL)
    with_distractors = 0
    for split in ("train", "test", "test_hard"):
        for p in task.problems(split):
            assert _naive_solve(p.question) == int(p.answer), p.question
            with_distractors += bool(re.search(r"years old|friend has|minutes away|o'clock", p.question))
    # The same arithmetic with and without distractors has the same gold.
    story, rng = _Story(_NAMES[0], _ITEMS[0], _CONTAINERS[0]), random.Random(0)
    for start, plan in PLANS:
        for n in (0, 1, 3):
            assert _naive_solve(story.question(rng, start, plan, n, 20)) == _evaluate(start, plan)
    assert with_distractors > 100


def test_pretrain_corpus_has_decisive_errors_and_harmless_fillers():
    task = TestbedTask(seed=1, n_pretrain=2000, n_train=10, n_val=10, n_test=10, n_test_hard=10)
    rows = task.problems("pretrain")
    wrong = [p for p in rows if not task.grade_strict(p.solution, p.answer)]
    fillers = [p for p in rows if re.search(r" (well|um|okay|basically|actually|right) ", p.solution)]
    # error_rate 0.25, less the draws where the wrong operation coincides with the right value.
    assert 0.15 < len(wrong) / len(rows) < 0.3
    assert 0.2 < len(fillers) / len(rows) < 0.4
    clean = [p for p in fillers if p not in wrong]
    assert clean and all(task.grade_strict(p.solution, p.answer) for p in clean)
    for p in task.problems("train"):
        assert not re.search(r" (um|basically|actually) ", p.solution)


def test_tokenizer_keeps_whole_words(tmp_path):
    task = TestbedTask(n_pretrain=1500, n_train=100, n_val=10, n_test=10, n_test_hard=10)
    tok = world_tokenizer(task, cache_dir=tmp_path)
    for p in task.problems("train")[:50]:
        for word in set(re.findall(r" ?[A-Za-z]+", p.solution)):  # as written: with its leading space, if any
            assert len(tok(word, add_special_tokens=False)["input_ids"]) == 1, word
        assert tok.decode(tok(p.solution)["input_ids"]) == p.solution
        assert all(len(tok.decode([i]).strip()) <= 1 for i in tok(" 123")["input_ids"])  # one token per digit


class _HashGraded(TestbedTask):
    """Passes about half of all texts by hash, so a random model's annotation has a mixed mask."""

    __test__ = False
    answer_format = None

    def grade(self, generation: str, answer: str) -> bool:
        return hashlib.sha256(generation.encode()).digest()[0] % 2 == 0


def test_fast_annotation_equals_naive_reference_on_the_testbed(tmp_path):
    task = _HashGraded(**SMALL)
    tok = world_tokenizer(TestbedTask(**SMALL), cache_dir=tmp_path)
    model = build_tiny_model(TinyArch(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                                      intermediate_size=128), tok, seed=0).eval()  # fmt: skip
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.15, generator=gen)
        model.get_input_embeddings().weight[tok.eos_token_id] *= 1.5
    template = PlainTemplate()
    examples = [
        {
            "prompt_ids": tok(template.render(p.question))["input_ids"],
            "response_ids": tok(p.solution, add_special_tokens=False)["input_ids"][:40],
            "answer": p.answer,
        }
        for p in task.problems("val")[:2]
    ]
    settings = ScorerSettings(max_rollout_tokens=6)
    fast = annotate(model, tok, task, examples, settings, "fast", rollout_batch_size=32)
    naive = annotate(model, tok, task, examples, settings, "naive")
    assert [f.alternatives for f in fast] == [n.alternatives for n in naive]
    assert [[o[:2] for o in f.outcomes] for f in fast] == [[o[:2] for o in n.outcomes] for n in naive]
    assert [f.critical for f in fast] == [n.critical for n in naive]
    crit = sum(sum(f.critical) for f in fast)
    assert 0 < crit < sum(len(f.critical) for f in fast)
