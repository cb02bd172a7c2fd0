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
