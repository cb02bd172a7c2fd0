"""The perturbation scorer: the fast engine equals the naive reference; ranking, stop rules, criterion, edge cases."""

from __future__ import annotations

import pytest
import torch

from cft.lm.engines import HFEngine, SamplingParams
from cft.lm.engines.hf import naive_rollout, rank_alternatives
from cft.lm.stopping import ALT_ANSWER, ALT_EOS, BoxedStop, HashesLineStop, StopRule
from cft.lm.tokenizer import tokenizer_world
from cft.modules.scorer import ScorerSettings, annotate
from cft.tasks import ArithmeticTask, PlainTemplate
from tests.helpers import HashGradedTask
from tests.helpers import lively_model as make_lively_model


@pytest.fixture(scope="module")
def lively_model(tiny_model_dir, world_tokenizer):
    return make_lively_model(tiny_model_dir, world_tokenizer)


def _examples(tokenizer, n: int = 4, split: str = "train") -> list[dict]:
    task, template = tokenizer_world("arithmetic"), PlainTemplate()
    out = []
    for p in task.problems(split)[:n]:
        out.append(
            {
                "prompt_ids": tokenizer(template.render(p.question))["input_ids"],
                "response_ids": tokenizer(p.solution, add_special_tokens=False)["input_ids"],
                "answer": p.answer,
            }
        )
    return out


def _gap(model, ids: list[int], a: int, b: int) -> float:
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0, -1]
    return abs(float(logits[a] - logits[b]))


@pytest.mark.parametrize(("stop", "split", "n"), [("eos", "train", 3), ("hashes_line", "val", 2)])
def test_fast_scorer_equals_naive_reference(lively_model, world_tokenizer, stop, split, n):
    """Masks, alternatives and every rollout's tokens and stop reason agree with one `generate` per rollout."""
    task = HashGradedTask()
    examples = _examples(world_tokenizer, n, split)
    settings = ScorerSettings(stop=stop, max_rollout_tokens=12)
    fast = annotate(lively_model, world_tokenizer, task, examples, settings, "fast", rollout_batch_size=16)
    naive = annotate(lively_model, world_tokenizer, task, examples, settings, "naive")
    reasons = set()
    for ex, f, n in zip(examples, fast, naive):
        for t in range(len(ex["response_ids"])):
            prefix = ex["prompt_ids"] + ex["response_ids"][:t]
            if f.alternatives[t] != n.alternatives[t]:
                # Only an exact floating-point tie between the differing alternatives may explain it.
                diff = [(a, b) for a, b in zip(f.alternatives[t], n.alternatives[t]) if a != b]
                assert all(_gap(lively_model, prefix, a, b) < 1e-5 for a, b in diff), (t, diff)
                continue
            for alt, fo, no in zip(f.alternatives[t], f.outcomes[t], n.outcomes[t]):
                reasons.add(no[1])
                if fo[:2] != no[:2]:
                    k = next((k for k, (x, y) in enumerate(zip(fo[0], no[0])) if x != y), None)
                    assert k is not None, (t, fo, no)
                    gap = _gap(lively_model, prefix + [alt] + no[0][:k], fo[0][k], no[0][k])
                    assert gap < 1e-5, f"position {t}: rollouts diverge at step {k} without a tie (gap {gap})"
            if f.outcomes[t] == n.outcomes[t]:
                assert f.critical[t] == n.critical[t]
        assert f.entropy == pytest.approx(n.entropy, abs=1e-4)
    n_crit = sum(sum(f.critical) for f in fast)
    n_tok = sum(len(f.critical) for f in fast)
    assert 0 < n_crit < n_tok, "the hash grader should give a mixed mask"
    assert {"eos", "length"} <= reasons
    assert [f.critical for f in fast] == [n.critical for n in naive]


def test_engine_greedy_responses_equal_generate(lively_model, world_tokenizer):
    examples = _examples(world_tokenizer, n=5)
    prompts = [ex["prompt_ids"] for ex in examples]
    engine = HFEngine(lively_model, world_tokenizer, batch_size=3)
    params = SamplingParams(max_new_tokens=20, stop_rule=HashesLineStop())
    fast = [(g[0].token_ids, g[0].stop_reason) for g in engine.generate(prompts, params)]
    naive = [naive_rollout(lively_model, world_tokenizer, p, [], HashesLineStop(), 20) for p in prompts]
    assert fast == naive


def test_rank_alternatives_ties_and_given_tokens():
    logits = torch.tensor([[1.0, 3.0, 3.0, 2.0, 3.0], [1.0, 3.0, 3.0, 2.0, 3.0], [5.0, 4.0, 3.0, 2.0, 1.0]])
    # Row 0: y_t = 1 is the argmax (lowest id among the tied); rank 2 and 3 are the other tied ids, lower first.
    # Row 1: a given token that is not the argmax: the alternatives are the best tokens other than it.
    # Row 2: no ties; ranks 2 and 4 requested.
    assert rank_alternatives(logits[:2], [1, 3], [2, 3]) == [[2, 4], [1, 2]]
    assert rank_alternatives(logits[2:], [0], [2, 4]) == [[1, 3]]


def test_stop_rules():
    hashes, boxed = HashesLineStop(), BoxedStop()
    assert hashes.complete("3 + 4 = 7\n#### 7\n") and not hashes.complete("3 + 4 = 7\n#### 7")
    assert not hashes.complete("####\n7\n") and not hashes.complete("#### \n")
    assert boxed.complete("so \\boxed{\\frac{1}{2}} done") and not boxed.complete("\\boxed{\\frac{1}{2}")
    assert not boxed.complete("\\boxed{ }") and not StopRule().complete("#### 7\n")


def test_criterion_rules_and_validation():
    assert ScorerSettings().is_critical(2, 2) and not ScorerSettings().is_critical(1, 2)
    assert ScorerSettings(criterion="any").is_critical(1, 2) and not ScorerSettings(criterion="any").is_critical(0, 2)
    half = ScorerSettings(criterion="fraction", fail_fraction=0.5)
    assert half.is_critical(1, 2) and not half.is_critical(1, 3)
    assert not ScorerSettings().is_critical(0, 0)
    with pytest.raises(ValueError, match="alternative_ranks"):
        ScorerSettings(alternative_ranks=(1, 2))
    with pytest.raises(ValueError, match="temperature"):
        ScorerSettings(rollouts_per_alternative=2)
    with pytest.raises(ValueError, match="stop"):
        ScorerSettings(stop="never")


def test_eos_alternative_is_graded_on_the_prefix(lively_model, world_tokenizer):
    task = ArithmeticTask()
    examples = _examples(world_tokenizer, n=4)
    anns = annotate(lively_model, world_tokenizer, task, examples, ScorerSettings(max_rollout_tokens=8), "fast")
    found = 0
    for ex, ann in zip(examples, anns):
        for t, (alts, outs) in enumerate(zip(ann.alternatives, ann.outcomes)):
            for alt, (toks, reason, passed) in zip(alts, outs):
                if alt == world_tokenizer.eos_token_id:
                    found += 1
                    assert toks == [] and reason == ALT_EOS
                    prefix_text = world_tokenizer.decode(ex["response_ids"][:t], skip_special_tokens=True)
                    assert passed == task.grade_strict(prefix_text, ex["answer"])
    assert found, "the lively model should rank EOS 2nd or 3rd somewhere"


def test_positions_after_the_answer_are_not_scored(lively_model, world_tokenizer):
    ex = _examples(world_tokenizer, n=1)[0]
    answer_line = world_tokenizer.decode(ex["response_ids"]) + "\n"
    ex["response_ids"] = world_tokenizer(answer_line + "Done.", add_special_tokens=False)["input_ids"]
    n_answer = len(world_tokenizer(answer_line, add_special_tokens=False)["input_ids"])
    settings = ScorerSettings(stop="hashes_line", max_rollout_tokens=6)
    (ann,) = annotate(lively_model, world_tokenizer, ArithmeticTask(), [ex], settings, "fast")
    assert ann.n_scored == n_answer < len(ex["response_ids"])
    assert all(c == 0 and a == [] for c, a in zip(ann.critical[n_answer:], ann.alternatives[n_answer:]))
    assert all(len(a) == 2 for a in ann.alternatives[:n_answer])
    (eos_ann,) = annotate(lively_model, world_tokenizer, ArithmeticTask(), [ex], ScorerSettings(max_rollout_tokens=6))
    assert eos_ann.n_scored == len(ex["response_ids"])  # the paper's rule: every position


def test_sampled_rollouts_count_and_reproduce(lively_model, world_tokenizer):
    examples = _examples(world_tokenizer, n=2)
    settings = ScorerSettings(rollouts_per_alternative=3, temperature=1.0, max_rollout_tokens=6)

    def run():
        return annotate(lively_model, world_tokenizer, ArithmeticTask(), examples, settings, seed=0)

    first, second = run(), run()
    assert all(total == 3 * len(alts) for ann in first for total, alts in zip(ann.total, ann.alternatives))
    assert [a.outcomes for a in first] == [a.outcomes for a in second]
    with pytest.raises(ValueError, match="naive"):
        annotate(lively_model, world_tokenizer, ArithmeticTask(), examples, settings, "naive")


def _is_subsequence(part: list, whole: list) -> bool:
    it = iter(whole)
    return all(any(x == y for y in it) for x in part)


@pytest.mark.parametrize("criterion", ["all", "any"])
def test_skipping_decided_rollouts_keeps_the_mask(lively_model, world_tokenizer, criterion):
    """With skip_decided_rollouts the masks equal the full run's (and, for `all`, the naive reference's); every
    recorded outcome is one the full run has, in rank order, and none is decoded after the verdict was decided."""
    task = HashGradedTask()
    examples = _examples(world_tokenizer, 3)
    full_settings = ScorerSettings(criterion=criterion, stop="hashes_line", max_rollout_tokens=12)
    skip_settings = ScorerSettings(criterion=criterion, stop="hashes_line", max_rollout_tokens=12,
                                   skip_decided_rollouts=True)  # fmt: skip
    full = annotate(lively_model, world_tokenizer, task, examples, full_settings, "hf", rollout_batch_size=16)
    skip = annotate(lively_model, world_tokenizer, task, examples, skip_settings, "hf", rollout_batch_size=16)
    assert [a.critical for a in skip] == [a.critical for a in full]
    n_crit = sum(map(sum, (a.critical for a in full)))
    assert 0 < n_crit < sum(len(a.critical) for a in full), "the hash grader should give a mixed mask"
    if criterion == "all":
        naive = annotate(lively_model, world_tokenizer, task, examples, skip_settings, "naive")
        assert [a.critical for a in skip] == [a.critical for a in naive]
        assert [a.outcomes for a in skip] == [a.outcomes for a in naive]
    decoded = lambda reason: reason not in (ALT_EOS, ALT_ANSWER)  # noqa: E731
    deciding = (lambda passed: passed) if criterion == "all" else (lambda passed: not passed)
    for s, f in zip(skip, full):
        for t in range(len(s.critical)):
            assert _is_subsequence(s.outcomes[t], f.outcomes[t]), t
            assert (s.total[t], s.failed[t]) == (len(s.outcomes[t]), sum(not p for _, _, p in s.outcomes[t]))
            after = [o for k, o in enumerate(s.outcomes[t]) if any(deciding(p) for _, _, p in s.outcomes[t][:k])]
            assert not any(decoded(reason) for _, reason, _ in after), (t, s.outcomes[t])
    assert sum(a.rollouts for a in skip) < sum(a.rollouts for a in full)


def test_skip_setting_is_in_the_identity_only_when_on(tiny_model_dir):
    from cft.lm.loading import ModelConfig
    from cft.modules.scorer import PerturbationScorer

    off = PerturbationScorer(ModelConfig(name_or_path=str(tiny_model_dir))).describe()["scorer"]
    on = PerturbationScorer(
        ModelConfig(name_or_path=str(tiny_model_dir)), ScorerSettings(skip_decided_rollouts=True)
    ).describe()["scorer"]
    assert "skip_decided_rollouts" not in off and on["skip_decided_rollouts"] is True
