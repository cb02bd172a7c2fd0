"""Child process that answers symbolic-equality questions with math-verify; the parent kills it past a deadline.

Run as a script (`python _symbolic_worker.py`), not imported: it reads one JSON request per line on stdin
(`{"op": "verify" | "numeric", "pred": str, "gold": str}`) and writes one JSON line `{"equal": bool}`.
It imports nothing from `cft`, so it starts fast and does not depend on the parent's sys.path.
"""

from __future__ import annotations

import json
import logging
import math
import sys


def _wrap(answer: str) -> str:
    # math-verify extracts LaTeX from delimited spans; a bare "\frac{1}{2}" would not be found.
    if "$" in answer or "\\boxed" in answer or "\\(" in answer or "\\[" in answer:
        return answer
    return f"${answer}$"


def _extraction_config(op: str) -> list | None:
    if op != "numeric":
        return None  # math-verify's defaults
    from latex2sympy2_extended import NormalizationConfig
    from math_verify import ExprExtractionConfig, LatexExtractionConfig

    # The harness's symbolic step compares what its own normalisation left: no unit words are removed here (its
    # unit stripping already ran, and Minerva/CARP keep their units on purpose).
    normalization = NormalizationConfig(
        basic_latex=True, units=False, malformed_operators=True, nits=True, boxed="all", equations=False
    )
    return [LatexExtractionConfig(normalization_config=normalization), ExprExtractionConfig()]


def _equal(op: str, pred: str, gold: str) -> bool:
    from math_verify import parse, verify

    config = _extraction_config(op)
    kwargs = {"parsing_timeout": None} if config is None else {"parsing_timeout": None, "extraction_config": config}
    gold_parsed = parse(_wrap(gold), **kwargs)
    pred_parsed = parse(_wrap(pred), **kwargs)
    if not gold_parsed or not pred_parsed:
        return False
    if verify(gold_parsed, pred_parsed, timeout_seconds=None):
        return True
    if op != "numeric":
        return False
    # The Qwen2.5-Math harness also accepts two expressions whose numeric values agree to a relative 1e-4.
    import sympy

    for g in gold_parsed:
        for p in pred_parsed:
            if isinstance(g, sympy.Basic) and isinstance(p, sympy.Basic):
                try:
                    gv, pv = float(sympy.N(g)), float(sympy.N(p))
                except (TypeError, ValueError, ArithmeticError):
                    continue
                if math.isfinite(gv) and math.isfinite(pv) and math.isclose(gv, pv, rel_tol=1e-4):
                    return True
    return False


def main() -> None:
    logging.disable(logging.CRITICAL)  # math-verify logs parse failures; the parent only wants the verdict
    import math_verify  # noqa: F401 - import before saying ready, so the first deadline covers work only

    sys.stdout.write("ready\n")
    sys.stdout.flush()
    for line in sys.stdin:
        try:
            request = json.loads(line)
            equal = bool(_equal(request["op"], request["pred"], request["gold"]))
        except Exception:  # noqa: BLE001 - junk input grades False; the worker must survive it
            equal = False
        sys.stdout.write(json.dumps({"equal": equal}) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
