"""`make gpu-check`: refuses plainly without CUDA; its measuring callback works on CPU; the full check needs a GPU."""

from __future__ import annotations

import json

import pytest
import torch

from cft.cli import main
from cft.gpu_check import main as gpu_check
from cft.gpu_check import peak_flops
from tests.helpers import fast_fit_args


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the check would run")
def test_without_cuda_it_says_it_needs_a_gpu_and_runs_nothing(tmp_path, capsys):
    assert gpu_check(["--out", str(tmp_path)]) == 1
    assert "needs a CUDA GPU" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_peak_flops_by_device_name():
    assert peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert peak_flops("Some Future GPU") is None


def test_gpu_stats_callback_counts_training_tokens(tiny_model_dir, tmp_path):
    args = fast_fit_args(tiny_model_dir, tmp_path, name="s", steps=3)
    main([*args, "--trainer.callbacks+=cft.callbacks.gpu_stats.GPUStats"])
    stats = json.loads((tmp_path / "exp/s/gpu_stats.json").read_text())
    # 3 steps x 4 rows; each row's tokens counted once.
    assert stats["stage"] == "fit" and stats["train_tokens"] > 3 * 4 * 5 and stats["wall_s"] > 0
    assert stats["n_params"] == sum(p.numel() for p in __import__("transformers").AutoModelForCausalLM
                                    .from_pretrained(tiny_model_dir).parameters())  # fmt: skip


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none in this session: not run)")
def test_gpu_check_end_to_end(tmp_path):
    assert gpu_check(["--out", str(tmp_path), "--steps", "5"]) == 0
    for stage in ("annotate", "cft", "eval"):
        assert (tmp_path / "gpu_check" / stage / "gpu_stats.json").is_file()


def test_limit_reaches_annotate_and_eval_and_no_bench_skips_the_benchmark(tmp_path, monkeypatch, capsys):
    import cft.gpu_check as g

    calls: list[list[str]] = []
    monkeypatch.setattr(g.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(g, "_cached", lambda model: "some/base")
    monkeypatch.setattr(g, "_run", calls.append)
    monkeypatch.setattr(g.subprocess, "run", lambda *a, **k: pytest.fail("the engine benchmark ran"))
    stats = {"wall_s": 2.0, "train_tokens_per_s": 1000.0, "peak_memory_gib_rank0": 1.5, "n_params": 10**6,
             "world_size": 1, "device": "NVIDIA H100 80GB HBM3"}  # fmt: skip
    for stage in ("annotate", "cft", "eval"):
        (tmp_path / "gpu_check" / stage).mkdir(parents=True)
        (tmp_path / "gpu_check" / stage / "gpu_stats.json").write_text(json.dumps(stats))
    assert g.main(["--out", str(tmp_path), "--limit", "7", "--steps", "3", "--no-bench"]) == 0
    (annotate, cft, evaluate) = calls
    assert annotate[annotate.index("--data.init_args.limit") + 1] == "7"
    assert evaluate[evaluate.index("--data.init_args.limit") + 1] == "7"
    assert cft[cft.index("--trainer.max_steps") + 1] == "3"
    # MFU = 6 x 1e6 x 1000 / 989e12 = 0.0006%; printed with one decimal.
    assert "cft             2.0         1000    0.0%      1.50  NVIDIA H100 80GB HBM3 x 1" in capsys.readouterr().out
