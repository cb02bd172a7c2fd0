"""A small byte-level BPE tokenizer trained on the synthetic world, with every digit its own token.

Single-digit tokens make numbers compositional for a tiny model and make critical tokens individual digits.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from cft.io import atomic_path

__all__ = ["EOS_TOKEN", "PAD_TOKEN", "train_world_tokenizer", "world_tokenizer"]

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"
# Bump when the recipe below changes, so cached tokenizers of the old recipe are not reused.
_RECIPE_VERSION = 1
_REQUIRED_FILES = ("tokenizer.json", "tokenizer_config.json")


def _is_complete(save_dir: Path) -> bool:
    return all((save_dir / name).is_file() for name in _REQUIRED_FILES)


def _load(save_dir: Path) -> PreTrainedTokenizerFast:
    return AutoTokenizer.from_pretrained(str(save_dir))


def train_world_tokenizer(texts: Iterable[str], save_dir: str | Path, vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on `texts`, save it to `save_dir` atomically, and return it.

    Digits are always split into single tokens; `<|endoftext|>` is EOS and `<|pad|>` is PAD; nothing is added
    automatically around encoded text (the data code appends EOS). Byte-level pre-tokenization and decoding make
    `decode(encode(text)) == text` exact, newlines and spaces included. If `save_dir` already holds a saved
    tokenizer it is loaded as is, without training (callers key the directory by what the texts are).
    """
    save_dir = Path(save_dir)
    if _is_complete(save_dir):
        return _load(save_dir)
    if save_dir.exists() and any(save_dir.iterdir()):
        raise FileExistsError(f"{save_dir} exists but holds no complete tokenizer ({', '.join(_REQUIRED_FILES)})")

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN, PAD_TOKEN],
        # All 256 byte symbols, so any text encodes without an unknown token.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        padding_side="right",
        clean_up_tokenization_spaces=False,
    )
    # Readers see no tokenizer or a whole one; when another process finished the same tokenizer first, theirs is
    # as good as ours and is kept.
    with atomic_path(save_dir, keep_existing=True) as tmp:
        fast.save_pretrained(str(tmp))
    return _load(save_dir)


def _task_fingerprint(task: Any, vocab_size: int) -> str:
    config = getattr(task, "config", None)
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        described: Any = dataclasses.asdict(config)
    else:
        # No declared config: the corpus itself is the only faithful description of the world.
        digest = hashlib.sha256()
        for text in task.corpus():
            digest.update(text.encode())
            digest.update(b"\0")
        described = digest.hexdigest()
    payload = json.dumps(
        {
            "task": getattr(task, "name", type(task).__name__),
            "config": described,
            "vocab_size": vocab_size,
            "recipe": _RECIPE_VERSION,
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def world_tokenizer(
    task: Any, cache_dir: str | Path = "artifacts/tokenizers", vocab_size: int | None = None
) -> PreTrainedTokenizerFast:
    """The tokenizer of `task`'s world (trained on `task.corpus()`), cached under a hash of the task's config.

    `vocab_size` defaults to the task's `tokenizer_vocab_size` (512 when it has none): a world with more words
    needs more merges for every word to stay one token.

    A different world configuration gets a different directory, so tokenizers are never mixed up.
    """
    if vocab_size is None:
        vocab_size = int(getattr(task, "tokenizer_vocab_size", 512))
    name = getattr(task, "name", type(task).__name__)
    save_dir = Path(cache_dir) / f"{name}-{_task_fingerprint(task, vocab_size)}"
    if _is_complete(save_dir):
        return _load(save_dir)
    return train_world_tokenizer(task.corpus(), save_dir, vocab_size=vocab_size)


# The arithmetic world's tokenizer is trained on a corpus where half the problems are word problems, so that the
# story words are tokens too; every other world's default configuration covers itself. Stated once, here.
_TOKENIZER_WORLD_SETTINGS: dict[str, dict[str, Any]] = {"arithmetic": {"word_problems": 0.5}}


def tokenizer_world(name: str = "arithmetic") -> Any:
    """The task whose corpus trains the tokenizer of world `name` (`world:<name>` in `model.tokenizer`)."""
    from cft.tasks import get_task

    return get_task(name, **_TOKENIZER_WORLD_SETTINGS.get(name, {}))


def named_world_tokenizer(name: str = "arithmetic", cache_dir: str | Path = "artifacts/tokenizers") -> Any:
    """The tokenizer of world `name`, trained on `tokenizer_world(name)` (cached)."""
    return world_tokenizer(tokenizer_world(name), cache_dir=cache_dir)
