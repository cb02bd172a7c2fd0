"""Batched generation: entropy and log-probs accumulated step by step equal those of HF's kept per-step logits;
stop strings, EOS and the length limit give the documented stop reasons; over-long prompts raise one error."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from cft.errors import ContextLengthError
from cft.lm.generation import generate, left_pad


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    m = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.15, generator=gen)
    return m


def _prompts(tok, n=5):
    texts = ["Q: 3 + 4 =", "Q: what is 12 - 5?", "Q: 7 * 8", "A: ", "Q: 100 / 4 ="][:n]
    return [tok(t)["input_ids"] for t in texts]


def _reference(model, tok, prompts, do_sample, temperature, top_p, max_new_tokens, seed):
    """Per-row (tokens, entropy per step, log-prob per step) from HF generate's kept per-step logits, one prompt at
    a time: entropy of softmax(logits / T), log-prob of the drawn token under it."""
    out = []
    torch.manual_seed(seed)
    for p in prompts:
        ids = torch.tensor([p])
        kw = dict(temperature=temperature, top_p=top_p, top_k=0) if do_sample else {}
        res = model.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens, do_sample=do_sample,
            pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, return_dict_in_generate=True,
            output_logits=True, **kw,
        )  # fmt: skip
        toks = res.sequences[0, len(p) :].tolist()
        logp = torch.log_softmax(torch.stack(res.logits, 1)[0].float() / (temperature if do_sample else 1.0), -1)
        ent = -(logp.exp() * logp).sum(-1)
        lp = logp.gather(1, torch.tensor(toks)[:, None]).squeeze(1)
        out.append((toks, ent, lp))
    return out


@pytest.mark.parametrize("do_sample,temperature,top_p", [(False, 1.0, 1.0), (True, 0.7, 1.0), (True, 1.3, 0.8)])
def test_entropy_and_logprobs_match_kept_logits(model, world_tokenizer, do_sample, temperature, top_p):
    tok = world_tokenizer
    prompts = _prompts(tok)
    ref = _reference(model, tok, prompts, do_sample, temperature, top_p, 12, seed=5)
    torch.manual_seed(5)
    # One prompt at a time draws the same random numbers as the reference.
    gens = []
    torch.manual_seed(5)
    for p in prompts:
        gens.append(
            generate(
                model,
                tok,
                [p],
                max_new_tokens=12,
                batch_size=1,
                do_sample=do_sample,
                temperature=temperature,
                top_p=top_p,
                return_entropy=True,
                return_logprobs=True,
            )[0][0]  # fmt: skip
        )
    for g, (toks, ent, lp) in zip(gens, ref):
        n = len(g.token_ids)
        steps = n + int(g.stop_reason == "eos")
        assert toks[:n] == g.token_ids
        assert g.stop_reason == ("eos" if steps <= len(toks) and tok.eos_token_id in toks else "length")
        assert g.mean_entropy == pytest.approx(float(ent[:steps].mean()), rel=1e-5)
        assert g.logprobs == pytest.approx(lp[:n].tolist(), rel=1e-5, abs=1e-6)


def test_batched_greedy_equals_one_at_a_time(model, world_tokenizer):
    """Left padding and batching do not change greedy tokens, entropy or stop reasons."""
    prompts = _prompts(world_tokenizer)
    batched = generate(model, world_tokenizer, prompts, max_new_tokens=10, batch_size=8, return_entropy=True)
    single = [generate(model, world_tokenizer, [p], max_new_tokens=10, return_entropy=True)[0] for p in prompts]
    for b, s in zip(batched, single):
        assert b[0].token_ids == s[0].token_ids and b[0].stop_reason == s[0].stop_reason
        assert b[0].mean_entropy == pytest.approx(s[0].mean_entropy, rel=1e-4)


def test_stop_strings(model, world_tokenizer):
    tok = world_tokenizer
    prompts = _prompts(tok)
    plain = generate(model, tok, prompts, max_new_tokens=16)
    # A stop string taken from the middle of a plain generation: generation stops right after it, text keeps it.
    row = next(i for i, g in enumerate(plain) if len(g[0].token_ids) >= 6)
    stop = tok.decode(plain[row][0].token_ids[3:5], skip_special_tokens=True)
    assert stop.strip()
    stopped = generate(model, tok, prompts, max_new_tokens=16, stop_strings=[stop])
    for p, s in zip(plain, stopped):
        p, s = p[0], s[0]
        if stop in p.text:
            assert s.stop_reason == "stop_string" and s.finished and stop in s.text
            assert stop not in tok.decode(s.token_ids[:-1], skip_special_tokens=True)
            assert p.token_ids[: len(s.token_ids)] == s.token_ids
        else:
            assert (s.token_ids, s.stop_reason) == (p.token_ids, p.stop_reason)
    assert stopped[row][0].stop_reason == "stop_string" and len(stopped[row][0].token_ids) <= 5
    # A stop string that never matches changes nothing.
    never = generate(model, tok, prompts, max_new_tokens=16, stop_strings=["\u2603never\u2603"])
    assert [(g[0].token_ids, g[0].stop_reason) for g in never] == [(g[0].token_ids, g[0].stop_reason) for g in plain]
    assert {g[0].stop_reason for g in plain} <= {"eos", "length"}


def test_prompt_longer_than_context(model, world_tokenizer):
    limit = model.config.max_position_embeddings
    prompts = _prompts(world_tokenizer, 2) + [[5] * (limit - 3)]
    with pytest.raises(ContextLengthError, match=r"prompt 2 has .* context is"):
        generate(model, world_tokenizer, prompts, max_new_tokens=4)


def test_left_pad():
    ids, mask = left_pad([[1, 2, 3], [4]], pad_id=0)
    assert ids.tolist() == [[1, 2, 3], [0, 0, 4]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
