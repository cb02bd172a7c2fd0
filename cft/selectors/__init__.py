"""Token selectors (SFT, CFT and the baselines), each a weight source for the same learner."""

from cft.selectors.base import AllTokens, CriticalTokens, TokenSelector
from cft.selectors.baselines import EntropyTokens, NumericTokens, RandomTokens

__all__ = ["AllTokens", "CriticalTokens", "TokenSelector", "EntropyTokens", "NumericTokens", "RandomTokens"]
