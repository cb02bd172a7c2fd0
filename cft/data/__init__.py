"""DataModules: annotation input, token-weighted training rows, evaluation problems."""

from cft.data.train import TrainDataModule

__all__ = ["TrainDataModule"]
