"""The two graders behind `Task.grading`, chosen by mode: "math_verify" (`cft.tasks.grading`: boxed, `####`,
"the answer is", last number; math-verify equivalence) and "qwen_math" (`cft.tasks.qwen_math`: the Qwen2.5-Math
harness's extraction order and equivalence). Both modules are leaves; this one sits above them."""

from __future__ import annotations

import logging

from cft.tasks.grading import _extract_math_verify, grade_answer
from cft.tasks.qwen_math import extract_qwen, qwen_equal

__all__ = ["answers_equal", "extract"]

log = logging.getLogger(__name__)


def extract(text: object, mode: str = "math_verify", benchmark: str | None = None) -> tuple[str | None, str]:
    """`(answer, rule)`: the final answer of a generation under `mode` and the extraction rule that found it
    ("boxed", "hashes", "answer_is", "minerva", "final_answer_is", "last_number", ...; "none" when nothing was found).

    `benchmark` selects the harness's per-benchmark variants in "qwen_math" mode (units kept for carp_en and
    minerva_math). Never raises: a non-string generation gives `(None, "none")`.
    """
    if not isinstance(text, str) or not text:
        return None, "none"
    try:
        if mode == "qwen_math":
            return extract_qwen(text, benchmark)
        return _extract_math_verify(text)
    except Exception:  # noqa: BLE001 - a generation that trips the extractor has no answer, it does not stop the run
        log.debug("answer extraction failed", exc_info=True)
        return None, "none"


def answers_equal(pred: object, gold: object, mode: str = "math_verify", benchmark: str | None = None) -> bool:
    """True iff the extracted answer `pred` equals the gold `gold` under `mode` (see `extract`). Never raises."""
    if mode == "qwen_math":
        try:
            return qwen_equal(pred, gold, benchmark)
        except Exception:  # noqa: BLE001 - as grade_answer: junk grades False
            return False
    return grade_answer(pred, gold)
