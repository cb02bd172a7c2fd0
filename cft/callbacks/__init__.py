"""Lightning callbacks: HF export, annotation writing, GRPO sample tables."""

from cft.callbacks.grpo_samples import GRPOSampleTable
from cft.callbacks.hf_export import HFExport
from cft.callbacks.stop import StopCheckpoint

__all__ = ["GRPOSampleTable", "HFExport", "StopCheckpoint"]
