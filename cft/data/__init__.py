"""DataModules: annotation input, token-weighted training rows, evaluation problems, RL prompts."""

from cft.data.annotation_input import AnnotationDataModule
from cft.data.eval import EvalDataModule
from cft.data.prompts import PromptDataModule
from cft.data.train import TrainDataModule

__all__ = ["AnnotationDataModule", "EvalDataModule", "PromptDataModule", "TrainDataModule"]
