"""Final-answer extraction from generations and answer grading (exact numbers first, math-verify otherwise).

Grading never raises and never hangs: junk gives False, and math-verify runs without its signal-based timeout
outside the main thread, behind input guards instead.
"""

from __future__ import annotations

import logging
import re
import threading
from fractions import Fraction

__all__ = ["MAX_ANSWER_CHARS", "extract_answer", "grade_answer", "normalize_number", "parse_number"]

MAX_ANSWER_CHARS = 1000
"""Longer answers are graded False without parsing: sympy can spend unbounded time on long LaTeX."""

_MAIN_THREAD_TIMEOUT_S = 5

# A number as written in an answer: optional minus (not a subtraction sign: no word character or '.' before it),
# thousands commas or plain digits, optional decimals, optional '/denominator'.
_NUMBER_RE = re.compile(r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?")
_EXACT_NUMBER_RE = re.compile(r"[-+]?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?|\.\d+)")
_EXACT_FRACTION_RE = re.compile(r"([-+]?\d+)/(\d+)")
_LATEX_FRAC_RE = re.compile(r"(-?)\\[dt]?frac\{(-?\d+)\}\{(-?\d+)\}")
_HASHES_RE = re.compile(r"####[ \t]*([^\n]*)")
_ANSWER_IS_RE = re.compile(r"the\s+(?:final\s+)?answer\s+is\s*:?[ \t]*([^\n]*)", re.IGNORECASE)
_LEADING_NUMBER_WORDS_RE = re.compile(r"(-?[\d,]*\d(?:\.\d+)?(?:/\d+)?)\s+[A-Za-z][A-Za-z ]*")


def _boxed_contents(text: str) -> str | None:
    """Contents of the last complete, non-empty `\\boxed{...}` (or `\\fbox{...}`), braces balanced."""
    starts = [m.end() for m in re.finditer(r"\\(?:boxed|fbox)", text)]
    for start in reversed(starts):
        i = start
        while i < len(text) and text[i] == " ":
            i += 1
        if i < len(text) and text[i] != "{":
            # `\boxed 5`: the argument is the next whitespace-delimited token.
            token = re.match(r"[^\s$]+", text[i:])
            if token:
                return token.group(0)
            continue
        depth = 0
        for j in range(i, len(text)):
            if text[j] == "{":
                depth += 1
            elif text[j] == "}":
                depth -= 1
                if depth == 0:
                    content = text[i + 1 : j].strip()
                    if content:
                        return content
                    break
        # Unbalanced (truncated generation) or empty: an earlier box is the best remaining evidence.
    return None


def _clean(answer: str) -> str:
    answer = answer.strip()
    while answer and (answer[-1] in ".$" or answer[0] == "$"):
        answer = answer.rstrip(".").strip("$").strip()
    return answer


def _answer_is(text: str) -> str | None:
    matches = _ANSWER_IS_RE.findall(text)
    if not matches:
        return None
    answer = matches[-1]
    # The sentence ends at a period followed by whitespace (a decimal point is followed by a digit).
    answer = re.split(r"\.(?=\s|$)", answer, maxsplit=1)[0]
    answer = _clean(answer)
    if "\\" not in answer:
        # "42 apples" -> "42"; units are not part of the answer.
        m = _LEADING_NUMBER_WORDS_RE.fullmatch(answer)
        if m:
            answer = m.group(1)
    return answer or None


def extract_answer(text: str) -> str | None:
    """The final answer of a generation, or None when there is none.

    Priority: the last `\\boxed{...}` (nested braces handled), then the last GSM8K `#### <answer>`, then
    "the answer is <answer>" (case-insensitive), then the last number in the text.
    """
    if not text:
        return None
    boxed = _boxed_contents(text)
    if boxed:
        return boxed
    for match in reversed(_HASHES_RE.findall(text)):
        answer = _clean(match)
        if answer:
            return answer
    answer = _answer_is(text)
    if answer:
        return answer
    numbers = _NUMBER_RE.findall(text)
    return numbers[-1] if numbers else None


def normalize_number(s: str) -> str:
    """`s` with dollar signs, LaTeX thin spaces, spaces, thousands commas and a trailing period removed."""
    s = s.strip()
    for junk in ("\\$", "$", "\\!", "\\,", "\\;", "\\ "):
        s = s.replace(junk, "")
    s = s.replace("{,}", ",").replace(" ", "")
    s = s.rstrip(".")
    if re.fullmatch(r"[-+]?\d{1,3}(?:,\d{3})+(?:\.\d*)?", s):
        s = s.replace(",", "")
    return s


def parse_number(s: str) -> Fraction | None:
    """`s` as an exact rational (ints, decimals, a/b, `\\frac{a}{b}`, thousands commas), else None."""
    s = normalize_number(s)
    m = re.fullmatch(r"\\boxed\{(.*)\}", s)
    if m:
        s = m.group(1)
    try:
        if _EXACT_NUMBER_RE.fullmatch(s):
            return Fraction(s.replace(",", ""))
        m = _EXACT_FRACTION_RE.fullmatch(s)
        if m:
            return Fraction(int(m.group(1)), int(m.group(2)))
        m = _LATEX_FRAC_RE.fullmatch(s)
        if m:
            value = Fraction(int(m.group(2)), int(m.group(3)))
            return -value if m.group(1) else value
    except (ValueError, ZeroDivisionError):
        return None
    return None


class _DropTimeoutWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        # We disable math-verify's timeout on purpose off the main thread and guard inputs instead.
        return not record.getMessage().startswith("Timeout is disabled")


for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_DropTimeoutWarning())


def _is_expensive(expr: object) -> bool:
    """True for sympy trees whose evaluation can run for minutes (power towers, huge powers or factorials)."""
    import sympy

    if not isinstance(expr, sympy.Basic):
        return False
    for node in sympy.preorder_traversal(expr):
        if isinstance(node, sympy.Pow):
            exp = node.exp
            if exp.has(sympy.Pow, sympy.factorial, sympy.factorial2, sympy.binomial, sympy.gamma):
                return True
            if exp.is_Number and abs(exp) > 100_000:
                return True
        elif isinstance(node, (sympy.factorial, sympy.factorial2, sympy.subfactorial, sympy.binomial)):
            for arg in node.args:
                if (arg.is_Number and abs(arg) > 10_000) or arg.has(sympy.Pow, sympy.factorial):
                    return True
    return False


def _wrap_latex(answer: str) -> str:
    # math-verify extracts LaTeX from delimited spans; a bare "\frac{1}{2}" would not be found.
    if "$" in answer or "\\boxed" in answer or "\\(" in answer or "\\[" in answer:
        return answer
    return f"${answer}$"


def _math_verify(pred: str, gold: str) -> bool:
    from math_verify import parse, verify

    # math-verify's timeout is signal.alarm, which only works in the main thread: elsewhere it raises.
    timeout = _MAIN_THREAD_TIMEOUT_S if threading.current_thread() is threading.main_thread() else None
    gold_parsed = parse(_wrap_latex(gold), parsing_timeout=timeout)
    pred_parsed = parse(_wrap_latex(pred), parsing_timeout=timeout)
    if not gold_parsed or not pred_parsed:
        return False
    if any(_is_expensive(e) for e in (*gold_parsed, *pred_parsed)):
        # Without a timeout such inputs could hang the caller; no real benchmark answer looks like this.
        return False
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=timeout))


def grade_answer(pred: str, gold: str) -> bool:
    """True iff `pred` equals `gold`: exact rational comparison when both are numbers, math-verify otherwise.

    Never raises: junk, empty or overlong inputs grade False. Safe to call from any thread.
    """
    try:
        if pred is None or gold is None:
            return False
        pred, gold = str(pred).strip(), str(gold).strip()
        if not pred or not gold or len(pred) > MAX_ANSWER_CHARS or len(gold) > MAX_ANSWER_CHARS:
            return False
        pred_num, gold_num = parse_number(pred), parse_number(gold)
        if pred_num is not None and gold_num is not None:
            return pred_num == gold_num
        if normalize_number(pred) == normalize_number(gold):
            return True
        return _math_verify(pred, gold)
    except Exception:  # grading junk is expected; one bad answer must not kill an eval run
        return False
