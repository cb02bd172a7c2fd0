"""Lightning callbacks: HF export, annotation writing, GRPO sample tables."""

from cft.callbacks.grpo_samples import GRPOSampleTable
from cft.callbacks.hf_export import HFExport

__all__ = ["GRPOSampleTable", "HFExport"]
