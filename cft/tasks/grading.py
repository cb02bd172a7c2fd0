"""Final-answer extraction and grading, in two modes.

- `"math_verify"` (the tiny world's and the default `Task`'s): last `\\boxed{}`, then `#### x`, then "the answer is",
  then the last number; exact rationals first, math-verify otherwise.
- `"qwen_math"`: the Qwen2.5-Math evaluation harness's extraction order and equivalence (`cft.tasks.qwen_math`),
  so that benchmark numbers are comparable with the CFT paper's.

Grading never raises and never hangs, in any thread: every scan is linear, answers longer than `MAX_ANSWER_CHARS`
grade False, expressions whose evaluation explodes (power towers, huge factorials, deep nesting) are refused before
parsing, and symbolic checks run in a child process that is killed past `SYMBOLIC_TIMEOUT_S`.
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import os
import re
import select
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from fractions import Fraction
from typing import Literal

__all__ = [
    "GRADING_MODES",
    "MAX_ANSWER_CHARS",
    "SYMBOLIC_TIMEOUT_S",
    "GradingMode",
    "extract_answer",
    "grade_answer",
    "normalize_number",
    "parse_number",
    "symbolic_equal",
]

GradingMode = Literal["math_verify", "qwen_math"]
GRADING_MODES: tuple[str, ...] = ("math_verify", "qwen_math")

MAX_ANSWER_CHARS = 1000
"""Longer answers are graded False without parsing: no benchmark's answer is that long, and sympy is unbounded."""

SYMBOLIC_TIMEOUT_S = 3.0
"""Budget of one symbolic check (the Qwen2.5-Math harness gives each answer 3 s too); past it the answer is False."""

_WORKER_STARTUP_TIMEOUT_S = 120.0
_MAX_NESTING = 40

log = logging.getLogger(__name__)

# A number as written in an answer: optional minus (not a subtraction sign: no word character or '.' before it),
# thousands commas or plain digits, optional decimals, optional '/denominator'.
_NUMBER_RE = re.compile(r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?")
_EXACT_NUMBER_RE = re.compile(r"[-+]?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?|\.\d+)")
_EXACT_FRACTION_RE = re.compile(r"([-+]?\d+)/(\d+)")
_LATEX_FRAC_RE = re.compile(r"(-?)\\[dt]?frac\{(-?\d+)\}\{(-?\d+)\}")
_HASHES_RE = re.compile(r"####[ \t]*([^\n]*)")
_ANSWER_IS_RE = re.compile(r"the\s+(?:final\s+)?answer\s+is\s*:?[ \t]*([^\n]*)", re.IGNORECASE)
_LEADING_NUMBER_WORDS_RE = re.compile(r"(-?[\d,]*\d(?:\.\d+)?(?:/\d+)?)\s+[A-Za-z][A-Za-z ]*")
_BOX_RE = re.compile(r"\\(?:boxed|fbox)")
_BOX_TOKEN_RE = re.compile(r"[^\s$]+")
# What could make an answer a number: a digit, an ASCII letter (a constant or a function name), a backslash (a LaTeX
# command) or any non-ASCII character (unicode digits, fractions, superscripts, pi) other than U+FFFD, which is what
# decoding an incomplete UTF-8 sequence gives.
_MATH_CONTENT_RE = re.compile(r"[0-9A-Za-z\\]|[^\x00-\x7f\ufffd]")
_WS = " \t\n\r\f\v"


# -- the math_verify mode's extraction ------------------------------------------------------------------------------
def matching_braces(text: str) -> dict[int, int]:
    """Position of each `{` -> position of its matching `}` (unmatched ones are absent). One linear pass."""
    match: dict[int, int] = {}
    stack: list[int] = []
    for i, ch in enumerate(text):
        if ch == "{":
            stack.append(i)
        elif ch == "}" and stack:
            match[stack.pop()] = i
    return match


def _boxed_contents(text: str) -> str | None:
    """Contents of the last complete, non-empty `\\boxed{...}` (or `\\fbox{...}`), braces balanced. Linear time:
    the braces are matched once for the whole text, not once per box."""
    starts = [m.end() for m in _BOX_RE.finditer(text)]
    if not starts:
        return None
    match = matching_braces(text)
    for start in reversed(starts):
        i = start
        while i < len(text) and text[i] == " ":
            i += 1
        if i < len(text) and text[i] != "{":
            # `\boxed 5`: the argument is the next whitespace-delimited token.
            token = _BOX_TOKEN_RE.match(text, i)
            if token:
                return token.group(0)
            continue
        end = match.get(i)
        if end is not None:
            content = text[i + 1 : end].strip()
            if content:
                return content
        # Unbalanced (truncated generation) or empty: an earlier box is the best remaining evidence.
    return None


def _clean(answer: str) -> str:
    """`answer` without surrounding whitespace, leading `$` and trailing `.`/`$` (one pass each side)."""
    return answer.strip(_WS).lstrip(_WS + "$").rstrip(_WS + ".$")


def _answer_is(text: str) -> str | None:
    matches = _ANSWER_IS_RE.findall(text)
    if not matches:
        return None
    answer = matches[-1]
    # The sentence ends at a period followed by whitespace (a decimal point is followed by a digit).
    answer = re.split(r"\.(?=\s|$)", answer, maxsplit=1)[0]
    answer = _clean(answer)
    if "\\" not in answer and len(answer) <= MAX_ANSWER_CHARS:
        # "42 apples" -> "42"; units are not part of the answer.
        m = _LEADING_NUMBER_WORDS_RE.fullmatch(answer)
        if m:
            answer = m.group(1)
    return answer or None


def _extract_math_verify(text: str) -> tuple[str | None, str]:
    boxed = _boxed_contents(text)
    if boxed:
        return boxed, "boxed"
    for match in reversed(_HASHES_RE.findall(text)):
        answer = _clean(match)
        if answer:
            return answer, "hashes"
    answer = _answer_is(text)
    if answer:
        return answer, "answer_is"
    numbers = _NUMBER_RE.findall(text)
    return (numbers[-1], "last_number") if numbers else (None, "none")


def extract_answer(text: str) -> str | None:
    """The final answer of a generation (the "math_verify" mode), or None when there is none.

    Priority: the last `\\boxed{...}` (nested braces handled), then the last GSM8K `#### <answer>`, then
    "the answer is <answer>" (case-insensitive), then the last number in the text.
    """
    if not isinstance(text, str) or not text:
        return None
    try:
        return _extract_math_verify(text)[0]
    except Exception:  # noqa: BLE001 - a generation that trips the extractor has no answer, it does not stop the run
        log.debug("answer extraction failed", exc_info=True)
        return None


# -- numbers ------------------------------------------------------------------------------------------------------
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


# -- expression guards ------------------------------------------------------------------------------------------
_DIGITS_RE = re.compile(r"\d+(?:\.\d+)?")
_FACTORIAL_MARK_RE = re.compile(r"\\(?:Gamma|binom|dbinom|tbinom|choose)|\\operatorname\{(?:Gamma|gamma)\}|\bgamma\(|!")
_EXPONENT_TOKEN_RE = re.compile(r"\s*(\\?[A-Za-z]+|\d+(?:\.\d+)?)")


def _magnitude(expr: str) -> float:
    """An upper bound of log10 of any value the numbers in `expr` can form by + - * (not by ^: see callers)."""
    return sum(math.log10(float(n) + 1.0) for n in _DIGITS_RE.findall(expr))


def _nesting_depth(text: str) -> int:
    depth = deepest = 0
    for ch in text:
        if ch in "{([":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "})]" and depth:
            depth -= 1
    return deepest


def _group_after(text: str, i: int, braces: dict[int, int]) -> str:
    """The argument that starts at `text[i]`: a braced or parenthesised group, or one token."""
    while i < len(text) and text[i] == " ":
        i += 1
    if i < len(text) and text[i] == "{" and i in braces:
        return text[i + 1 : braces[i]]
    if i < len(text) and text[i] == "(":
        close = text.find(")", i)
        return text[i + 1 : close if close >= 0 else len(text)]
    token = _EXPONENT_TOKEN_RE.match(text, i)
    return token.group(1) if token else ""


def too_expensive(expr: str) -> bool:
    """True for LaTeX whose evaluation by sympy can take seconds to minutes: nesting deeper than 40, a power whose
    exponent is itself a power or exceeds ~1e5, a factorial/Gamma/binomial of a power or of more than ~1e4."""
    if _nesting_depth(expr) > _MAX_NESTING:
        return True
    braces = matching_braces(expr)
    for i, ch in enumerate(expr):
        if ch == "^" or (ch == "*" and expr.startswith("**", i) and (i == 0 or expr[i - 1] != "*")):
            exponent = _group_after(expr, i + (2 if ch == "*" else 1), braces)
            if "^" in exponent or "**" in exponent or "!" in exponent or _magnitude(exponent) > 5:
                return True
    for m in _FACTORIAL_MARK_RE.finditer(expr):
        if m.group(0) == "!":
            # The argument of "n!" precedes it: the digits (or the group) right before the mark.
            before = expr[max(0, m.start() - 40) : m.start()]
            argument = re.search(r"(\d+(?:\.\d+)?|\([^()]*\)|\{[^{}]*\})\s*$", before)
            argument_text = argument.group(1) if argument else ""
        else:
            argument_text = _group_after(expr, m.end(), braces)
        if "^" in argument_text or "!" in argument_text or _magnitude(argument_text) > 4:
            return True
    return False


# -- symbolic equality in a child process -------------------------------------------------------------------------
_WORKER_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_symbolic_worker.py")


class _SymbolicWorker:
    """One long-lived child process running math-verify; a request past its deadline kills it (restarted lazily).

    A child process is the only bound that holds in every thread: math-verify's own timeout is `signal.alarm`,
    which works in the main thread only, and sympy cannot be interrupted from another thread.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._owner_pid = -1
        self._buffer = b""
        self._broken = False

    def _start(self) -> None:
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
        self._proc = subprocess.Popen(
            [sys.executable, "-u", _WORKER_PATH],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            close_fds=True,
        )
        self._owner_pid, self._buffer = os.getpid(), b""
        if self._readline(_WORKER_STARTUP_TIMEOUT_S) != b"ready":
            self._kill()
            self._broken = True
            log.warning("the symbolic grading worker did not start; symbolic answers grade False in this process")

    def _readline(self, timeout: float) -> bytes | None:
        assert self._proc is not None and self._proc.stdout is not None
        deadline = time.monotonic() + timeout
        fd = self._proc.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:  # the child died
                return None
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and self._owner_pid == os.getpid():
            proc.kill()
            proc.wait()

    def ask(self, op: str, pred: str, gold: str, timeout: float) -> bool | None:
        """The worker's verdict, or None when it gave none (past the deadline, not started, broken pipe)."""
        # Waiting for another thread's check is bounded too: at most that check's own deadline, plus a restart.
        if not self._lock.acquire(timeout=timeout + SYMBOLIC_TIMEOUT_S + _WORKER_STARTUP_TIMEOUT_S):
            return None
        try:
            if self._broken:
                return None
            if self._proc is None or self._owner_pid != os.getpid() or self._proc.poll() is not None:
                if self._owner_pid != os.getpid():
                    self._proc = None  # a forked child must not share its parent's pipes
                self._start()
                if self._proc is None:
                    return None
            assert self._proc.stdin is not None
            self._proc.stdin.write(json.dumps({"op": op, "pred": pred, "gold": gold}).encode() + b"\n")
            self._proc.stdin.flush()
            line = self._readline(timeout)
            if line is None:
                self._kill()
                return None
            return bool(json.loads(line)["equal"])
        except (OSError, ValueError, KeyError):
            self._kill()
            return None
        finally:
            self._lock.release()

    def close(self) -> None:
        self._kill()


_WORKER = _SymbolicWorker()
atexit.register(_WORKER.close)

# The worker's verdicts by (op, pred, gold). Annotation grades the same wrong rollout answers again and again (a
# degenerate continuation repeats across positions and alternatives), and each round trip costs milliseconds.
# Only answers the worker gave are kept: a check past its deadline is asked again next time.
_VERDICTS: OrderedDict[tuple[str, str, str], bool] = OrderedDict()
_VERDICTS_MAX = 65536
_VERDICTS_LOCK = threading.Lock()


def symbolic_equal(pred: str, gold: str, numeric: bool = False, timeout: float | None = None) -> bool:
    """True iff math-verify finds `pred` and `gold` equal (with `numeric`: or their numeric values agree to a
    relative 1e-4), within `timeout` seconds (default `SYMBOLIC_TIMEOUT_S`); past it, or for expressions that
    `too_expensive` refuses, False."""
    if too_expensive(pred) or too_expensive(gold):
        return False
    op = "numeric" if numeric else "verify"
    with _VERDICTS_LOCK:
        cached = _VERDICTS.get((op, pred, gold))
    if cached is not None:
        return cached
    timeout = SYMBOLIC_TIMEOUT_S if timeout is None else timeout
    if timeout <= 0:
        return False
    verdict = _WORKER.ask(op, pred, gold, timeout)
    if verdict is None:
        return False
    with _VERDICTS_LOCK:
        _VERDICTS[(op, pred, gold)] = verdict
        if len(_VERDICTS) > _VERDICTS_MAX:
            _VERDICTS.popitem(last=False)
    return verdict


# -- grading ------------------------------------------------------------------------------------------------------
def grade_answer(pred: object, gold: object) -> bool:
    """True iff `pred` equals `gold` ("math_verify" mode): exact rationals when both are numbers, math-verify
    otherwise.

    Never raises: junk, non-string, empty or overlong inputs grade False. Safe to call from any thread.
    """
    try:
        if not isinstance(pred, str) or not isinstance(gold, str):
            return False
        pred, gold = pred.strip(), gold.strip()
        if not pred or not gold or len(pred) > MAX_ANSWER_CHARS or len(gold) > MAX_ANSWER_CHARS:
            return False
        pred_num, gold_num = parse_number(pred), parse_number(gold)
        if pred_num is not None and gold_num is not None:
            return pred_num == gold_num
        if normalize_number(pred) == normalize_number(gold):
            return True
        if gold_num is not None and not _MATH_CONTENT_RE.search(pred):
            # Final without math-verify: an expression built from punctuation, whitespace and control characters
            # alone has no numeric value (no digit, letter, LaTeX command or other symbol to form one), so it
            # cannot equal a number. Degenerate rollouts ("::::", "\x03\x03", U+FFFD runs) take this path.
            return False
        return symbolic_equal(pred, gold)
    except Exception:  # noqa: BLE001 - grading junk is expected; one bad answer must not kill an eval run
        return False
