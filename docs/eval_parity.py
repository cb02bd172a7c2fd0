"""Regenerate docs/eval_parity.md: our `qwen_math` grading against the Qwen2.5-Math harness's verdicts, per case.

    python docs/eval_parity.py            # rewrites docs/eval_parity.md
    python docs/eval_parity.py --check    # exit 1 if the file is out of date

The cases (tests/fixtures/eval_parity.jsonl) are hand-written model outputs; each carries the harness's answer and
verdict, derived from the harness's rules (evaluation/parser.py and grader.py of QwenLM/Qwen2.5-Math), and the reason.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CASES = REPO / "tests" / "fixtures" / "eval_parity.jsonl"
OUTPUT = REPO / "docs" / "eval_parity.md"

HEADER = """# Grading parity with the Qwen2.5-Math evaluation harness

The CFT paper's 11-benchmark numbers come from the Qwen2.5-Math evaluation harness
(QwenLM/Qwen2.5-Math, `evaluation/`, read at commit a45202b). Our grading mode `qwen_math`
(`cft/tasks/qwen_math.py`, the default of `configs/eval/qwen_math_suite.yaml`) follows its rules, written here
from their definitions. This page grades hand-written model outputs, at least ten per benchmark and chosen for the
edge cases, both ways: by our code, and by the harness's rules as its source defines them (the expected verdict
and the reason are recorded per case in `tests/fixtures/eval_parity.jsonl`). `tests/test_eval_parity.py` checks
every verdict; `python docs/eval_parity.py` regenerates this page. The harness's verdicts were derived by reading
its code, not by running it (its pinned sympy 1.12 + antlr 4.11.1, latex2sympy and word2number were not installed
here): string, number and multiple-choice verdicts follow mechanically from its rules; verdicts that rest on how
sympy's LaTeX parser reads an expression carry that caveat, and the reason column says so where it matters.

What the harness does, in order:
- **Extraction**: Minerva's "final answer is $...$. I hope", else the last `boxed` (an unbalanced one runs to the
  end of the text), else the text after the last "he answer is", else after the last "final answer is", else the
  last number (commas removed). There is no `####` rule for its own prompts.
- **Normalisation** (twice for predictions): trailing `\\text{...}`, unit words (a fixed list of about 150, with
  plurals; not for CARP-En and Minerva-Math), `^\\circ`, `$`, `%`, `x=`, `\\left`/`\\right` removed, number words
  mapped ("five" -> 5), `dfrac` -> `frac`, `a/b` -> `\\frac{a}{b}`, spaces removed.
- **Multiple choice**: when the gold is an option letter and the prediction is not, the letter is re-read from the
  whole generation (after the last "answer is", else its last standalone A-E); when the gold is made of letters
  only (an empty gold too), the prediction keeps only its letters A-E. Gaokao2023-En has 37 letter golds and 3
  golds that normalise to empty, which any prediction without those letters matches.
- **Equivalence**: case-insensitive string equality; numbers within a relative 1e-4 of the gold, of gold/100 or
  of gold*100 (a percentage equals its fraction); strings equal once brackets are removed; tuples and matrices
  element by element; equations by the difference of their sides; symbolic equality (sympy), with 3 s per answer.

Where we differ by construction: the symbolic step uses math-verify (its LaTeX parser, with unit removal off)
plus the same relative-1e-4 numeric check, where the harness uses sympy's ANTLR LaTeX parser, `parse_expr` and
latex2sympy; expressions that would take sympy minutes (power towers, huge factorials, nesting deeper than 40)
are refused before parsing, where the harness waits for its 3 s timeout (same verdict: False).
"""

DATA_NOTES = """
## Differential check against the harness's own code

`docs/harness_diff.py --harness <Qwen2.5-Math checkout>/evaluation` imports the harness's `parser.py` and
`grader.py` (with word2number; latex2sympy stubbed out, so without the symbolic step) and compares them with
ours on the harness's own data files. Run on 2026-11-26 over the 9 suite files readable in the mirror (all but
math and tabmwp), 2 CPU cores, 5.5 min:

| comparison | count | mismatches |
|---|---|---|
| gold answers (two `parse_ground_truth` passes vs `normalize_gold`) | 11725 | 0 |
| questions (`parse_question`, suffixes included) | 11725 | 0 |
| normalisation (`strip_string` vs `normalize`, units kept and not) | 29390 | 0 |
| extraction (`extract_answer` + `strip_string` vs `extract_qwen`, 9 templates) | 24030 | 0 |
| equivalence without the symbolic step (`math_equal` vs ours) | 29392 | 0 |

The symbolic step (sympy's LaTeX parser there, math-verify here) is what the cases below compare by hand.

## Data parity

Loaded from the harness's own files (`evaluation/data/<name>/test.jsonl`), our loaders give the harness's
counts: gsm8k 1319, svamp 1000, asdiv 2215, mawps 2065, carp_en 976, minerva_math 272, gaokao2023en 385
(two problems with an empty gold, kept), olympiadbench 675, college_math 2818 (checked on 2026-11-26 with
`BenchmarkTask(name, local_path=...)`). MATH: the 11-benchmark list of the harness's `sh/eval.sh` (the
paper's) names `math`, read from its `data/math/test.jsonl` (problem, level, type, solution; gold = the last
`\\boxed` of the solution); that file's contents were absent from the mirror read here, but the harness it
derives from (ZubinGou/math-evaluation-harness) ships a file of that name with the full 5,000 test problems, and
the Qwen2.5-Math report's MATH figures are on the full test set. So the suite's default is `math` (5,000
problems); MATH-500 is the separate `math500`. The harness's tabmwp file (TabMWP's 1,000-problem test1k split)
was absent from the mirror too, so its count is not checked here. On the hub, OlympiadBench's
`OE_TO_maths_en_COMP` config has 674 problems: pass the harness's file (`local_path`) for the paper's 675.
Questions whose gold is yes/no or true/false get the harness's " (Yes or No)" / " (True or False)" suffix
(on the harness's files: 5 ASDiv and 18 College-Math questions).
"""


def _cell(text: str, limit: int = 70) -> str:
    text = text.replace("\n", "\\n")
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return "`" + text.replace("`", "'").replace("|", "\\|") + "`" if text else "(empty)"


def grade_cases(cases: list[dict]) -> list[dict]:
    """Each case with our answer, rule and verdict added."""
    sys.path.insert(0, str(REPO))
    from cft.tasks.qwen_math import qwen_judge

    out = []
    for case in cases:
        answer, rule, correct = qwen_judge(case["generation"], case["gold"], case["benchmark"])
        out.append({**case, "ours_answer": answer or "", "ours_rule": rule, "ours_correct": correct})
    return out


def load_cases() -> list[dict]:
    return [json.loads(line) for line in CASES.read_text(encoding="utf-8").splitlines() if line.strip()]


def render(graded: list[dict]) -> str:
    by_bench: dict[str, list[dict]] = defaultdict(list)
    for case in graded:
        by_bench[case["benchmark"]].append(case)
    lines = [HEADER, "## Agreement per benchmark", ""]
    lines += ["| benchmark | cases | same answer | same verdict | harness acc | our acc |", "|---|---|---|---|---|---|"]
    for bench, cases in by_bench.items():
        n = len(cases)
        same_answer = sum(c["ours_answer"] == c["harness_answer"] for c in cases)
        same_verdict = sum(c["ours_correct"] == c["harness_correct"] for c in cases)
        harness_acc = sum(c["harness_correct"] for c in cases) / n
        our_acc = sum(c["ours_correct"] for c in cases) / n
        lines.append(f"| {bench} | {n} | {same_answer}/{n} | {same_verdict}/{n} | {harness_acc:.2f} | {our_acc:.2f} |")
    total = len(graded)
    agree = sum(c["ours_correct"] == c["harness_correct"] for c in graded)
    lines += ["", f"Overall: the verdicts agree on {agree} of {total} cases.", ""]
    lines += ["## Disagreements", ""]
    disagreements = [c for c in graded if c["ours_correct"] != c["harness_correct"]]
    if not disagreements:
        lines.append("None.")
    for c in disagreements:
        lines.append(
            f"- **{c['benchmark']} / {c['case']}**: harness {c['harness_correct']}, ours {c['ours_correct']}: "
            f"{c.get('disagreement', 'not explained')}"
        )
    lines.append(DATA_NOTES)
    lines += ["## Cases", ""]
    for bench, cases in by_bench.items():
        lines += [
            f"### {bench}",
            "",
            "| case | generation | gold | harness | ours (rule) | why |",
            "|---|---|---|---|---|---|",
        ]
        for c in cases:
            harness = f"{_cell(c['harness_answer'], 30)} {'✓' if c['harness_correct'] else '✗'}"
            ours = f"{_cell(c['ours_answer'], 30)} {'✓' if c['ours_correct'] else '✗'} ({c['ours_rule']})"
            lines.append(
                f"| {c['case']} | {_cell(c['generation'])} | {_cell(c['gold'], 30)} | {harness} | {ours} | "
                f"{c['reason']} |"
            )
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str]) -> int:
    text = render(grade_cases(load_cases()))
    if "--check" in argv:
        if OUTPUT.read_text(encoding="utf-8") != text:
            print(f"{OUTPUT} is out of date: run python docs/eval_parity.py", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
