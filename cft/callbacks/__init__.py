"""Lightning callbacks: HF export, annotation writing and progress, GRPO sample tables."""

from cft.callbacks.annotation_progress import AnnotationProgressBar
from cft.callbacks.grpo_samples import GRPOSampleTable
from cft.callbacks.hf_export import HFExport
from cft.callbacks.stop import StopCheckpoint

__all__ = ["AnnotationProgressBar", "GRPOSampleTable", "HFExport", "StopCheckpoint"]
