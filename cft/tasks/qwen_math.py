"""The Qwen2.5-Math evaluation harness's answer extraction and equivalence, written here from their definitions.

The CFT paper's 11-benchmark numbers come from that harness (`evaluation/` of QwenLM/Qwen2.5-Math: `parser.py`
extracts and normalises, `grader.py` compares). This module follows its rules step by step so that the same
generations get the same verdicts; `docs/eval_parity.md` lists where and why the two still differ (the harness
parses LaTeX with sympy's ANTLR parser and latex2sympy, we with math-verify).

Extraction order (`extract_qwen`): Minerva's "final answer is $...$. I hope", then the last `boxed` (an unbalanced
one runs to the end of the text), then "he answer is", then "final answer is", then the last number. The answer is
then normalised (`normalize`): units, `\\text{}`, dollar signs and percent signs removed, number words mapped,
`a/b` written as `\\frac{a}{b}`, and so on. Equivalence (`qwen_equal`): case-insensitive string equality, then
numbers with a relative tolerance of 1e-4 where a percentage equals its fraction (x, x/100 and 100x all match),
then tuples/intervals/matrices element by element, equations, and symbolic equality.
"""

from __future__ import annotations

import math
import re
import time

from cft.tasks.grading import MAX_ANSWER_CHARS, SYMBOLIC_TIMEOUT_S, symbolic_equal

__all__ = [
    "KEEP_UNITS",
    "extract_qwen",
    "normalize",
    "normalize_gold",
    "qwen_equal",
    "qwen_judge",
    "words_to_number",
]

KEEP_UNITS = ("carp_en", "minerva_math")
"""Benchmarks whose answers keep unit words (the harness's STRIP_EXCEPTIONS); their golds are not normalised."""

# Unit words the harness deletes from answers (mostly from MathQA), in its order, each also with a plural "s".
# They are regular expressions: "q ." matches "q" followed by a space and any character.
_UNIT_WORDS = (
    "east|degree|mph|kmph|ft|m sqaure| m east|sq m|deg|mile|q .|monkey|prime|ratio|profit of rs|rd|o|gm|p . m|lb|"
    "tile|per|dm|lt|gain|ab|way|west|a .|b .|c .|d .|e .|f .|g .|h .|t|a|h|no change|men|soldier|pie|bc|excess|st|"
    "inches|noon|percent|by|gal|kmh|c|acre|rise|a . m|th|π r 2|sq|mark|l|toy|coin|sq . m|gallon|° f|profit|minw|yr|"
    "women|feet|am|pm|hr|cu cm|square|v â € ™|are|rupee|rounds|cubic|cc|mtr|s|ohm|number|kmph|day|hour|minute|min|"
    "second|man|woman|sec|cube|mt|sq inch|mp|∏ cm ³|hectare|more|sec|unit|cu . m|cm 2|rs .|rs|kg|g|month|km|m|cm|mm|"
    "apple|liter|loss|yard|pure|year|increase|decrease|d|less|Surface|litre|pi sq m|s .|metre|meter|inch"
).split("|")
_UNIT_RES = [re.compile(r"(^|\W)" + unit + r"($|\W)") for unit in (*_UNIT_WORDS, *(u + "s" for u in _UNIT_WORDS))]

_SMALL = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen"
).split()
_NUMBER_WORDS: dict[str, int] = {w: i for i, w in enumerate(_SMALL)}
_NUMBER_WORDS.update(
    {w: 10 * (i + 2) for i, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split())}
)
_NUMBER_WORDS.update({"hundred": 100, "thousand": 1000, "million": 10**6, "billion": 10**9})


def _group_value(values: list[int]) -> int:
    # How the harness's word2number reads a group of up to four words, e.g. "three hundred twenty one".
    if len(values) == 4:
        return values[0] * values[1] + values[2] + values[3]
    if len(values) == 3:
        return values[0] * values[1] + values[2]
    if len(values) == 2:
        return values[0] * values[1] if 100 in values else values[0] + values[1]
    return values[0]


def words_to_number(text: str) -> str:
    """`text` as a number if it spells one ("twenty-one" -> "21", "two point five" -> "2.5"; other words are
    ignored, as the harness's word2number does), else `text` unchanged."""
    sentence = text.replace("-", " ").lower()
    if sentence.isdigit():
        try:
            return str(int(sentence))
        except ValueError:  # digits int() does not read, e.g. superscripts
            return text
    words = [w for w in sentence.split() if w in _NUMBER_WORDS or w == "point"]
    if not words or any(words.count(w) > 1 for w in ("thousand", "million", "billion", "point")):
        return text
    decimals: list[str] = []
    if "point" in words:
        at = words.index("point")
        words, decimals = words[:at], words[at + 1 :]
    position = {scale: (words.index(scale) if scale in words else -1) for scale in ("billion", "million", "thousand")}
    b, m, t = position["billion"], position["million"], position["thousand"]
    if (t > -1 and (t < m or t < b)) or (m > -1 and m < b):
        return text
    try:
        total: float = 0
        if len(words) == 1:
            total = _NUMBER_WORDS[words[0]]
        elif words:
            values = [_NUMBER_WORDS[w] for w in words]
            start = 0
            for index, scale in ((b, 10**9), (m, 10**6), (t, 1000)):
                if index > -1:
                    total += _group_value(values[start:index]) * scale
                    start = index + 1
            if start < len(values):
                total += _group_value(values[start:])
        if decimals:
            digits = "".join(str(_NUMBER_WORDS[w]) for w in decimals if _NUMBER_WORDS.get(w, 10) < 10)
            total += float("0." + digits) if digits else 0.0
        return str(total)
    except (IndexError, KeyError, ValueError):
        return text


def _fix_fracs(s: str) -> str:
    # "\frac12" -> "\frac{1}{2}", "\frac1{72}" -> "\frac{1}{72}"; a "\frac" with fewer than two characters after it
    # leaves the whole string as it was.
    pieces = s.split("\\frac")
    out = pieces[0]
    for piece in pieces[1:]:
        out += "\\frac"
        if piece.startswith("{"):
            out += piece
        elif len(piece) < 2:
            return s
        elif piece[1] != "{":
            out += "{" + piece[0] + "}{" + piece[1] + "}" + piece[2:]
        else:
            out += "{" + piece[0] + "}" + piece[1:]
    return out


def _fix_slash(s: str) -> str:
    # "3/4" -> "\frac{3}{4}" only when both sides are plain integers written canonically (or contain "sqrt").
    parts = s.split("/")
    if len(parts) != 2:
        return s
    try:
        a = parts[0] if "sqrt" in parts[0] else str(int(parts[0]))
        b = parts[1] if "sqrt" in parts[1] else str(int(parts[1]))
    except ValueError:
        return s
    return "\\frac{" + a + "}{" + b + "}" if s == f"{a}/{b}" else s


def normalize(answer: str, keep_units: bool = False) -> str:
    """The harness's normalisation of an answer string (its `strip_string`), step by step in its order."""
    s = str(answer).strip().replace("\n", "").rstrip(".")
    s = s.replace("\\!", "")
    s = re.sub(r"\\begin\{array\}\{.*?\}", r"\\begin{pmatrix}", s)
    s = re.sub(r"\\end\{array\}", r"\\end{pmatrix}", s).replace("bmatrix", "pmatrix")
    s = s.replace("tfrac", "frac").replace("dfrac", "frac")
    s = s.replace("\\neq", "\\ne").replace("\\leq", "\\le").replace("\\geq", "\\ge")
    s = s.replace("\\left", "").replace("\\right", "").replace("\\{", "{").replace("\\}", "}")
    # A trailing \text{...} is a unit ("5 \text{ cm}"), unless it is the whole answer.
    without = re.sub(r"\\text{.*?}$", "", s).strip()
    if without and without != s:
        s = without
    if not keep_units:
        for _ in range(2):
            for unit_re in _UNIT_RES:
                without = unit_re.sub(r"\1\2", s)
                if without:
                    s = without
    s = s.replace("^{\\circ}", "").replace("^\\circ", "")
    s = s.replace("\\$", "").replace("$", "").replace("\\(", "").replace("\\)", "")
    s = words_to_number(s)
    s = re.sub(r"\\text\{(.*?)\}", r"\1", s)
    for prefix in ("x=", "y=", "z=", "x\\in", "y\\in", "z\\in", "x\\to", "y\\to", "z\\to"):
        s = s.replace(prefix, "")
    s = s.replace("\\emptyset", "{}").replace("(-\\infty,\\infty)", "\\mathbb{R}")
    s = s.replace("\\%", "").replace("%", "")
    s = s.replace(" .", " 0.").replace("{.", "{0.")
    s = s.replace("infinity", "\\infty")
    if "\\infty" not in s:
        s = s.replace("inf", "\\infty")
    s = s.replace("+\\inity", "\\infty").replace("and", "").replace("\\mathbf", "")
    s = re.sub(r"\\mbox{.*?}", "", s)
    if "j" in s and "i" not in s:
        s = s.replace("j", "i")
    # "2.000x" -> "2x", "5.0" -> "5".
    s = re.sub(r"(\d+)\.0*([^\d])", r"\1\2", s)
    s = re.sub(r"(\d+)\.0*$", r"\1", s)
    if not s:
        return s
    if s[0] == ".":
        s = "0" + s
    sides = s.split("=")
    if len(sides) == 2 and len(sides[0]) <= 2:  # "k = 5" -> "5"
        s = sides[1]
    s = re.sub(r"\\sqrt(\w+)", r"\\sqrt{\1}", s)
    s = s.replace(" ", "")
    return _fix_slash(_fix_fracs(s))


def _tidy(pred: str) -> str:
    # Line breaks go, then one leading ":", one trailing "." and one trailing "/".
    pred = re.sub(r"\n\s*", "", pred)
    if pred.startswith(":"):
        pred = pred[1:]
    if pred.endswith("."):
        pred = pred[:-1]
    if pred.endswith("/"):
        pred = pred[:-1]
    return pred


def _after_last_box(text: str) -> str:
    tail = text[text.rfind("boxed") + len("boxed") :]
    if not tail:
        return ""
    if tail[0] != "{":
        return tail.split("$", 1)[0].strip()
    depth = 1
    for i in range(1, len(tail)):
        if tail[i] == "{":
            depth += 1
        elif tail[i] == "}":
            depth -= 1
            if depth == 0:
                return tail[1:i]
    return tail[1:]  # unbalanced (a truncated generation): everything after the brace


_LAST_NUMBER_RE = re.compile(r"-?\d*\.?\d+")


def _raw_answer(text: str) -> tuple[str, str]:
    if "final answer is $" in text and "$. I hope" in text:
        return text.split("final answer is $", 1)[1].split("$. I hope", 1)[0].strip(), "minerva"
    if "boxed" in text:
        return _after_last_box(text), "boxed"
    for trigger, rule in (("he answer is", "answer_is"), ("final answer is", "final_answer_is")):
        at = text.rfind(trigger)
        if at >= 0:
            return text[at + len(trigger) :].strip(), rule
    if "答案是" in text:
        return text.split("答案是", 2)[1].strip().split("\n\n", 1)[0].strip(), "answer_is_zh"
    numbers = _LAST_NUMBER_RE.findall(text.replace(",", ""))
    return (numbers[-1], "last_number") if numbers else ("", "none")


def extract_qwen(text: str, benchmark: str | None = None) -> tuple[str | None, str]:
    """`(answer, rule)` as the harness extracts and normalises a generation's final answer (None: no answer).

    An answer longer than `MAX_ANSWER_CHARS` (e.g. everything after an early "the answer is") is returned cut to
    `MAX_ANSWER_CHARS + 1` characters and not normalised; it grades False.
    """
    raw, rule = _raw_answer(text.replace("\u043a\u0438", ""))
    if len(raw) > MAX_ANSWER_CHARS:
        return raw[: MAX_ANSWER_CHARS + 1], rule
    keep_units = benchmark in KEEP_UNITS
    # The harness normalises a prediction twice (once in extraction, once before grading); normalize is not
    # idempotent (e.g. "x=y=5" loses one "x=" per pass), so twice it is.
    answer = normalize(normalize(_tidy(raw), keep_units), keep_units)
    return (answer or None), rule


def normalize_gold(gold: str, benchmark: str | None = None) -> str:
    """The gold answer as the harness compares it: normalised twice, except MATH and Minerva-Math (extracted from
    the solution: tidied and normalised once) and CARP-En (kept as written, relations spelled `\\ne`/`\\le`/`\\ge`)."""
    if benchmark == "carp_en":
        return gold.replace("\\neq", "\\ne").replace("\\leq", "\\le").replace("\\geq", "\\ge")
    if benchmark in ("math", "math500", "minerva_math"):
        return normalize(_tidy(gold), keep_units=benchmark == "minerva_math")
    return normalize(normalize(gold))


def _as_number(s: str) -> float | None:
    s = s.replace(",", "")
    try:
        return float(s)
    except ValueError:
        if s.endswith("%"):
            try:
                return float(s[:-1].removesuffix("\\")) / 100
            except ValueError:
                return None
    return None


def _choice(pred: str) -> str:
    pred = pred.strip("\n").rstrip(".").rstrip("/").strip(" ").lstrip(":")
    letters = re.findall(r"\b(A|B|C|D|E)\b", pred.upper())
    return (letters[-1] if letters else pred.strip().strip(".")).rstrip(".").rstrip("/")


def _to_pmatrix(ref: str) -> str:
    rows = re.findall(r"\{.*,.*\}", ref)
    return ", ".join("\\begin{pmatrix}" + m.strip("{}").replace(",", "\\") + "\\end{pmatrix}" for m in rows)


_BRACKETED_RE = re.compile(r"(\(|\[).+(\)|\])")
_MATRIX_OPEN = ("\\begin{pmatrix}", "\\begin{bmatrix}")
_MATRIX_CLOSE = ("\\end{pmatrix}", "\\end{bmatrix}")


def _is_matrix(s: str) -> bool:
    return s.startswith(_MATRIX_OPEN) and s.endswith(_MATRIX_CLOSE)


def _matrix_rows(s: str) -> list[str]:
    return [row.strip() for row in s[len("\\begin{pmatrix}") : -len("\\end{pmatrix}")].split("\\\\") if row.strip()]


class _Budget:
    """One deadline shared by every symbolic check of one comparison (the harness gives a comparison 3 s)."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def symbolic(self, a: str, b: str) -> bool:
        return symbolic_equal(a, b, numeric=True, timeout=self.deadline - time.monotonic())


def _equal(pred: str, ref: str, budget: _Budget) -> bool:
    if pred.strip().lower() == ref.strip().lower():
        return True
    if ref in ("A", "B", "C", "D", "E") and _choice(pred) == ref:
        return True
    pred_number, ref_number = _as_number(pred), _as_number(ref)
    if pred_number is not None and ref_number is not None:
        # A percentage and its fraction are the same answer: 50 matches 0.5 and 5000 too.
        return any(math.isclose(pred_number, r, rel_tol=1e-4) for r in (ref_number / 100, ref_number, ref_number * 100))
    if not pred:
        return False
    ref, pred = ref.strip(), pred.strip()
    if "pmatrix" in pred and "pmatrix" not in ref:
        ref = _to_pmatrix(ref)
    pred_bare, ref_bare = pred, ref
    if (pred.startswith("[") and pred.endswith("]") and not ref.startswith("(")) or (
        pred.startswith("(") and pred.endswith(")") and not ref.startswith("[")
    ):
        pred_bare, ref_bare = pred_bare.strip("[]()"), ref_bare.strip("[]()")
    for ch in "{}()":
        pred_bare, ref_bare = pred_bare.replace(ch, ""), ref_bare.replace(ch, "")
    if pred_bare.lower() == ref_bare.lower():
        return True
    if _BRACKETED_RE.match(pred) and _BRACKETED_RE.match(ref):
        pred_parts, ref_parts = pred[1:-1].split(","), ref[1:-1].split(",")
        if len(pred_parts) == len(ref_parts) and all(_equal(p, r, budget) for p, r in zip(pred_parts, ref_parts)):
            return True
    if _is_matrix(pred) and _is_matrix(ref):
        pred_rows, ref_rows = _matrix_rows(pred), _matrix_rows(ref)
        if len(pred_rows) == len(ref_rows) and all(
            len(p.split("&")) == len(r.split("&"))
            and all(_equal(a, b, budget) for a, b in zip(p.split("&"), r.split("&")))
            for p, r in zip(pred_rows, ref_rows)
        ):
            return True
    if pred.count("=") == 1 and ref.count("=") == 1:
        # Equations are equal when their sides' differences are (up to sign).
        p_lhs, p_rhs = pred.split("=")
        r_lhs, r_rhs = ref.split("=")
        p_diff, r_diff = f"{p_lhs.strip()} - ({p_rhs.strip()})", f"{r_lhs.strip()} - ({r_rhs.strip()})"
        if budget.symbolic(p_diff, r_diff) or budget.symbolic(f"-({p_diff})", r_diff):
            return True
    elif pred.count("=") == 1 and len(pred.split("=")[0].strip()) <= 2 and "=" not in ref:
        if _equal(pred.split("=")[1], ref, budget):
            return True
    elif ref.count("=") == 1 and len(ref.split("=")[0].strip()) <= 2 and "=" not in pred:
        if _equal(pred, ref.split("=")[1], budget):
            return True
    return budget.symbolic(pred, ref)


def qwen_equal(pred: object, gold: object, benchmark: str | None = None) -> bool:
    """True iff `pred` (an answer as `extract_qwen` returns it) matches the raw gold `gold` of `benchmark` under the
    harness's rules. Never raises; non-string, empty or overlong answers grade False."""
    if not isinstance(pred, str) or not isinstance(gold, str) or not pred:
        return False
    if len(pred) > MAX_ANSWER_CHARS or len(gold) > MAX_ANSWER_CHARS:
        return False
    try:
        return _equal(pred, normalize_gold(gold, benchmark), _Budget(SYMBOLIC_TIMEOUT_S))
    except Exception:  # noqa: BLE001 - junk grades False, as in the harness
        return False


_LETTERS = ("A", "B", "C", "D", "E")


def _choice_in_text(text: str) -> str:
    """The option letter a whole generation picks, as the harness reads it when the gold is a letter: the text after
    the last "answer is"/"choice is" (or all of it), then its first (after a trigger) or last standalone A-E,
    case-insensitive."""
    text = text.strip("\n")
    if text.count("choice is") > 1 or text.count("answer is") > 1:
        text = text.split("\n\n", 1)[0]  # a few-shot continuation: keep the first block
    parts = re.split("choice is|answer is", text)
    after_trigger = len(parts) > 1
    text = parts[-1].strip("\n").rstrip(".").rstrip("/").strip(" ").lstrip(":")
    letters = re.findall(r"\b(A|B|C|D|E)\b", text.upper())
    if letters:
        choice = letters[0] if after_trigger else letters[-1]
    else:
        choice = text.strip().strip(".")
    return choice.rstrip(".").rstrip("/")


def qwen_judge(generation: object, gold: object, benchmark: str | None = None) -> tuple[str | None, str, bool]:
    """`(answer, rule, correct)` for one generation as the harness grades it end to end: extraction, then its
    multiple-choice step (a letter gold: a prediction that is not a letter is re-read from the whole text as an
    option letter; a gold made of letters only, the empty gold included: non-letters are dropped from the
    prediction), then equivalence. Never raises."""
    if not isinstance(generation, str) or not isinstance(gold, str):
        return None, "none", False
    try:
        answer, rule = extract_qwen(generation, benchmark) if generation else (None, "none")
        pred = answer or ""
        ref = normalize_gold(gold, benchmark)
        if ref in _LETTERS and pred not in _LETTERS:
            pred, rule = _choice_in_text(generation), "choice"
        elif all(c in "ABCDE" for c in ref) and not all(c in "ABCDE" for c in pred):
            pred, rule = "".join(c for c in pred if c in "ABCDE"), rule + "+letters"
        if len(pred) > MAX_ANSWER_CHARS or len(ref) > MAX_ANSWER_CHARS:
            return pred or None, rule, False
        # An empty prediction can still equal an empty gold, as in the harness.
        return pred or None, rule, _equal(pred, ref, _Budget(SYMBOLIC_TIMEOUT_S))
    except Exception:  # noqa: BLE001 - junk grades False
        return None, "none", False
