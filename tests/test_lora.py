"""LoRA through peft: only adapters train and are checkpointed, the merged export equals the adapted model, the base
with the adapter disabled serves as Rho-1's and GRPO's reference, bad target modules fail clearly, ZeRO-2 works."""

from __future__ import annotations

import json

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from cft.cli import main
from cft.errors import LoraError, WeightingError
from cft.lm.loading import ModelConfig, load_model, load_tokenizer
from cft.lm.lora import LoraSettings
from tests.helpers import REPO, fast_fit_args, run_cli

LORA = "{r: 4, alpha: 8, dropout: 0.0, target_modules: [q_proj, v_proj]}"
TARGETS = (".q_proj.", ".v_proj.")


def _lora_args(model_dir, root, name, steps):
    return fast_fit_args(model_dir, root, name=name, steps=steps) + [
        "--model.init_args.model.lora",
        LORA,
        "--model.init_args.optimizer.lr",
        "0.01",
    ]


def _check_export(run, base_dir):
    """Non-target weights equal the base exactly; target weights moved; merged logits equal base + adapter."""
    merged = AutoModelForCausalLM.from_pretrained(run / "hf/last")
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    merged_sd, base_sd = merged.state_dict(), base.state_dict()
    assert merged_sd.keys() == base_sd.keys()
    moved = [k for k in base_sd if not torch.equal(merged_sd[k], base_sd[k])]
    assert moved and all(any(t in k for t in TARGETS) for k in moved), moved
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), run / "hf/last/adapter")
    ids = torch.arange(3, 40).view(1, -1)
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, adapted(ids).logits, rtol=1e-5, atol=1e-5)


def test_lora_fit_trains_and_checkpoints_only_adapters_and_exports_merged(tiny_model_dir, tmp_path):
    main(_lora_args(tiny_model_dir, tmp_path, "lora", steps=3))
    run = tmp_path / "exp/lora"
    state = torch.load(run / "checkpoints/last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    assert state and all("lora_A" in k or "lora_B" in k for k in state), sorted(state)[:5]
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in state.items())  # B starts at 0: it trained
    assert (run / "hf/last/adapter/adapter_config.json").is_file()
    _check_export(run, tiny_model_dir)
    # Resume from the adapter-only checkpoint: the frozen base comes from disk again, training continues.
    main([*_lora_args(tiny_model_dir, tmp_path, "lora", steps=5), "--run.resume_with_changes", "true"])
    assert json.loads((run / "hf/last/cft_export.json").read_text())["step"] == 5
    _check_export(run, tiny_model_dir)


def test_lora_target_that_matches_nothing_is_one_clear_error(tiny_model_dir):
    cfg = ModelConfig(name_or_path=str(tiny_model_dir), lora=LoraSettings(target_modules=["q_proj", "qkv"]))
    with pytest.raises(LoraError, match=r"\['qkv'\] match no module.*q_proj"):
        load_model(cfg, load_tokenizer(cfg))


def test_rho1_reference_under_lora_is_the_base_with_the_adapter_disabled(tiny_model_dir):
    from cft.modules.learner import TokenWeightedLearner
    from cft.modules.weighting import Rho1Weighting

    cfg = ModelConfig(name_or_path=str(tiny_model_dir), lora=LoraSettings(r=2, target_modules=["q_proj"]))
    rho = Rho1Weighting(reference=None, fraction=0.5)
    learner = TokenWeightedLearner(cfg, weighting=rho)
    learner.configure_model()
    assert rho._model is learner.model  # no second copy
    with torch.no_grad():
        for name, p in learner.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # make the adapter matter
    ids = torch.arange(3, 30).view(1, -1)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        base_logits = base(ids).logits[:, :-1]
        adapted_logits = learner.model(input_ids=ids).logits[:, :-1]
    want = torch.nn.functional.cross_entropy(base_logits.flatten(0, 1), ids[:, 1:].flatten(), reduction="none")
    torch.testing.assert_close(rho.reference_nll(batch), want.view(1, -1), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(base_logits, adapted_logits, atol=1e-3)
    with pytest.raises(WeightingError, match="model.lora is not set"):
        Rho1Weighting(reference=None).setup(TokenWeightedLearner(ModelConfig(name_or_path=str(tiny_model_dir))))


def test_grpo_kl_reference_under_lora_loads_no_copy(tiny_model_dir):
    from cft.modules.grpo import GRPO

    cfg = ModelConfig(name_or_path=str(tiny_model_dir), lora=LoraSettings(r=2, target_modules=["q_proj"]))
    module = GRPO(cfg, num_generations=2, beta=0.1)
    module.configure_model()
    assert module._ref == []
    n_base = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(tiny_model_dir).parameters())
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    assert 0 < trainable < n_base / 10


def test_grpo_under_lora_kl_is_zero_at_start_and_grows(tiny_model_dir, tmp_path):
    """The KL reference is the base with the adapter disabled: equal to the policy at start (B = 0), then apart."""
    from tests.test_grpo import _rows, _series, grpo_args

    extra = [
        "--model.init_args.beta", "0.1",
        "--model.init_args.model.lora", LORA,
        "--model.init_args.optimizer.lr", "0.05",
        "--model.init_args.reward_funcs", "[tests.test_grpo.starts_with_digit]",  # rewards vary: gradients flow
        "--model.init_args.reward_weights", "[1.0]",
        "--model.init_args.num_generations", "8",
        "--data.init_args.batch_size", "4",
    ]  # fmt: skip
    main(grpo_args(tiny_model_dir, tmp_path, name="glora", steps=3, extra=extra))
    kl = _series(_rows(tmp_path / "exp/glora/metrics.csv"), "rl/kl")
    assert kl[0] == 0.0 and kl[-1] > 0.0, kl


@pytest.mark.slow
def test_lora_under_deepspeed_zero2_with_two_cpu_ranks(tiny_model_dir, tmp_path):
    args = _lora_args(tiny_model_dir, tmp_path, "z2", steps=2)
    args += [
        "--config",
        str(REPO / "configs/strategy/deepspeed_zero2_cpu.yaml"),
        "--data.init_args.micro_batch_size",
        "2",
    ]
    res = run_cli(args, timeout=900)
    assert res.returncode == 0, res.stderr[-4000:]
    _check_export(tmp_path / "exp/z2", tiny_model_dir)
    states = tmp_path / "exp/z2/checkpoints/last.ckpt/checkpoint/mp_rank_00_model_states.pt"
    module = torch.load(states, map_location="cpu", weights_only=False)["module"]
    # DeepSpeed's checkpoint holds the adapters and no frozen weight, except the alias of the tied embedding that
    # DeepSpeed keeps by its state-dict name (the test model ties lm_head to the input embedding).
    frozen = [k for k in module if "lora_" not in k]
    assert any("lora_B" in k for k in module) and frozen in ([], ["model.base_model.model.lm_head.weight"]), frozen
    # Resume from that checkpoint (the frozen base comes from disk again) and train on.
    args = (
        _lora_args(tiny_model_dir, tmp_path, "z2", steps=3) + args[len(_lora_args(tiny_model_dir, tmp_path, "z2", 2)) :]
    )
    res = run_cli([*args, "--run.resume_with_changes", "true"], timeout=900)
    assert res.returncode == 0, res.stderr[-4000:]
    assert "resuming" in res.stdout
    assert json.loads((tmp_path / "exp/z2/hf/last/cft_export.json").read_text())["step"] == 3
    _check_export(tmp_path / "exp/z2", tiny_model_dir)


def test_lora_config_composes_with_a_paper_stage_and_model(capsys):
    import yaml

    args = [
        "fit",
        "--config",
        str(REPO / "configs/paper/cft.yaml"),
        "--config",
        str(REPO / "configs/models/qwen2.5-7b.yaml"),
    ]
    with pytest.raises(SystemExit) as e:
        main([*args, "--config", str(REPO / "configs/peft/lora.yaml"), "--print_config"])
    assert e.value.code in (0, None)
    out = capsys.readouterr().out
    cfg = yaml.safe_load("\n".join(line for line in out.splitlines() if not line.startswith("[")))
    lora = cfg["model"]["init_args"]["model"]["lora"]
    assert lora["r"] == 16 and "q_proj" in lora["target_modules"]
    assert cfg["model"]["init_args"]["model"]["name_or_path"] == "Qwen/Qwen2.5-7B"
