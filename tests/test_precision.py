"""Precision and memory: the chunked loss and entropy equal the plain computation (values and gradients); bf16-mixed
and bf16-true training run on CPU and export what they trained."""

from __future__ import annotations

import csv
import math

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

from cft.cli import main
from cft.lm.chunked import chunked_mean_entropy, chunked_token_nll
from tests.helpers import fast_fit_args


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_chunked_nll_equals_plain_cross_entropy_with_gradients(dtype):
    torch.manual_seed(0)
    logits = (torch.randn(3, 7, 50) * 3).to(dtype).requires_grad_(True)
    targets = torch.randint(0, 50, (3, 7))
    weights = torch.rand(3, 7)
    plain = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="none").view(3, 7)
    (g_plain,) = torch.autograd.grad((plain * weights).sum(), logits)
    chunked = chunked_token_nll(logits, targets, chunk=4)  # 21 positions: 5 full chunks and one of 1
    (g_chunked,) = torch.autograd.grad((chunked * weights).sum(), logits)
    assert chunked.dtype == torch.float32
    torch.testing.assert_close(chunked, plain)
    torch.testing.assert_close(g_chunked, g_plain)


def test_chunked_entropy_equals_naive():
    torch.manual_seed(1)
    logits = torch.randn(2, 9, 30)
    mask = torch.rand(2, 9) > 0.4
    logp = torch.log_softmax(logits[mask], -1)
    want = -(logp.exp() * logp).sum(-1).mean()
    torch.testing.assert_close(chunked_mean_entropy(logits, mask, chunk=3), want)
    assert chunked_mean_entropy(logits, torch.zeros_like(mask)) == 0


@pytest.mark.parametrize("precision", ["bf16-mixed", "bf16-true"])
def test_bf16_training_on_cpu(precision, tiny_model_dir, tmp_path):
    args = fast_fit_args(tiny_model_dir, tmp_path, name=precision, steps=3)
    main([*args, "--trainer.precision", precision, "--model.init_args.optimizer.lr", "0.01"])
    run = tmp_path / "exp" / precision
    with open(run / "metrics.csv", newline="") as f:
        losses = [float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
    trained = AutoModelForCausalLM.from_pretrained(run / "hf/last", dtype="auto")
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    # bf16-true trains (and exports) bf16 weights; bf16-mixed keeps fp32 weights and computes in bf16.
    want = torch.bfloat16 if precision == "bf16-true" else torch.float32
    assert {p.dtype for p in trained.parameters()} == {want}
    changed = [k for k, v in trained.state_dict().items() if not torch.equal(v.float(), base.state_dict()[k].float())]
    assert changed


def test_offload_lets_the_configured_torch_optimizer_through():
    from cft.modules.causal_lm import allow_torch_optimizer_with_offload

    cfg = {"zero_optimization": {"stage": 2, "offload_optimizer": {"device": "cpu"}}}
    allow_torch_optimizer_with_offload(cfg)
    assert cfg["zero_force_ds_cpu_optimizer"] is False
    plain = {"zero_optimization": {"stage": 2, "offload_optimizer": {"device": "none"}}}
    allow_torch_optimizer_with_offload(plain)
    assert "zero_force_ds_cpu_optimizer" not in plain


@pytest.mark.slow
def test_deepspeed_optimizer_offload_from_the_shipped_config_matches_hand_computation(tiny_model_dir, tmp_path):
    """ZeRO-2 with offload_optimizer (set on the shipped CPU strategy config) and the configured torch optimizer:
    DeepSpeed used to refuse it ("ZeRO-Offload with a client provided optimizer"); the update is exact."""
    from transformers import AutoTokenizer

    from tests.helpers import run_cli
    from tests.test_learner import _naive_loss, _rows, _sgd_args

    args = _sgd_args(tiny_model_dir, tmp_path, "off", micro=2, accum=2, world_size=2)
    args += [
        "--config",
        "configs/strategy/deepspeed_zero2_cpu.yaml",
        "--trainer.strategy.init_args.offload_optimizer",
        "true",
    ]
    res = run_cli(args, timeout=900)
    assert res.returncode == 0, res.stderr[-4000:]
    trained = AutoModelForCausalLM.from_pretrained(tmp_path / "exp/off/hf/last").state_dict()
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    _naive_loss(model, _rows(AutoTokenizer.from_pretrained(tiny_model_dir), 8)).backward()
    for k, p in model.named_parameters():
        torch.testing.assert_close(trained[k], p.detach() - p.grad, rtol=1e-4, atol=1e-5, msg=k)


def test_zero3_loads_the_trained_model_partitioned_and_references_whole(tiny_model_dir, monkeypatch):
    """Under ZeRO-3 the weights are loaded inside deepspeed.zero.Init (partitioned as read), not whole on every rank;
    only the trained model: a model loaded afterwards (a reference) is whole again."""
    import socket
    import types

    import deepspeed
    import torch.distributed as dist

    from cft.lm.loading import ModelConfig, load_model
    from cft.modules.causal_lm import CausalLMModule

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for k, v in {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "1",
    }.items():
        monkeypatch.setenv(k, v)
    deepspeed.init_distributed(dist_backend="gloo", auto_mpi_discovery=False)
    try:
        module = CausalLMModule(ModelConfig(name_or_path=str(tiny_model_dir)))
        config = {"zero_optimization": {"stage": 3}, "train_micro_batch_size_per_gpu": 1}
        module._trainer = types.SimpleNamespace(strategy=types.SimpleNamespace(config=config))
        module.configure_model()
        assert all(hasattr(p, "ds_id") for p in module.model.parameters())
        reference = load_model(ModelConfig(name_or_path=str(tiny_model_dir)), module.tokenizer)
        assert not any(hasattr(p, "ds_id") for p in reference.parameters())
    finally:
        dist.destroy_process_group()
