"""User-facing errors, all in one place: bad input named by file/row/field/path.

Every error a user can cause (a config value, a data file, a path) is a subclass of `CFTError`; `python -m cft`
(and the other command-line tools) print it as one line, `error: <message>`, and exit with status 2, with nothing
half-written left behind. Any other exception is a bug and keeps its traceback.

`CFTError` subclasses `ValueError` so that code (and tests) catching `ValueError` for bad settings keep working.
"""

from __future__ import annotations

__all__ = [
    "AnnotationError",
    "BenchmarkLoadError",
    "CFTError",
    "CompareError",
    "ConfigError",
    "ContextLengthError",
    "DataError",
    "EngineUnavailableError",
    "GRPOConfigError",
    "GenerationError",
    "ModelLoadError",
    "RewardError",
    "RunDirError",
    "SelectorError",
    "SweepError",
    "WeightingError",
    "error_line",
]


class CFTError(ValueError):
    """Base class for errors caused by the user's input (config, data, paths), not by a bug."""


# -- settings ---------------------------------------------------------------------------------------------------
class ConfigError(CFTError):
    """A setting, or a combination of settings, that cannot work; the message names the field and what is expected
    (scorer settings, batch sizes and the step plan, learning rate, run options, templates, task settings)."""


class GRPOConfigError(ConfigError):
    """GRPO settings that do not fit together; the message names the setting."""


class WeightingError(ConfigError):
    """A token weighting's settings do not fit; the message names the weighting and the setting."""


class LoraError(ConfigError):
    """LoRA settings that do not fit the model (a target module that matches nothing) or peft missing."""


class SelectorError(CFTError):
    """A selector's settings or a row's fields do not fit; the message names the selector, row and field."""


class RewardError(CFTError):
    """A reward function raised or returned something other than one finite number per completion."""


# -- files and paths ---------------------------------------------------------------------------------------------
class RunDirError(CFTError):
    """The run directory cannot be used (its root is a file, it is not writable, ...); the message names the path."""


class DataError(CFTError):
    """Bad input data; the message names the file/row/field and what was expected."""


class AnnotationError(DataError):
    """Annotation output that cannot be used or continued; the message names the directory or file and the cause."""


class BenchmarkLoadError(DataError):
    """A benchmark could not be loaded or mapped to problems; the message names the file, row and field."""


class ModelLoadError(CFTError):
    """A model or tokenizer could not be loaded; the message names the path and what was expected."""


# -- the other command-line tools ---------------------------------------------------------------------------------
class CompareError(CFTError):
    """Runs that cannot be compared; the message names the run dir (or W&B project) and the missing file or field."""


class SweepError(CFTError):
    """A bad grid file or grid index; the message names the file and the key or index."""


# -- generation -------------------------------------------------------------------------------------------------
class GenerationError(CFTError):
    """A generation request an inference engine cannot serve; the message names the engine, prompt or setting."""


class ContextLengthError(GenerationError):
    """A prompt plus the generation budget does not fit the model's context; the message names the prompt."""


class EngineUnavailableError(GenerationError):
    """The chosen inference engine is not installed or cannot run here; the message says what to install or use."""


def error_line(error: BaseException) -> str:
    """The one line a command-line tool prints for a user error: `error: <message>`, its lines joined by '; '."""
    text = "; ".join(line.strip() for line in str(error).strip().splitlines() if line.strip())
    return f"error: {text}"
