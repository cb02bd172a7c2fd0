"""The exact HF engines: `HFEngine` (batched; rollouts from cached prefixes, `cft.lm.engines.rollout`) and
`NaiveEngine` (the reference).

`naive_rollout` is the reference the fast path must equal: one `generate` call per (position, alternative).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from cft.errors import ConfigError
from cft.lm.engines.rollout import RolloutEngine, TeacherForced, check_cuda_graphs, rank_alternatives
from cft.lm.generation import Generation, generate
from cft.lm.logits import token_entropy
from cft.lm.stopping import ALT_ANSWER, ALT_EOS, LENGTH, StopRule, eos_token_ids

__all__ = ["HFEngine", "NaiveEngine", "RolloutEngine", "TeacherForced", "naive_rollout", "rank_alternatives"]


@torch.no_grad()
def naive_rollout(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt_ids: Sequence[int],
    text_ids: Sequence[int],
    stop: StopRule,
    max_new_tokens: int,
    stop_strings: Sequence[str] = (),
    stop_token_ids: Sequence[int] = (),
) -> tuple[list[int], str]:
    """The reference: one unbatched greedy `generate` from prompt + text_ids (response so far + alternative) to EOS,
    a stop string or the length limit, cut where the stop rule first holds. Same (tokens, reason) contract as
    `RolloutEngine.rollouts`."""
    eos = eos_token_ids(model, tokenizer, stop_token_ids)
    if text_ids and text_ids[-1] in eos:
        return [], ALT_EOS
    if stop.complete(tokenizer.decode(list(text_ids), skip_special_tokens=True)):
        return [], ALT_ANSWER
    gen = generate(
        model, tokenizer, [list(prompt_ids) + list(text_ids)], max_new_tokens=max_new_tokens, batch_size=1,
        stop_strings=stop_strings, stop_token_ids=stop_token_ids, stop_rule=stop, stop_contexts=[list(text_ids)],
    )[0][0]  # fmt: skip
    return gen.token_ids, gen.stop_reason


class HFEngine:
    """The exact engine on plain HF models (the reference on CPU; any device): batched `generate` with left padding
    for completions, one teacher-forced pass per micro-batch for the alternatives, and rollouts decoded from the
    cached prefixes of that pass (`RolloutEngine`).

    Args:
        model: the causal LM.
        tokenizer: its tokenizer.
        batch_size: sequences decoded together (completions and rollouts).
        forward_batch_size: responses per teacher-forced pass (bounds the memory of full-vocabulary logits).
        synced_gpus: keep ranks in step during generation (DeepSpeed ZeRO-3).
        cuda_graphs: replay each rollout decode step as a recorded CUDA graph (`RolloutEngine`; CUDA, SDPA, not
            ZeRO-3). Written for the GPU's per-step launch overhead; see the README for where it has run.
    """

    name = "hf"

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        batch_size: int = 64,
        forward_batch_size: int = 8,
        synced_gpus: bool = False,
        cuda_graphs: bool = False,
    ) -> None:
        if cuda_graphs:
            check_cuda_graphs(model)
        self.model, self.tokenizer, self.cuda_graphs = model, tokenizer, cuda_graphs
        self.batch_size, self.forward_batch_size, self.synced_gpus = batch_size, forward_batch_size, synced_gpus
        self._tf: tuple[tuple, TeacherForced] | None = None

    def generate(self, prompts, params, contexts=None) -> list[list[Generation]]:
        kwargs = dict(
            max_new_tokens=params.max_new_tokens, batch_size=self.batch_size, do_sample=not params.greedy,
            temperature=params.temperature if not params.greedy else 1.0, top_p=params.top_p, num_samples=params.n,
            return_entropy=params.return_entropy, return_logprobs=params.return_logprobs,
            synced_gpus=self.synced_gpus, stop_strings=params.stop_strings, stop_token_ids=params.stop_token_ids,
            stop_rule=params.stop_rule, stop_contexts=contexts,
        )  # fmt: skip
        if params.seed is None or params.greedy:
            return generate(self.model, self.tokenizer, prompts, **kwargs)
        device = next(self.model.parameters()).device
        with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
            torch.manual_seed(params.seed)
            return generate(self.model, self.tokenizer, prompts, **kwargs)

    def _teacher_forced(self, prompts, responses, ranks) -> TeacherForced:
        key = (tuple(map(tuple, prompts)), tuple(map(tuple, responses)), tuple(ranks))
        if self._tf is None or self._tf[0] != key:
            engine = RolloutEngine(self.model, self.tokenizer, StopRule(), 1)
            self._tf = (key, engine.teacher_forced(prompts, responses, ranks, self.forward_batch_size))
        return self._tf[1]

    def alternatives(self, prompts, responses, ranks):
        tf = self._teacher_forced(prompts, responses, ranks)
        return tf.alternatives, tf.entropy

    def rollouts(self, prompts, responses, jobs, params, on_chunk=None) -> list[Generation]:
        if not jobs:
            return []
        # The cache of the last `alternatives` call is reused; ranks do not change the cache, any will do.
        tf = self._tf[1] if self._tf is not None and self._tf[0][:2] == (
            tuple(map(tuple, prompts)), tuple(map(tuple, responses))
        ) else self._teacher_forced(prompts, responses, (2,))  # fmt: skip
        generator = None
        if not params.greedy:
            device = next(self.model.parameters()).device
            generator = torch.Generator(device=device).manual_seed(params.seed or 0)
        engine = RolloutEngine(
            self.model, self.tokenizer, params.stop_rule or StopRule(), params.max_new_tokens, self.batch_size,
            params.temperature, generator, params.stop_strings, params.stop_token_ids, cuda_graphs=self.cuda_graphs,
        )  # fmt: skip
        texts = [list(responses[j.example][: j.position]) + [j.token] for j in jobs]
        done = engine.rollouts(
            tf.kv,
            sources=[j.example for j in jobs],
            prefix_lens=[len(prompts[j.example]) + j.position for j in jobs],
            first_tokens=[j.token for j in jobs],
            text_ids=texts,
            on_chunk=on_chunk,
        )
        return [_as_generation(self.tokenizer, toks, reason) for toks, reason in done]

    def release(self) -> None:
        """Drop the cached prefixes of the last teacher-forced pass."""
        self._tf = None


class NaiveEngine:
    """The reference nothing is shared in: one forward per position for the alternatives, one `generate` per prompt
    and sample, one greedy `generate` per rollout. Slow on purpose: the other engines must equal it."""

    name = "naive"

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, **_: object) -> None:
        self.model, self.tokenizer = model, tokenizer

    def generate(self, prompts, params, contexts=None) -> list[list[Generation]]:
        out = []
        for i, p in enumerate(prompts):
            one = HFEngine(self.model, self.tokenizer, batch_size=1)
            ctx = None if contexts is None else [contexts[i]]
            out.append(one.generate([p], params, ctx)[0])
        return out

    @torch.no_grad()
    def alternatives(self, prompts, responses, ranks):
        device = next(self.model.parameters()).device
        alternatives, entropy = [], []
        for p, r in zip(prompts, responses):
            p, r = list(p), list(r)
            rows = [
                self.model(input_ids=torch.as_tensor([p + r[:t]], device=device)).logits[0, -1] for t in range(len(r))
            ]
            logits = torch.stack(rows) if rows else torch.zeros((0, 1))
            alternatives.append(rank_alternatives(logits, r, ranks) if rows else [])
            entropy.append(token_entropy(logits).tolist() if rows else [])
        return alternatives, entropy

    def rollouts(self, prompts, responses, jobs, params, on_chunk=None) -> list[Generation]:
        if not params.greedy:
            raise ConfigError("engine 'naive' is the greedy reference; sampled rollouts need another engine")
        out = []
        for j in jobs:
            text = list(responses[j.example][: j.position]) + [j.token]
            toks, reason = naive_rollout(
                self.model, self.tokenizer, prompts[j.example], text, params.stop_rule or StopRule(),
                params.max_new_tokens, params.stop_strings, params.stop_token_ids,
            )  # fmt: skip
            out.append(_as_generation(self.tokenizer, toks, reason))
        if on_chunk is not None:
            on_chunk(len(out), sum(len(g.token_ids) for g in out))
        return out


def _as_generation(tokenizer: PreTrainedTokenizerBase, toks: list[int], reason: str) -> Generation:
    return Generation(toks, tokenizer.decode(toks, skip_special_tokens=True), reason != LENGTH, stop_reason=reason)
