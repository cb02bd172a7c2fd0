"""Model configs: every model x stage pair composes through the CLI parser; tiny random models of each architecture
load with the settings the model configs use (bf16, sdpa, checkpointing, stops); bad settings fail before compute."""

from __future__ import annotations

import copy

import pytest
import torch
import yaml

from cft.cli import main
from cft.errors import CFTError, ModelLoadError
from cft.lm.loading import ModelConfig, TinyArch, load_model
from cft.modules.causal_lm import CausalLMModule
from tests.helpers import REPO, fast_fit_args

MODELS = sorted(p.stem for p in (REPO / "configs/models").glob("*.yaml"))
STAGES = {
    "annotate": ("predict", "cft.modules.scorer.PerturbationScorer"),
    "sft": ("fit", "cft.modules.TokenWeightedLearner"),
    "cft": ("fit", "cft.modules.TokenWeightedLearner"),
    "eval": ("test", "cft.modules.evaluator.Evaluator"),
    "grpo": ("fit", "cft.modules.grpo.GRPO"),
}
PAPER_MODELS = {
    "qwen2.5-0.5b-instruct": "Qwen/Qwen2.5-0.5B-Instruct",
    "qwen2.5-math-1.5b": "Qwen/Qwen2.5-Math-1.5B",
    "qwen2.5-3b": "Qwen/Qwen2.5-3B",
    "qwen2.5-7b": "Qwen/Qwen2.5-7B",
    "llama-3.1-8b-instruct": "meta-llama/Llama-3.1-8B-Instruct",
    "olmo-2-1124-7b-instruct": "allenai/OLMo-2-1124-7B-Instruct",
    "smollm2-135m-instruct": "HuggingFaceTB/SmolLM2-135M-Instruct",
}


def test_one_config_per_paper_model():
    assert sorted(PAPER_MODELS) == MODELS


@pytest.mark.parametrize("stage", sorted(STAGES))
@pytest.mark.parametrize("model", MODELS)
def test_model_composes_with_stage(model, stage, capsys):
    subcommand, class_path = STAGES[stage]
    args = [subcommand, "--config", str(REPO / f"configs/paper/{stage}.yaml")]
    args += ["--config", str(REPO / f"configs/models/{model}.yaml")]
    if subcommand == "fit":
        args += ["--config", str(REPO / "configs/strategy/deepspeed_zero3.yaml")]
    with pytest.raises(SystemExit) as e:
        main([*args, "--print_config"])
    assert e.value.code in (0, None)
    out = capsys.readouterr().out
    cfg = yaml.safe_load("\n".join(line for line in out.splitlines() if not line.startswith("[")))  # DeepSpeed's log
    m = cfg["model"]["init_args"]["model"]
    assert cfg["model"]["class_path"] == class_path  # the model file changes settings, never the stage's class
    assert m["name_or_path"] == PAPER_MODELS[model]
    assert (m["dtype"], m["attn_implementation"], cfg["trainer"]["precision"]) == ("bfloat16", "sdpa", "bf16-mixed")
    assert m["stop_tokens"] and m["max_length"] >= 2048
    assert cfg["data"]["init_args"]["template"]["class_path"] == "cft.tasks.ChatTemplate"
    assert cfg["run"]["experiment"] == model
    lengths = {**cfg["model"]["init_args"], **(cfg["model"]["init_args"].get("settings") or {})}  # the scorer's group
    for key in ("max_new_tokens", "max_rollout_tokens", "val_max_new_tokens"):
        assert lengths.get(key, 0) <= m["max_length"], key
    if stage in ("sft", "cft"):
        assert cfg["data"]["init_args"]["max_length"] <= m["max_length"]
        assert cfg["data"]["init_args"]["task"]["class_path"] == "cft.tasks.training.MathTrainTask"
    if subcommand == "fit":
        assert cfg["trainer"]["strategy"]["init_args"]["stage"] == 3


@pytest.mark.parametrize("arch", ["qwen2", "llama", "olmo2"])
def test_tiny_model_of_each_architecture_loads_with_model_config_settings(arch, world_tokenizer):
    tok = world_tokenizer
    stop = tok.convert_ids_to_tokens(7)
    cfg = ModelConfig(
        name_or_path="tiny",
        tokenizer="world:arithmetic",
        tiny=TinyArch(arch=arch, hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=64),
        dtype="bfloat16",
        attn_implementation="sdpa",
        gradient_checkpointing=True,
        stop_tokens=[stop],
        stop_strings=["\n\nQuestion:"],
    )
    model = load_model(cfg, tok)
    assert model.config.model_type == arch
    assert model.config._attn_implementation == "sdpa"
    assert getattr(model, "is_activation_checkpointing", None) or model.is_gradient_checkpointing
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert set(model.generation_config.eos_token_id) == {tok.eos_token_id, 7}
    assert model.generation_config.stop_strings == ["\n\nQuestion:"]  # read by every engine (model_stop_strings)
    model.train()
    ids = torch.tensor([tok.encode("Question: 1 + 2")])
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()  # checkpointed backward runs in bf16
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_flash_attention_without_the_package_fails_when_the_config_is_read(tmp_path, capsys):
    with pytest.raises(ModelLoadError, match="flash"):
        ModelConfig(name_or_path="x/y", dtype="bfloat16", attn_implementation="flash_attention_2")
    with pytest.raises(CFTError, match="attn_implementation must be one of"):
        ModelConfig(name_or_path="x/y", attn_implementation="flash")
    args = [
        "fit",
        "--config",
        str(REPO / "configs/paper/sft.yaml"),
        "--config",
        str(REPO / "configs/models/qwen2.5-7b.yaml"),
    ]
    args += ["--model.init_args.model.attn_implementation", "flash_attention_2", "--run.root", str(tmp_path)]
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "flash_attention_2" in err[0]


def test_stop_token_that_is_not_one_token_is_an_error(world_tokenizer):
    cfg = ModelConfig(name_or_path="tiny", tokenizer="world:arithmetic", stop_tokens=["<|no such token|>"])
    with pytest.raises(ModelLoadError, match="not a single token"):
        cfg.stop_token_ids(world_tokenizer)


def test_stop_token_that_is_the_unk_token_is_accepted(world_tokenizer):
    # SmolLM2's tokenizer names "<|endoftext|>" (id 0) as its unk token and also ends text with it.
    tok = copy.deepcopy(world_tokenizer)
    tok.unk_token = "<|pad|>"
    pad_id = tok.convert_tokens_to_ids("<|pad|>")
    assert tok.unk_token_id == pad_id
    cfg = ModelConfig(name_or_path="tiny", tokenizer="world:arithmetic", stop_tokens=["<|pad|>", "<|endoftext|>"])
    assert cfg.stop_token_ids(tok) == [pad_id, tok.eos_token_id]
    with pytest.raises(ModelLoadError, match="not a single token"):
        ModelConfig(name_or_path="tiny", tokenizer="world:arithmetic", stop_tokens=["<|nope|>"]).stop_token_ids(tok)


def test_generation_budget_over_max_length_fails_before_loading():
    cfg = ModelConfig(name_or_path="no/such-model", max_length=256)
    module = CausalLMModule(cfg)
    module.max_new_tokens = 512
    with pytest.raises(ModelLoadError, match="model.max_new_tokens=512 exceed"):
        module.configure_model()  # raises before any download is tried
    module.max_new_tokens = 128
    with pytest.raises(ModelLoadError, match="could not be loaded"):
        module.configure_model()


def test_stop_strings_of_the_model_config_reach_generation(tiny_model_dir, monkeypatch):
    import cft.lm.engines.hf as hf_engine
    from cft.modules.evaluator import Evaluator

    seen = {}

    def fake_generate(model, tokenizer, prompt_ids, **kwargs):
        seen.update(kwargs)
        return [[] for _ in prompt_ids]

    monkeypatch.setattr(hf_engine, "generate", fake_generate)
    ev = Evaluator(ModelConfig(name_or_path=str(tiny_model_dir), stop_strings=["\n\nQuestion:"]))
    ev._generate([[1, 2, 3]], sample=False)
    assert list(seen["stop_strings"]) == ["\n\nQuestion:"]


def test_stop_strings_of_the_model_config_end_real_generations(tiny_model_dir, world_tokenizer):
    """load_model puts model.stop_strings where every engine reads them: the output stops at the first match."""
    from cft.lm.generation import generate

    tok = world_tokenizer
    prompt = [tok.encode("Question: Compute 3 + 4.\nAnswer:\n")]

    def sample(cfg):
        torch.manual_seed(0)  # the same draws in both runs, so they agree up to the stop
        return generate(load_model(cfg, tok), tok, prompt, max_new_tokens=24, do_sample=True)[0][0]

    free = sample(ModelConfig(name_or_path=str(tiny_model_dir)))
    text = free.text
    # A two-character text the random model is sure to write: its own output, past the first few characters.
    stop = next(text[i : i + 2] for i in range(3, len(text) - 1) if text[i : i + 2].strip() == text[i : i + 2])
    cut = sample(ModelConfig(name_or_path=str(tiny_model_dir), stop_strings=[stop]))
    assert cut.stop_reason == "stop_string" and len(cut.token_ids) < len(free.token_ids)
    # It ends with the token that completes the first match (kept whole), a prefix of the free generation.
    assert text.startswith(cut.text) and stop in cut.text
    assert stop not in tok.decode(cut.token_ids[:-1])


def test_scorer_budgets_over_max_length_fail_before_loading():
    from cft.modules.scorer import PerturbationScorer, ScorerSettings

    cfg = ModelConfig(name_or_path="no/such-model", max_length=512)
    scorer = PerturbationScorer(cfg, settings=ScorerSettings(max_new_tokens=256, max_rollout_tokens=1024))
    with pytest.raises(ModelLoadError, match="model.settings.max_rollout_tokens=1024 exceed"):
        scorer.configure_model()


def test_data_max_length_over_model_max_length_fails_before_the_run_dir(tiny_model_dir, tmp_path, capsys):
    # The DataModule's cap reaches the module through the CLI (`CFTCLI._connect`), not through trainer.datamodule.
    args = fast_fit_args(tiny_model_dir, tmp_path / "runs", steps=1)
    args += ["--model.init_args.model.max_length", "64", "--data.init_args.max_length", "128"]
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "data.max_length=128 exceed(s) model.max_length=64" in err, err
    assert not (tmp_path / "runs").exists()
