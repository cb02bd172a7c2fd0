"""cft: Critical Token Fine-tuning (arXiv 2510.10974) as a Lightning experiment framework."""

__version__ = "0.1.0"
