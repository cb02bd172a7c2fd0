"""Token weightings that depend on the model being trained (applied on top of the data's static weights)."""

from __future__ import annotations

from contextlib import nullcontext

import torch

from cft.errors import WeightingError
from cft.lm.chunked import next_token_nll
from cft.lm.loading import ModelConfig, load_model
from cft.lm.lora import is_lora
from cft.selectors.baselines import selection_count


class TokenWeighting:
    """Maps (static weights, per-token NLL) to the weights that multiply the loss.

    The normaliser of the loss stays the sum of the static weights of the step (known before the forward pass),
    so a dynamic weighting changes which tokens matter, not the scale bookkeeping.
    """

    name = "data"
    # The training method this weighting gives (run.method); None: the data's selector names it.
    method: str | None = None

    def setup(self, module) -> None:
        """Called once the model exists (e.g. to load a reference model)."""

    def __call__(self, weights: torch.Tensor, nll: torch.Tensor, batch: dict) -> torch.Tensor:
        return weights


class DFTWeighting(TokenWeighting):
    """DFT (Wu et al. 2025, "On the Generalization of SFT"): scale each token's loss by its detached probability."""

    name = method = "dft"

    def __call__(self, weights: torch.Tensor, nll: torch.Tensor, batch: dict) -> torch.Tensor:
        return weights * torch.exp(-nll.detach())


def excess_loss_weights(
    weights: torch.Tensor, nll: torch.Tensor, ref_nll: torch.Tensor, fraction: float
) -> torch.Tensor:
    """Rho-1 selection on one micro-batch: among tokens with weight > 0, keep the round(fraction * n) (at least one)
    with the largest excess loss nll - ref_nll (ties: earlier position in row-major order), zero the rest, and rescale
    the kept weights so that they sum to the micro-batch's original weight sum."""
    selectable = weights > 0
    n = int(selectable.sum())
    if n == 0:
        return weights
    k = max(1, selection_count(fraction, n))
    positions = selectable.flatten().nonzero().squeeze(1)
    excess = (nll.detach() - ref_nll.detach()).float().flatten()[positions]
    order = torch.sort(excess, descending=True, stable=True).indices
    keep = torch.zeros(weights.numel(), dtype=torch.bool, device=weights.device)
    keep[positions[order[:k]]] = True
    kept = weights * keep.view_as(weights)
    return kept * (weights.sum() / kept.sum().clamp_min(1e-12))


class Rho1Weighting(TokenWeighting):
    """Rho-1 (Lin et al. 2024, "Not All Tokens Are What You Need", arXiv 2404.07965): loss only on the tokens with
    the highest excess loss, the trained model's NLL minus a frozen reference model's NLL.

    Selection is per micro-batch (and per rank): of the tokens with static weight > 0, the top `fraction` by excess
    loss keep their weight. Normalisation is exact rather than scaled by ~fraction: the kept weights are rescaled so
    each micro-batch's weights still sum to its static weight sum, which is what the learner divides by (the step's
    static weight sum). With one micro-batch per step the loss is exactly the mean NLL over the kept tokens; with
    accumulation it is the micro-batches' kept-token means weighted by their share of the step's weight.

    The reference is loaded in `setup` and held here, outside the LightningModule's submodules, so it is not trained,
    not given to the optimizer and not written to checkpoints (under ZeRO-3 every rank holds a full copy of it).
    When the trained model is a LoRA model of the same base, the reference is that base with the adapter disabled:
    no second copy in memory.

    Args:
        reference: the frozen reference model; it must use the trained model's tokenizer. None (or the trained
            model's own `name_or_path` under LoRA): the trained model's base with its adapter disabled.
        fraction: share of the selectable tokens of each micro-batch that keep their loss (Rho-1 uses 0.6-0.7).
    """

    name = method = "rho1"

    def __init__(self, reference: ModelConfig | None = None, fraction: float = 0.6) -> None:
        if not 0.0 < fraction <= 1.0:
            raise WeightingError(f"Rho1Weighting.fraction must be in (0, 1], got {fraction}")
        self.reference, self.fraction = reference, fraction
        self._model: torch.nn.Module | None = None
        self._adapter_base = False  # True: _model is the trained LoRA model, run with its adapter disabled

    def setup(self, module) -> None:
        if self._model is not None:
            return
        same_base = self.reference is None or self.reference.name_or_path == module.model_config.name_or_path
        if is_lora(module.model) and same_base:
            self._model, self._adapter_base = module.model, True
            return
        if self.reference is None:
            raise WeightingError(
                "Rho1Weighting.reference is None, which means the trained model's base with its LoRA adapter "
                "disabled, but model.lora is not set; name a reference model"
            )
        model = load_model(self.reference, module.tokenizer)
        model.eval().requires_grad_(False)
        self._model = model

    def reference_nll(self, batch: dict) -> torch.Tensor:
        """Per-token NLL of the reference for predicting input_ids[:, 1:], shape (batch, length-1)."""
        if self._model is None:
            raise RuntimeError("Rho1Weighting.setup(module) must run before the first training step")
        ids = batch["input_ids"]
        if next(self._model.parameters()).device != ids.device:
            self._model.to(ids.device)
        ctx = self._model.disable_adapter() if self._adapter_base else nullcontext()
        with torch.no_grad(), ctx:
            return next_token_nll(self._model, batch)[0]

    def __call__(self, weights: torch.Tensor, nll: torch.Tensor, batch: dict) -> torch.Tensor:
        return excess_loss_weights(weights, nll, self.reference_nll(batch), self.fraction)
