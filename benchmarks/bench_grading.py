"""Grading cost: adversarial inputs (issue 9.3's bound) and throughput of both grading modes.

    PYTHONPATH=. python benchmarks/bench_grading.py

Part 1 times the inputs issue 9 found unbounded (quadratic extraction, quadratic `_clean`, math-verify without a
timeout off the main thread), each in a worker thread. Part 2 grades the parity cases (tests/fixtures/
eval_parity.jsonl, 121 realistic generations) repeatedly with each mode and reports generations graded per second,
first pass (the symbolic worker's start included) and warm.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]


def _in_thread(fn, *args) -> tuple[object, float]:
    out: dict[str, object] = {}

    def work() -> None:
        start = time.perf_counter()
        out["result"] = fn(*args)
        out["seconds"] = time.perf_counter() - start

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(timeout=120)
    return out.get("result", "did not finish in 120 s"), float(out.get("seconds", float("inf")))


def adversarial() -> None:
    from cft.tasks.graders import answers_equal, extract
    from cft.tasks.grading import _clean, grade_answer

    cases = [
        ("extract('\\boxed{' * 4300) (30 KB)", extract, "\\boxed{" * 4_300, "math_verify"),
        ("extract('\\boxed{' * 150000) (1 MB)", extract, "\\boxed{" * 150_000, "math_verify"),
        ("extract('\\boxed{' * 150000), qwen_math", extract, "\\boxed{" * 150_000, "qwen_math"),
        ("_clean('.$' * 500000)", _clean, "$ " * 500_000 + "x" + ".$" * 500_000),
        ("grade 2^{50000 \\cdot 50000}", grade_answer, "2^{50000 \\cdot 50000}", "2"),
        ("grade \\Gamma(10^{6})", grade_answer, "\\Gamma(10^{6})", "1"),
        ("grade 400-deep braces", grade_answer, "{" * 400 + "1" + "}" * 400, "2"),
        ("qwen_math: \\Gamma(10^{6})", answers_equal, "\\Gamma(10^{6})", "1", "qwen_math"),
    ]
    grade_answer("x+1", "1+x")  # start the symbolic worker outside the timings
    print("| input (in a worker thread) | seconds | result |")
    print("|---|---|---|")
    for label, fn, *args in cases:
        result, seconds = _in_thread(fn, *args)
        shown = result if not isinstance(result, str) or len(result) < 20 else f"{len(result)} chars"
        print(f"| {label} | {seconds:.3f} | {shown} |")


def throughput(rounds: int = 5) -> None:
    from cft.tasks.graders import answers_equal, extract
    from cft.tasks.qwen_math import qwen_judge

    cases = [json.loads(line) for line in (REPO / "tests" / "fixtures" / "eval_parity.jsonl").read_text().splitlines()]

    def qwen(case: dict) -> bool:
        return qwen_judge(case["generation"], case["gold"], case["benchmark"])[2]

    def math_verify(case: dict) -> bool:
        answer, _ = extract(case["generation"], "math_verify")
        return answer is not None and answers_equal(answer, case["gold"], "math_verify")

    print("| mode | first pass (gen/s) | warm, best of rounds (gen/s) |")
    print("|---|---|---|")
    for name, grade in (("qwen_math", qwen), ("math_verify", math_verify)):
        times = []
        for _ in range(rounds):
            start = time.perf_counter()
            for case in cases:
                grade(case)
            times.append(time.perf_counter() - start)
        print(f"| {name} | {len(cases) / times[0]:.0f} | {len(cases) / min(times[1:]):.0f} |")


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="grading cost: adversarial inputs and throughput")
    parser.add_argument("--rounds", type=int, default=5, help="passes over the parity cases per mode (>= 2)")
    args = parser.parse_args()
    adversarial()
    print()
    throughput(max(2, args.rounds))
