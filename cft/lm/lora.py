"""LoRA through peft: which modules get adapters, and the adapter/merged exports of an adapted model."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from cft.errors import LoraError


@dataclass
class LoraSettings:
    """Low-rank adapters on the named linear layers; the base weights stay frozen.

    Args:
        r: rank of each adapter.
        alpha: scaling numerator (the update is alpha / r x B A).
        dropout: dropout on the adapter's input.
        target_modules: module name suffixes that get adapters (every one must match at least one module).
    """

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )

    def __post_init__(self) -> None:
        if self.r < 1:
            raise LoraError(f"model.lora.r must be >= 1, got {self.r}")
        if not 0.0 <= self.dropout < 1.0:
            raise LoraError(f"model.lora.dropout must be in [0, 1), got {self.dropout}")
        if not self.target_modules:
            raise LoraError("model.lora.target_modules is empty; name the linear layers to adapt (e.g. q_proj)")


def apply_lora(model: torch.nn.Module, settings: LoraSettings, where: str = "model") -> torch.nn.Module:
    """`model` wrapped as a peft model with trainable adapters on `settings.target_modules` and a frozen base."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as e:
        raise LoraError("model.lora needs the peft package: pip install 'cft[peft]'") from e
    names = [n for n, _ in model.named_modules()]
    missing = [t for t in settings.target_modules if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
        raise LoraError(
            f"model.lora.target_modules: {missing} match no module of {where}; its linear layers are named {linear}"
        )
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def is_lora(model: Any) -> bool:
    """True when `model` is a peft model (its adapters can be disabled to get the base back)."""
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(model, PeftModel)


def merged_state_dict(model: Any) -> dict[str, torch.Tensor]:
    """The base model's state dict with every adapter folded in (W + alpha/r B A), in the base's own key names.

    Computed beside the weights rather than by merge/unmerge in place, which would round the frozen base weights
    in bf16."""
    from peft.tuners.lora import LoraLayer

    base = model.get_base_model()
    merged: dict[str, torch.Tensor] = {}
    for name, module in base.named_modules():
        if isinstance(module, LoraLayer):
            weight = module.get_base_layer().weight.detach()
            delta = sum(module.get_delta_weight(a) for a in module.active_adapters if a in module.lora_A)
            merged[f"{name}.weight"] = (weight.float() + delta.float()).to(weight.dtype).cpu()
    out: dict[str, torch.Tensor] = {}
    for key, value in base.state_dict().items():
        if "lora_" in key:
            continue
        clean = key.replace(".base_layer.", ".")
        out[clean] = merged.get(clean, value.detach().cpu())
    return out
