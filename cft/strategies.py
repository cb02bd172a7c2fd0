"""DeepSpeed on CPU: Lightning's DeepSpeedStrategy refuses non-CUDA accelerators; this subclass lifts that check
so the ZeRO 0/2/3 code paths can be exercised with 2 CPU processes (gloo). For tests and laptops, not for speed."""

from __future__ import annotations

from typing import Any

import torch
from lightning.fabric.utilities.seed import reset_seed
from lightning.pytorch.strategies import DeepSpeedStrategy


class CPUDeepSpeedStrategy(DeepSpeedStrategy):
    """DeepSpeedStrategy with the CUDA check skipped, root device CPU and the gloo backend."""

    strategy_name = "deepspeed_cpu"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("process_group_backend", "gloo")
        super().__init__(*args, **kwargs)

    def setup_environment(self) -> None:
        # Skip DeepSpeedStrategy's CUDA-only check; keep the rest of the parent chain.
        super(DeepSpeedStrategy, self).setup_environment()

    def setup_distributed(self) -> None:
        # The parent validates CUDA device indices against local ranks; CPU devices have no index.
        reset_seed()
        self.set_world_ranks()
        self._init_deepspeed_distributed()

    @property
    def root_device(self) -> torch.device:
        # An explicit index: DeepSpeed's engine reads `root_device.index` as its device rank and rejects None.
        return torch.device("cpu", 0)

    def _get_process_group_backend(self) -> str:
        return "gloo"
