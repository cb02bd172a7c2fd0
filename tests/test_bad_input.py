"""Bad input gets one clear error naming what and where (and, for over-long rows, a counted policy)."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from cft.data.collate import encode_pair, fit_length
from cft.errors import DataError, ModelLoadError
from cft.lm.loading import ModelConfig, check_tokenizer_matches, load_model, load_tokenizer


def test_tokenizer_model_mismatch(tiny_model_dir):
    from cft.lm.loading import TinyArch, build_tiny_model

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.add_tokens([f"<extra{i}>" for i in range(600)])  # more ids than the model has embeddings
    model = build_tiny_model(
        TinyArch(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64),
        AutoTokenizer.from_pretrained(tiny_model_dir),
    )
    with pytest.raises(ModelLoadError, match="tokenizer does not match .* embedding has"):
        check_tokenizer_matches(model, tok, where="x")


def test_mismatched_tokenizer_path_is_caught_at_load(tiny_model_dir, tmp_path):
    big = AutoTokenizer.from_pretrained(tiny_model_dir)
    big.add_tokens([f"<extra{i}>" for i in range(600)])
    big.save_pretrained(tmp_path / "big_tok")
    cfg = ModelConfig(name_or_path=str(tiny_model_dir), tokenizer=str(tmp_path / "big_tok"))
    with pytest.raises(ModelLoadError, match=str(tiny_model_dir)):
        load_model(cfg, load_tokenizer(cfg))


def test_dir_without_config_is_not_a_model(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_tokenizer(ModelConfig(name_or_path=str(tmp_path / "empty")))


def test_hub_id_offline_is_clear():
    with pytest.raises(ModelLoadError, match="could not be loaded"):
        load_tokenizer(ModelConfig(name_or_path="no-such-org/no-such-model-xyz"))


def test_tiny_needs_tokenizer():
    with pytest.raises(ValueError, match="model.tokenizer is required"):
        ModelConfig(name_or_path="tiny")


@pytest.mark.parametrize(
    "prompt,response,field", [("", "1 + 1 = 2", "prompt"), ("Q", "   ", "response"), (None, "x", "prompt")]
)
def test_empty_or_missing_field(world_tokenizer, prompt, response, field):
    with pytest.raises(DataError, match=f"row 7: field '{field}' is missing or empty"):
        encode_pair(world_tokenizer, prompt, response, where="row 7")


def test_overlong_policies():
    row = {"id": "r", "prompt_ids": [1, 2, 3], "response_ids": [4, 5, 6, 7], "critical": [0, 1, 1, 0]}
    with pytest.raises(DataError, match="train row 'r': prompt\\+response is 7 tokens, over max_length=5"):
        fit_length(row, 5, "error", "train row 'r'")
    assert fit_length(row, 5, "skip", "w") is None
    cut = fit_length(row, 5, "truncate", "w")
    assert cut["response_ids"] == [4, 5] and cut["critical"] == [0, 1] and row["response_ids"] == [4, 5, 6, 7]
    assert fit_length(row, 7, "error", "w") is row


def test_overlong_rows_are_counted(tiny_model_dir, tmp_path):
    import json

    from cft.cli import main
    from tests.helpers import fast_fit_args

    for policy in ("skip", "truncate"):
        args = fast_fit_args(tiny_model_dir, tmp_path, name=policy, steps=1) + [
            "--data.init_args.max_length",
            "42",
            "--data.init_args.overlong",
            policy,
        ]
        main(args)  # rows over 42 tokens are skipped (or truncated) and counted, the rest train
        stats = json.loads((tmp_path / "exp" / policy / "data_stats.json").read_text())
        assert stats[f"train/{'skipped' if policy == 'skip' else 'truncated'}"] == 12  # 12 of the 32 rows > 42
        assert stats["train_rows"] == (20 if policy == "skip" else 32)
    with pytest.raises(SystemExit) as e:
        main(fast_fit_args(tiny_model_dir, tmp_path, name="err", steps=1) + ["--data.init_args.max_length", "42"])
    assert e.value.code == 2
