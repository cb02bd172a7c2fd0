"""Shared fixtures: the world's tokenizer and a tiny randomly initialised HF model dir (no download)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tiny models gain nothing from intra-op threads, and multi-rank subprocess tests would oversubscribe 2 cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]


def pytest_configure(config):
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture(scope="session")
def world_tokenizer(tmp_path_factory):
    from cft.lm.tokenizer import named_world_tokenizer

    return named_world_tokenizer("arithmetic", cache_dir=tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, world_tokenizer) -> Path:
    """A 2-layer Qwen2 with the world's tokenizer, saved as a plain HF dir."""
    from cft.lm.loading import TinyArch, build_tiny_model

    path = tmp_path_factory.mktemp("tiny_model")
    model = build_tiny_model(
        TinyArch(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=128),
        world_tokenizer,
        seed=0,
    )
    model.save_pretrained(path)
    world_tokenizer.save_pretrained(path)
    return path
