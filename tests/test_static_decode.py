"""Static-shape rollout decoding, the form a CUDA graph replays (`RolloutEngine(static=True)`, `cuda_graphs=True`).

On CPU: the static decode gives the same rollouts as the default window and as the naive reference, keeps its
tensors for the whole call (one graph per call), and its decode step traces as one graph without breaks (no host
sync inside the step: TorchDynamo finds no graph break). `cuda_graphs=True` off CUDA is one clear error. On a GPU: replayed graphs give the rollouts
of eager decoding."""

from __future__ import annotations

import functools

import pytest
import torch

from cft.errors import ConfigError
from cft.lm.engines import HFEngine, RolloutJob, SamplingParams, build_engine
from cft.lm.engines import kv_slots as kv_module
from cft.lm.engines.hf import naive_rollout
from cft.lm.engines.kv_slots import KVSlots
from cft.lm.engines.rollout import RolloutEngine
from cft.lm.stopping import ALT_ANSWER, ALT_EOS, HashesLineStop, StopRule
from cft.lm.tokenizer import tokenizer_world
from cft.tasks import PlainTemplate
from tests.helpers import lively_model

MAX_NEW = 10


@pytest.fixture(scope="module")
def model(tiny_model_dir, world_tokenizer):
    return lively_model(tiny_model_dir, world_tokenizer)


def _requests(tok, n: int = 3):
    """Prompts of the first `n` training problems and their reference solutions as responses."""
    task, template = tokenizer_world("arithmetic"), PlainTemplate()
    problems = task.problems("train")[:n]
    prompts = [tok(template.render(p.question))["input_ids"] for p in problems]
    responses = [tok(p.solution, add_special_tokens=False)["input_ids"] for p in problems]
    return prompts, responses


def _rollouts(model, tok, prompts, responses, static: bool, batch_size: int = 5):
    engine = RolloutEngine(model, tok, HashesLineStop(), MAX_NEW, batch_size=batch_size, static=static)
    tf = engine.teacher_forced(prompts, responses, (2, 3), batch_size=4)
    jobs = [(i, t, a) for i, alts in enumerate(tf.alternatives) for t, pair in enumerate(alts) for a in pair]
    texts = [list(responses[i][:t]) + [a] for i, t, a in jobs]
    out = engine.rollouts(
        tf.kv,
        sources=[i for i, _, _ in jobs],
        prefix_lens=[len(prompts[i]) + t for i, t, _ in jobs],
        first_tokens=[a for _, _, a in jobs],
        text_ids=texts,
    )
    return jobs, texts, out


def test_static_decoding_equals_the_window_and_the_naive_reference(model, world_tokenizer, monkeypatch):
    tok = world_tokenizer
    prompts, responses = _requests(tok)
    seen: list[KVSlots] = []
    moves = []
    init, make_room = KVSlots.__init__, KVSlots.make_room

    def spy_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        seen.append(self)

    def spy_make_room(self, longest_waiting):
        before = self.cur
        make_room(self, longest_waiting)
        moves.append(self.cur < before)

    monkeypatch.setattr(kv_module.KVSlots, "__init__", spy_init)
    monkeypatch.setattr(kv_module.KVSlots, "make_room", spy_make_room)
    jobs, texts, static = _rollouts(model, tok, prompts, responses, static=True)
    slots = seen[-1]
    assert slots.static and slots.version == 0, "static decoding must keep its tensors for the whole call"
    assert slots.rows == 5, "static decoding keeps every row to the end"
    assert any(moves), "the fixture should move the window (in place) at least once"
    _, _, window = _rollouts(model, tok, prompts, responses, static=False)
    assert static == window
    reasons = {reason for _, reason in static}
    assert {"answer", "length"} <= reasons, reasons
    compared = 0
    for (i, _, _), text, got in zip(jobs, texts, static):
        ref = naive_rollout(model, tok, prompts[i], text, HashesLineStop(), MAX_NEW)
        if ref[1] not in (ALT_EOS, ALT_ANSWER):  # decided by the scorer without a rollout
            assert got == ref, (text, got, ref)
            compared += 1
    assert compared > len(jobs) // 2


def test_static_decode_step_traces_as_one_graph(model, world_tokenizer):
    """A CUDA graph can only replay a step that never waits for the host: TorchDynamo breaks its graph at any
    `.item()`, `.tolist()` or branch on a tensor's value inside the step, so one graph and no break is the check
    this machine can make (it fails, with 9 breaks, if the cache layer reads its write column back to the host)."""
    tok = world_tokenizer
    prompts, responses = _requests(tok, 2)
    engine = RolloutEngine(model, tok, StopRule(), MAX_NEW, batch_size=4, static=True)
    tf = engine.teacher_forced(prompts, responses, (2,), batch_size=2)
    lens = [len(prompts[0]) + 3, len(prompts[1]) + 5, len(prompts[0]) + 1, len(prompts[1])]
    slots = KVSlots(tf.kv, rows=4, cur=max(lens), room=2 * (MAX_NEW + 1), static=True)
    slots.admit(range(4), torch.tensor([0, 1, 0, 1]), lens, torch.tensor([5, 6, 7, 8]), torch.arange(4), live=[])
    attn = slots.attention_mask(as_4d=True)
    torch._dynamo.reset()
    with torch.inference_mode():
        explained = torch._dynamo.explain(lambda: engine._step(slots.tokens, attn, slots.pos, slots.cache))()
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons


def test_cuda_graphs_off_cuda_is_one_clear_error(model, world_tokenizer):
    with pytest.raises(ConfigError, match="cuda_graphs=True needs the model on a CUDA device; it is on cpu"):
        build_engine("hf", model, world_tokenizer, cuda_graphs=True)
    with pytest.raises(ConfigError, match="CUDA device"):
        RolloutEngine(model, world_tokenizer, StopRule(), 4, cuda_graphs=True)


def _eager_and_graphs(model, tok):
    """Prompts, responses, every rank-2/3 rollout job, and the `hf` engine without and with CUDA graphs."""
    prompts, responses = _requests(tok)
    eager, graphs = HFEngine(model, tok, batch_size=5), HFEngine(model, tok, batch_size=5, cuda_graphs=True)
    alts, _ = eager.alternatives(prompts, responses, (2, 3))
    jobs = [RolloutJob(i, t, a) for i in range(len(prompts)) for t in range(len(alts[i])) for a in alts[i][t]]
    return prompts, responses, jobs, eager, graphs


def _greedy(engine, prompts, responses, jobs):
    params = SamplingParams(max_new_tokens=MAX_NEW, stop_rule=HashesLineStop())
    return [(g.token_ids, g.stop_reason) for g in engine.rollouts(prompts, responses, jobs, params)]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU (make gpu-check runs this)")
def test_cuda_graph_rollouts_equal_eager_on_gpu(model, world_tokenizer):
    tok = world_tokenizer
    gpu = model.to("cuda")
    try:
        prompts, responses, jobs, eager, graphs = _eager_and_graphs(gpu, tok)
        assert _greedy(graphs, prompts, responses, jobs) == _greedy(eager, prompts, responses, jobs)
        sampled = SamplingParams(max_new_tokens=MAX_NEW, temperature=1.0, seed=3)
        first = graphs.rollouts(prompts, responses, jobs, sampled)
        assert [g.token_ids for g in first] == [g.token_ids for g in graphs.rollouts(prompts, responses, jobs, sampled)]
    finally:
        model.to("cpu")


class _ReplayOnCPU:
    """Stands in for `torch.cuda.CUDAGraph` on CPU: `replay` reruns the recorded step on the tensors bound at
    recording and writes into the output tensor of the recording, as a graph's replay does."""

    def __init__(self, step):
        self.step, self.out = step, step()

    def replay(self):
        self.out.copy_(self.step())


def test_graph_replay_logic_on_cpu(model, world_tokenizer, monkeypatch):
    """The engine's graph path (`cuda_graphs=True`) with CPU stand-ins for CUDA-only calls: one recording per call,
    replays that see the inputs written in place, and the rollouts of eager decoding."""
    from cft.lm.engines import hf, rollout

    recordings = []

    def record(step, device):
        recordings.append(_ReplayOnCPU(step))
        return recordings[-1], recordings[-1].out

    for module in (hf, rollout):  # HFEngine checks when built, RolloutEngine when decoding
        monkeypatch.setattr(module, "check_cuda_graphs", lambda model: None)
    monkeypatch.setattr(rollout, "_record", record)
    prompts, responses, jobs, eager, graphs = _eager_and_graphs(model, world_tokenizer)
    assert _greedy(graphs, prompts, responses, jobs) == _greedy(eager, prompts, responses, jobs)
    assert len(recordings) == 1
    # Sampled: static decoding also draws for finished rows (the batch keeps its rows), so its seeded samples are
    # those of eager static decoding, not of the default window's.
    sampled = SamplingParams(max_new_tokens=MAX_NEW, temperature=1.0, seed=3)
    recordings.clear()
    got = [g.token_ids for g in graphs.rollouts(prompts, responses, jobs, sampled)]
    assert len(recordings) == 1
    monkeypatch.setattr(
        rollout.RolloutEngine, "__init__", functools.partialmethod(rollout.RolloutEngine.__init__, static=True)
    )
    assert got == [g.token_ids for g in eager.rollouts(prompts, responses, jobs, sampled)]
