"""Every available inference engine against the naive reference: same greedy tokens and stop reasons (EOS, stop
strings, stop token ids, the stop rule, the length limit), same alternatives and identical masks in fp32, seeded
sampling reproducible; engines that cannot run here skip with the reason."""

from __future__ import annotations

import importlib.util

import pytest

from cft.errors import ConfigError, EngineUnavailableError
from cft.lm.engines import NaiveEngine, SamplingParams, build_engine
from cft.lm.stopping import HashesLineStop
from cft.lm.tokenizer import tokenizer_world
from cft.modules.scorer import ScorerSettings, annotate
from cft.tasks import PlainTemplate
from tests.helpers import HashGradedTask, lively_model

HAS_VLLM = importlib.util.find_spec("vllm") is not None
ENGINE_PARAMS = [
    "hf",
    "continuous",
    pytest.param("vllm", marks=pytest.mark.skipif(not HAS_VLLM, reason="vllm is not installed (GPU-only extra)")),
]


@pytest.fixture(scope="module")
def model(tiny_model_dir, world_tokenizer):
    return lively_model(tiny_model_dir, world_tokenizer)


def _examples(tok, n):
    task, template = tokenizer_world("arithmetic"), PlainTemplate()
    return [
        {
            "prompt_ids": tok(template.render(p.question))["input_ids"],
            "response_ids": tok(p.solution, add_special_tokens=False)["input_ids"],
            "answer": p.answer,
        }
        for p in task.problems("train")[:n]
    ]


def _engine(name, model, tok):
    return build_engine(name, model, tok, batch_size=4, forward_batch_size=3)


def _plain(gens):
    return [[(g.token_ids, g.stop_reason) for g in group] for group in gens]


@pytest.mark.parametrize("name", ENGINE_PARAMS)
def test_greedy_generation_equals_naive(name, model, world_tokenizer):
    tok = world_tokenizer
    prompts = [ex["prompt_ids"] for ex in _examples(tok, 6)]
    engine, naive = _engine(name, model, tok), NaiveEngine(model, tok)
    base = SamplingParams(max_new_tokens=14, return_entropy=True)
    ref = naive.generate(prompts, base)
    got = engine.generate(prompts, base)
    assert _plain(got) == _plain(ref)
    assert {g[0].stop_reason for g in ref} == {"eos", "length"}, "the fixture should exercise both endings"
    for g, r in zip(got, ref):
        assert g[0].mean_entropy == pytest.approx(r[0].mean_entropy, rel=1e-4)
    # A stop string taken from a reference completion; a stop token id; the stop rule with a context.
    long = next(g[0] for g in ref if len(g[0].token_ids) >= 6)
    stop = tok.decode(long.token_ids[2:4], skip_special_tokens=True)
    stop_id = long.token_ids[3]
    for params in (
        SamplingParams(max_new_tokens=14, stop_strings=(stop,)),
        SamplingParams(max_new_tokens=14, stop_token_ids=(stop_id,)),
        SamplingParams(max_new_tokens=14, stop_rule=HashesLineStop()),
    ):
        contexts = [tok("#### 7", add_special_tokens=False)["input_ids"]] * len(prompts)
        ref = naive.generate(prompts, params, contexts)
        assert _plain(engine.generate(prompts, params, contexts)) == _plain(ref)
    reasons = {
        g[0].stop_reason for g in naive.generate(prompts, SamplingParams(max_new_tokens=14, stop_strings=(stop,)))
    }
    assert "stop_string" in reasons


@pytest.mark.parametrize("name", ENGINE_PARAMS)
def test_annotation_masks_equal_naive_fp32(name, model, world_tokenizer):
    examples = _examples(world_tokenizer, 3)
    task = HashGradedTask(word_problems=0.5)
    settings = ScorerSettings(max_rollout_tokens=10, stop="hashes_line")
    ref = annotate(model, world_tokenizer, task, examples, settings, "naive")
    got = annotate(model, world_tokenizer, task, examples, settings, _engine(name, model, world_tokenizer))
    for g, r in zip(got, ref):
        assert g.alternatives == r.alternatives
        assert [[(t, s) for t, s, _ in o] for o in g.outcomes] == [[(t, s) for t, s, _ in o] for o in r.outcomes]
        assert g.critical == r.critical
    assert 0 < sum(sum(a.critical) for a in ref) < sum(len(a.critical) for a in ref)


@pytest.mark.parametrize("name", ["hf", "continuous"])
def test_seeded_sampling_reproduces(name, model, world_tokenizer):
    prompts = [ex["prompt_ids"] for ex in _examples(world_tokenizer, 3)]
    engine = _engine(name, model, world_tokenizer)
    params = SamplingParams(max_new_tokens=8, temperature=1.0, top_p=0.9, n=3, seed=11)
    first, second = engine.generate(prompts, params), engine.generate(prompts, params)
    assert _plain(first) == _plain(second)
    assert all(len(g) == 3 for g in first)
    assert len({tuple(g.token_ids) for group in first for g in group}) > 1


def test_vllm_not_installed_is_one_clear_error(model, world_tokenizer):
    if HAS_VLLM:
        pytest.skip("vllm is installed here")
    with pytest.raises(EngineUnavailableError, match="vllm"):
        build_engine("vllm", model, world_tokenizer)
    with pytest.raises(ConfigError, match="engine='nope'"):
        build_engine("nope", model, world_tokenizer)
