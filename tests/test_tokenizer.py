"""The world tokenizer: single-digit tokens, exact round trip, HF loading, determinism and caching."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer

from cft.lm.tokenizer import EOS_TOKEN, PAD_TOKEN, train_world_tokenizer, world_tokenizer
from cft.tasks import ArithmeticTask, PlainTemplate

SMALL = dict(word_problems=0.5, n_pretrain=2000, n_train=200, n_val=20, n_test=20, n_test_hard=200)


@pytest.fixture(scope="module")
def task() -> ArithmeticTask:
    return ArithmeticTask(**SMALL)


@pytest.fixture(scope="module")
def tok_dir(task: ArithmeticTask, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tok") / "world"
    train_world_tokenizer(task.corpus(), path)
    return path


def test_digits_are_single_tokens(tok_dir: Path) -> None:
    tok = AutoTokenizer.from_pretrained(tok_dir)
    ids = tok("12345", add_special_tokens=False)["input_ids"]
    assert [tok.decode([i]) for i in ids] == list("12345")
    for text in ["Compute 480 - 17.", "#### -2024"]:
        pieces = [tok.decode([i]) for i in tok(text)["input_ids"]]
        assert all(not any(c.isdigit() for c in p) or len(p.strip()) == 1 for p in pieces), pieces


def test_round_trip_is_exact(task: ArithmeticTask, tok_dir: Path) -> None:
    tok = AutoTokenizer.from_pretrained(tok_dir)
    template = PlainTemplate()
    texts = [template.render(p.question) + p.solution for p in task.problems("train")[:100]]
    texts += [template.render(p.question) + p.solution for p in task.problems("test_hard")[:100]]
    texts += ["  two spaces\n\n\ttab and trailing \n", "unseen ünïcödé ∑ \\boxed{\\frac{1}{2}}"]
    for text in texts:
        assert tok.decode(tok(text)["input_ids"]) == text


def test_special_tokens_and_loading(tok_dir: Path) -> None:
    tok = AutoTokenizer.from_pretrained(tok_dir)
    assert tok.eos_token == EOS_TOKEN and tok.pad_token == PAD_TOKEN
    assert tok.eos_token_id is not None and tok.pad_token_id is not None and tok.eos_token_id != tok.pad_token_id
    assert tok.padding_side == "right"
    ids = tok("1 + 2" + EOS_TOKEN)["input_ids"]
    assert ids[-1] == tok.eos_token_id
    assert tok.unk_token_id is None or tok.unk_token_id not in tok("∑ é 🙂")["input_ids"]
    assert 256 < len(tok) <= 512


def test_deterministic(task: ArithmeticTask, tok_dir: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    train_world_tokenizer(task.corpus(), again)
    assert (again / "tokenizer.json").read_bytes() == (tok_dir / "tokenizer.json").read_bytes()


def test_existing_dir_is_loaded_not_retrained(tok_dir: Path) -> None:
    before = (tok_dir / "tokenizer.json").read_bytes()
    tok = train_world_tokenizer(["completely different text"], tok_dir)
    assert (tok_dir / "tokenizer.json").read_bytes() == before
    assert tok("12")["input_ids"] == AutoTokenizer.from_pretrained(tok_dir)("12")["input_ids"]


def test_world_tokenizer_caches_by_config(tmp_path: Path) -> None:
    small = dict(n_pretrain=200, n_train=50, n_val=10, n_test=10, n_test_hard=10)
    tok = world_tokenizer(ArithmeticTask(**small), cache_dir=tmp_path)
    assert tok.decode(tok("Compute 3 + 4.")["input_ids"]) == "Compute 3 + 4."
    world_tokenizer(ArithmeticTask(**small), cache_dir=tmp_path)
    assert len([p for p in tmp_path.iterdir()]) == 1, "same world must reuse its cached tokenizer"
    world_tokenizer(ArithmeticTask(seed=1, **small), cache_dir=tmp_path)
    dirs = sorted(p.name for p in tmp_path.iterdir())
    assert len(dirs) == 2 and all(d.startswith("arithmetic-") for d in dirs)
