"""Differential check of `cft.tasks.qwen_math` against the Qwen2.5-Math harness's own code, on its own data.

    pip install word2number regex      # the harness's parser needs them (not a dependency of cft)
    git clone https://github.com/QwenLM/Qwen2.5-Math
    python docs/harness_diff.py --harness Qwen2.5-Math/evaluation

Imports the harness's `parser.py` and `grader.py` from that checkout (its latex2sympy is replaced by a stub that
always fails, so the symbolic step is not compared: see docs/eval_parity.md for it) and compares, on every
`data/<name>/test.jsonl` of the 11-benchmark suite that the checkout has:
- gold answers: the harness's two `parse_ground_truth` passes against `normalize_gold(Problem.answer)`;
- questions: `parse_question` against our `Problem.question`;
- normalisation: `strip_string` against `normalize` on every gold and the end of every solution, units kept or not;
- extraction: `extract_answer` + `strip_string` against `extract_qwen` on generations built from nine templates
  around the golds of the first `--per-benchmark` problems;
- equivalence without the symbolic step: `math_equal` against ours on gold x prediction pairs (same problems).
Prints the number of comparisons and of mismatches per kind (and the first few mismatches).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SUITE = ("gsm8k", "math", "svamp", "asdiv", "mawps", "carp_en", "tabmwp", "minerva_math", "gaokao2023en",
         "olympiadbench", "college_math")  # fmt: skip
TEMPLATES = (
    "So the answer is {a}.",
    "Thus $\\boxed{{{a}}}$.",
    "The final answer is ${a}$. I hope it is correct.",
    "final answer is {a}",
    "We get {a} and then 7",
    "\\boxed{{{a}",
    "\\boxed {a}$ done",
    "#### {a}",
    "The answer is: {a}\n\nNext",
)


def _import_harness(evaluation: Path) -> tuple[types.ModuleType, types.ModuleType]:
    stub = types.ModuleType("latex2sympy2")

    def latex2sympy(_: str) -> None:
        raise ValueError("stub: the symbolic step is not compared here")

    stub.latex2sympy = latex2sympy  # type: ignore[attr-defined]
    sys.modules["latex2sympy2"] = stub
    sys.modules["utils"] = types.ModuleType("utils")  # parser.py star-imports it; nothing used here
    sys.path.insert(0, str(evaluation))
    import grader  # type: ignore[import-not-found]
    import parser as harness_parser  # type: ignore[import-not-found]  # the stdlib `parser` is gone since 3.10

    grader.symbolic_equal = lambda a, b: False
    return harness_parser, grader


class _NoSymbolic:
    def symbolic(self, a: str, b: str) -> bool:
        return False


def main(argv: list[str]) -> int:
    args = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    args.add_argument("--harness", required=True, help="the checkout's evaluation/ folder")
    args.add_argument("--show", type=int, default=5, help="mismatches to print per kind")
    args.add_argument("--per-benchmark", type=int, default=300, help="problems per benchmark for extraction/equality")
    opts = args.parse_args(argv)
    evaluation = Path(opts.harness)
    hp, grader = _import_harness(evaluation)
    sys.path.insert(0, str(REPO))
    from cft.tasks import qwen_math
    from cft.tasks.math_benchmarks import BenchmarkTask

    counts: dict[str, list[int]] = {k: [0, 0] for k in ("gold", "question", "normalize", "extract", "equal")}

    def check(kind: str, same: bool, *detail: object) -> None:
        counts[kind][0] += 1
        if not same:
            counts[kind][1] += 1
            if counts[kind][1] <= opts.show:
                print(kind, *(repr(d)[:80] for d in detail))

    samples: list[tuple[str, str]] = []  # golds and solution ends, for normalisation
    answers: list[tuple[str, str]] = []  # raw golds of the first problems, for extraction
    golds: list[tuple[str, str]] = []  # normalised golds of the first problems, for equality
    for name in SUITE:
        path = evaluation / "data" / name / "test.jsonl"
        try:
            rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            print(f"{name}: {path} not readable, skipped")
            continue
        problems = BenchmarkTask(name, local_path=str(path)).problems()
        print(f"{name}: {len(rows)} rows in the harness's file, {len(problems)} problems loaded")
        for index, (row, problem) in enumerate(zip(rows, problems)):
            gt_cot, gt = hp.parse_ground_truth(dict(row), name)
            _, gt = hp.parse_ground_truth({"gt_cot": str(gt_cot), "gt": gt}, name)
            ours = qwen_math.normalize_gold(problem.answer, name)
            check("gold", gt == ours, name, gt, ours)
            check("question", hp.parse_question(dict(row), name) == problem.question, name, problem.question[-60:])
            samples.append((name, problem.answer))
            if index < opts.per_benchmark:
                golds.append((name, ours))
                answers.append((name, problem.answer))
            if problem.solution:
                samples.append((name, problem.solution[-300:]))
    for _name, text in samples:
        for keep in (False, True):
            harness, ours = hp.strip_string(text, skip_unit=keep), qwen_math.normalize(text, keep)
            check("normalize", harness == ours, text, harness, ours)
    for name, text in answers:
        if len(text) <= 200:
            for template in TEMPLATES:
                generation = template.format(a=text)
                harness = hp.strip_string(hp.extract_answer(generation, name), skip_unit=name in hp.STRIP_EXCEPTIONS)
                ours = qwen_math.extract_qwen(generation, name)[0] or ""
                check("extract", harness == ours, generation, harness, ours)
    rng = random.Random(0)
    predictions = [g for _, g in golds] + ["0.5", "50", "5000", "1,000", "(1,2)", "[1,2]", "x=3", "A", "(B)", "yes"]
    for _name, gold in golds:
        for prediction in [gold, *rng.sample(predictions, 10)]:
            harness = bool(grader.math_equal(prediction, gold))
            ours = qwen_math._equal(prediction, gold, _NoSymbolic())
            check("equal", harness == ours, prediction, gold, harness, ours)
    for kind, (n, bad) in counts.items():
        print(f"{kind}: {n} comparisons, {bad} mismatches")
    return 1 if any(bad for _, bad in counts.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
