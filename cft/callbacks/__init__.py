"""Lightning callbacks: HF export, annotation writing, sample tables."""

from cft.callbacks.hf_export import HFExport

__all__ = ["HFExport"]
