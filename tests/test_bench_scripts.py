"""Every speed benchmark in benchmarks/ runs end to end at tiny sizes (smoke test: exit status and its report line;
no timing is asserted, the numbers live in benchmarks/RESULTS.md)."""

from __future__ import annotations

import runpy
import sys

import pytest
import torch

from tests.helpers import REPO

# script -> (arguments that make it small, a line of its report that must appear)
SMALL = {
    "bench_engines.py": (
        ["--size", "tiny", "--engines", "hf", "--examples", "2", "--prompt-len", "8", "--response-len", "8",
         "--rollout-tokens", "4", "--batch-size", "8", "--agreement-examples", "0"],
        "rollouts equal to the first engine's: 32/32",
    ),
    "bench_eval.py": (
        ["--problems", "2", "--num-samples", "2", "--max-new-tokens", "4", "--repeats", "1", "--batch-size", "4"],
        "SUMMARY bench_eval:",
    ),
    "bench_eval_memory.py": (["--problems", "2", "--tokens", "4"], "max_new_tokens  generated  peak RSS MiB"),
    "bench_grading.py": (["--rounds", "2"], "| qwen_math |"),
    "bench_grpo.py": (
        ["--rounds", "2", "--prompts", "2", "--generations", "2", "--max-new-tokens", "4", "--repeats", "1",
         "--threads", "1"],
        "ratio TRL/cft:",
    ),
    "bench_loss_memory.py": (["--vocab", "1000", "--batch", "2", "--length", "16", "--dtype", "float32"], "ratio plain"),
    "bench_scorer.py": (["--examples", "2", "--max-rollout-tokens", "4", "--batch-size", "8"], "masks identical: True"),
    "bench_sft.py": (["--steps", "2", "--batch", "2", "--warmup", "1", "--rows", "8"], "RESULT sft tokens/s:"),
}  # fmt: skip


def test_every_benchmark_has_a_smoke_run():
    assert sorted(p.name for p in (REPO / "benchmarks").glob("bench_*.py")) == sorted(SMALL)


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(SMALL))
def test_benchmark_runs_at_tiny_size(script, monkeypatch, capsys, tmp_path):
    args, report = SMALL[script]
    monkeypatch.chdir(tmp_path)  # whatever a benchmark writes relative to the cwd stays out of the repo
    monkeypatch.setattr(sys, "argv", [script, *args])
    threads = torch.get_num_threads()
    try:
        runpy.run_path(str(REPO / "benchmarks" / script), run_name="__main__")
    except SystemExit as e:
        assert e.code in (0, None), f"{script} exited with {e.code}"
    finally:
        torch.set_num_threads(threads)  # some benchmarks set their own thread count
    assert report in capsys.readouterr().out
