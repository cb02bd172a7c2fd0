"""vLLM as an engine (optional extra `vllm`): prefix caching shares the prompt + y<t prefixes of rollouts and token-id
prompts keep tokenisation identical; the alternatives come from the HF model's teacher-forced pass (exact, with
entropy).

THIS BACKEND HAS NEVER RUN: vLLM cannot be installed on the machines this project is developed and tested on (no
GPU, CPU torch pinned). Its tests skip with that reason; treat it as a sketch until a GPU run confirms it against
the `hf` reference (tests/test_engines.py runs it when vLLM imports).

Weights: vLLM keeps its own copy. Under GRPO the policy's weights are pushed to it before each sampling round
(`sync_weights`, as TRL's colocated mode does), and old log-probs are recomputed by the trainer's forward pass, as
the GRPO module already does for every engine, so engine/trainer numerical mismatch does not bias the ratio.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from cft.errors import EngineUnavailableError
from cft.lm.engines.base import RolloutJob, SamplingParams, rollouts_by_generate
from cft.lm.engines.hf import HFEngine
from cft.lm.generation import Generation, check_context, finish
from cft.lm.stopping import eos_token_ids, model_stop_strings

__all__ = ["VLLMEngine"]


def _import_vllm():
    try:
        import vllm
    except ImportError as e:
        raise EngineUnavailableError(
            f"engine 'vllm' needs the vllm package ({e}); install it (pip install 'cft[vllm]', GPU only) or use "
            "engine 'hf' or 'continuous'"
        ) from None
    return vllm


class VLLMEngine:
    """vLLM's `LLM` over the model's directory (bf16 unless the model is fp32), prefix caching on."""

    name = "vllm"

    def __init__(self, llm: Any, tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel | None = None) -> None:
        self.llm, self.tokenizer, self.model = llm, tokenizer, model

    @classmethod
    def from_model(cls, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, **options: Any) -> VLLMEngine:
        vllm = _import_vllm()
        path = getattr(model, "name_or_path", None)
        if not path:
            raise EngineUnavailableError("engine 'vllm' loads the model from its directory; this model has none")
        llm = vllm.LLM(
            model=path, tokenizer=path, dtype=str(model.dtype).removeprefix("torch."), enable_prefix_caching=True,
            gpu_memory_utilization=options.get("gpu_memory_utilization", 0.5), seed=0,
        )  # fmt: skip
        return cls(llm, tokenizer, model)

    def sync_weights(self) -> None:
        """Push the live policy's weights into vLLM's model (after an optimizer step)."""
        if self.model is None:
            return
        runner = self.llm.llm_engine.model_executor.driver_worker.model_runner
        runner.model.load_weights(self.model.state_dict().items())
        self.llm.reset_prefix_cache()

    def _params(self, params: SamplingParams, **extra: Any):
        vllm = _import_vllm()
        return vllm.SamplingParams(
            n=params.n, temperature=params.temperature, top_p=params.top_p, top_k=-1, seed=params.seed,
            max_tokens=params.max_new_tokens, stop_token_ids=list(params.stop_token_ids),
            stop=list(model_stop_strings(self.model, params.stop_strings)) if self.model is not None
            else list(params.stop_strings),
            include_stop_str_in_output=True, logprobs=1 if params.return_logprobs or params.return_entropy else None,
            **extra,
        )  # fmt: skip

    def generate(self, prompts, params, contexts=None) -> list[list[Generation]]:
        if self.model is not None:
            check_context(self.model, prompts, params.max_new_tokens)
            self.sync_weights()
        eos = eos_token_ids(self.model, self.tokenizer, params.stop_token_ids) if self.model is not None else []
        requests = [{"prompt_token_ids": list(p)} for p in prompts]
        outs = self.llm.generate(requests, self._params(params), use_tqdm=False)
        result = []
        for i, out in enumerate(outs):
            gens = []
            for c in out.outputs:
                toks = list(c.token_ids)
                context = contexts[i] if contexts is not None else ()
                n, reason = finish(toks, eos, self.tokenizer, params.stop_strings, params.stop_rule, context)
                g = Generation(toks[:n], self.tokenizer.decode(toks[:n], skip_special_tokens=True), reason != "length",
                               stop_reason=reason)  # fmt: skip
                if params.return_logprobs and c.logprobs:
                    g.logprobs = [lp[t].logprob for lp, t in zip(c.logprobs, toks[:n])]
                # vLLM reports top log-probs, not entropy: the evaluator's entropy stays None with this engine.
                gens.append(g)
            result.append(gens)
        return result

    def alternatives(self, prompts, responses, ranks):
        # The HF model's teacher-forced pass: exact alternatives and the entropy the annotation rows need (vLLM's
        # prompt_logprobs gives only the top-k, no entropy). vLLM then shares the prefixes of the rollouts.
        if self.model is None:
            raise EngineUnavailableError("engine 'vllm' needs the HF model for the alternatives (use from_model)")
        hf = HFEngine(self.model, self.tokenizer)
        return hf.alternatives(prompts, responses, ranks)

    def rollouts(
        self,
        prompts: Sequence[Sequence[int]],
        responses: Sequence[Sequence[int]],
        jobs: Sequence[RolloutJob],
        params: SamplingParams,
        on_chunk=None,
    ) -> list[Generation]:
        return rollouts_by_generate(self, prompts, responses, jobs, params, on_chunk)
