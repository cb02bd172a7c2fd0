"""Inference engines behind one interface (`InferenceEngine`): pick one by name with `build_engine`.

hf          exact HF engine: batched `generate`, rollouts from the teacher-forced pass's cached prefixes (default)
naive       the reference: nothing batched or shared (tests and audits)
continuous  transformers' continuous batching (`generate_batch`: paged attention, prefix sharing)
vllm        vLLM with prefix caching (optional extra; has never run in this project's CI)

rollout.py holds the decoder behind `hf` (teacher-forced pass, batched rollouts, CUDA-graph replay), kv_slots.py its
KV cache.
"""

from __future__ import annotations

from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from cft.errors import ConfigError
from cft.lm.engines.base import InferenceEngine, RolloutJob, SamplingParams, rollout_requests
from cft.lm.engines.hf import HFEngine, NaiveEngine

__all__ = ["ENGINES", "HFEngine", "InferenceEngine", "NaiveEngine", "RolloutJob", "SamplingParams", "build_engine",
           "rollout_requests"]  # fmt: skip

ENGINES = ("hf", "naive", "continuous", "vllm")


def build_engine(
    name: str, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, **options: Any
) -> InferenceEngine:
    """The engine `name` over `model` (options: batch_size, forward_batch_size, synced_gpus, cuda_graphs;
    engine-specific ones are ignored by the others). "fast" is the old name of "hf"."""
    name = {"fast": "hf"}.get(name, name)
    if name == "hf":
        hf_options = ("batch_size", "forward_batch_size", "synced_gpus", "cuda_graphs")
        keep = {k: v for k, v in options.items() if k in hf_options}
        return HFEngine(model, tokenizer, **keep)
    if name == "naive":
        return NaiveEngine(model, tokenizer)
    if name == "continuous":
        from cft.lm.engines.continuous import ContinuousBatchingEngine

        keep = {k: v for k, v in options.items() if k in ("batch_size", "forward_batch_size")}
        return ContinuousBatchingEngine(model, tokenizer, **keep)
    if name == "vllm":
        from cft.lm.engines.vllm import VLLMEngine

        return VLLMEngine.from_model(model, tokenizer, **options)
    raise ConfigError(f"engine={name!r}: expected one of {list(ENGINES)}")
