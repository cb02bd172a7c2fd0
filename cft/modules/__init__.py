"""LightningModules: the causal-LM base, the token-weighted learner, the scorer, the evaluator, GRPO."""

from cft.modules.causal_lm import CausalLMModule
from cft.modules.evaluator import Evaluator
from cft.modules.grpo import GRPO
from cft.modules.learner import TokenWeightedLearner
from cft.modules.scorer import PerturbationScorer

__all__ = ["CausalLMModule", "Evaluator", "GRPO", "PerturbationScorer", "TokenWeightedLearner"]
