"""transformers' continuous batching as an engine (`model.generate_batch`: paged attention, requests admitted and
retired every step, KV blocks shared between requests with a common prefix).

What it does not do natively is done around it, identically to the HF engine: stop strings and the stop rule are
applied after decoding (`finish`; greedy decoding makes the cut exact, at the cost of decoding past the stop),
entropy and log-probs come from one teacher-forced pass over the finished completions (`completion_statistics`),
and the scorer's alternatives from the HF engine's teacher-forced pass. Rollouts are plain requests
prompt + y<t + a, whose common prefixes the block sharing reuses. Measured on CPU it is slower than the HF engine
(benchmarks/RESULTS.md), so `hf` stays the default; it is meant for GPUs with flash/paged attention.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from cft.errors import GenerationError
from cft.lm.engines.base import RolloutJob, SamplingParams, rollouts_by_generate
from cft.lm.engines.hf import HFEngine
from cft.lm.generation import Generation, check_context, completion_statistics, finish
from cft.lm.stopping import EOS, eos_token_ids, model_stop_strings

__all__ = ["ContinuousBatchingEngine"]


class ContinuousBatchingEngine:
    """Continuous batching over the live HF model (the same weights the trainer updates: nothing to sync).

    Args:
        model: the causal LM.
        tokenizer: its tokenizer.
        batch_size: requests decoded together, at most.
        forward_batch_size: sequences per teacher-forced pass (alternatives, entropy).
        page_size: tokens per KV block.
        num_blocks: KV blocks in the cache (None: enough for batch_size requests at the longest length asked for).
    """

    name = "continuous"

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        batch_size: int = 64,
        forward_batch_size: int = 8,
        page_size: int = 32,
        num_blocks: int | None = None,
    ) -> None:
        try:
            from transformers import ContinuousBatchingConfig  # noqa: F401
        except ImportError:  # transformers without it
            from cft.errors import EngineUnavailableError

            raise EngineUnavailableError(
                "engine 'continuous' needs transformers with continuous batching (ContinuousBatchingConfig); "
                "upgrade transformers or use engine 'hf'"
            ) from None
        self.model, self.tokenizer = model, tokenizer
        self.batch_size, self.forward_batch_size = batch_size, forward_batch_size
        self.page_size, self.num_blocks = page_size, num_blocks
        self._hf = HFEngine(model, tokenizer, batch_size=batch_size, forward_batch_size=forward_batch_size)

    def _config(self, params: SamplingParams, longest: int):
        from transformers import ContinuousBatchingConfig

        # Sized from the request, not from free memory (the default probes memory and, on CPU, takes seconds).
        blocks = self.num_blocks or self.batch_size * (-(-longest // self.page_size) + 1)
        # The KV block size is `page_size` in transformers 5.24, `block_size` in earlier 5.x.
        fields = {f.name for f in dataclasses.fields(ContinuousBatchingConfig)}
        size_field = "page_size" if "page_size" in fields else "block_size"
        return ContinuousBatchingConfig(
            **{size_field: self.page_size},
            num_blocks=blocks,
            max_batch_tokens=max(longest, self.page_size * 8),
            max_requests_per_batch=self.batch_size,
            allow_block_sharing=True,
            seed=params.seed or 0,
        )

    def generate(self, prompts, params, contexts=None) -> list[list[Generation]]:
        if not prompts:
            return []
        check_context(self.model, prompts, params.max_new_tokens)
        eos = eos_token_ids(self.model, self.tokenizer, params.stop_token_ids)
        stops = model_stop_strings(self.model, params.stop_strings)
        sampled = not params.greedy
        gc = GenerationConfig(
            max_new_tokens=params.max_new_tokens, do_sample=sampled, num_return_sequences=params.n,
            temperature=params.temperature if sampled else None, top_p=params.top_p if sampled else None,
            top_k=0 if sampled else None, eos_token_id=eos, pad_token_id=self.tokenizer.pad_token_id,
        )  # fmt: skip
        longest = max(len(p) for p in prompts) + params.max_new_tokens
        was_training = self.model.training
        self.model.eval()
        try:
            results = self.model.generate_batch(
                [list(p) for p in prompts], generation_config=gc,
                continuous_batching_config=self._config(params, longest), warmup=False,
            )  # fmt: skip
        finally:
            self.model.train(was_training)
        outs = list(results.values())
        failed = [o.request_id for o in outs if o.error is not None]
        if len(outs) != len(prompts) * params.n or failed:
            raise GenerationError(
                f"engine 'continuous' returned {len(outs)} of {len(prompts) * params.n} completions "
                f"(failed: {failed[:3]}); see the transformers log above, or use engine 'hf'"
            )
        gens: list[Generation] = []
        flat_prompts: list[Sequence[int]] = []
        for k, o in enumerate(outs):
            i = k // params.n
            toks = list(o.generated_tokens)
            context = contexts[i] if contexts is not None else ()
            n, reason = finish(toks, eos, self.tokenizer, stops, params.stop_rule, context)
            text = self.tokenizer.decode(toks[:n], skip_special_tokens=True)
            gens.append(Generation(toks[:n], text, reason != "length", stop_reason=reason))
            flat_prompts.append(prompts[i])
        if params.return_entropy or params.return_logprobs:
            # The EOS step has an entropy too (as in `generate`): score the drawn EOS with the completion.
            scored = [g.token_ids + ([eos[0]] if g.stop_reason == EOS else []) for g in gens]
            ents, lps = completion_statistics(
                self.model, flat_prompts, scored, params.temperature if sampled else 1.0, self.forward_batch_size
            )
            for g, e, lp in zip(gens, ents, lps):
                g.mean_entropy = sum(e) / len(e) if params.return_entropy and e else None
                g.logprobs = lp[: len(g.token_ids)] if params.return_logprobs else None
        return [gens[i * params.n : (i + 1) * params.n] for i in range(len(prompts))]

    def alternatives(self, prompts, responses, ranks):
        alternatives, entropy = self._hf.alternatives(prompts, responses, ranks)
        self._hf.release()  # this engine does not roll out from those cached prefixes
        return alternatives, entropy

    def rollouts(
        self,
        prompts: Sequence[Sequence[int]],
        responses: Sequence[Sequence[int]],
        jobs: Sequence[RolloutJob],
        params: SamplingParams,
        on_chunk=None,
    ) -> list[Generation]:
        return rollouts_by_generate(self, prompts, responses, jobs, params, on_chunk)
