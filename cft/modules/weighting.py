"""Token weightings that depend on the model being trained (applied on top of the data's static weights)."""

from __future__ import annotations

import torch


class TokenWeighting:
    """Maps (static weights, per-token NLL) to the weights that multiply the loss.

    The normaliser of the loss stays the sum of the static weights of the step (known before the forward pass),
    so a dynamic weighting changes which tokens matter, not the scale bookkeeping.
    """

    name = "data"

    def setup(self, module) -> None:
        """Called once the model exists (e.g. to load a reference model)."""

    def __call__(self, weights: torch.Tensor, nll: torch.Tensor, batch: dict) -> torch.Tensor:
        return weights


class DFTWeighting(TokenWeighting):
    """DFT (Wu et al. 2025, "On the Generalization of SFT"): scale each token's loss by its detached probability."""

    name = "dft"

    def __call__(self, weights: torch.Tensor, nll: torch.Tensor, batch: dict) -> torch.Tensor:
        return weights * torch.exp(-nll.detach())
