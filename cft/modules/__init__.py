"""LightningModules: the causal-LM base, the token-weighted learner, the scorer, the evaluator, GRPO."""

from cft.modules.causal_lm import CausalLMModule
from cft.modules.learner import TokenWeightedLearner

__all__ = ["CausalLMModule", "TokenWeightedLearner"]
