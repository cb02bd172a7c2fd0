"""Hub training sets: config names, the validation split carved from train, GSM8K markup removal, local files."""

from __future__ import annotations

import json

import datasets
import pytest

from cft.errors import BenchmarkLoadError
from cft.tasks.training import MathTrainTask, clean_gsm8k_solution
from tests.helpers import REPO

FIX = REPO / "tests/fixtures/benchmarks"


def _rows(name):
    return [json.loads(line) for line in (FIX / f"{name}.jsonl").read_text().splitlines() if line.strip()]


def test_gsm8k_calculator_markup_is_removed_and_answer_boxed():
    raw = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nShe sold 48+24 = <<48+24=72>>72.\n#### 1,072"
    assert (
        clean_gsm8k_solution(raw, boxed=False)
        == "Natalia sold 48/2 = 24 clips in May.\nShe sold 48+24 = 72.\n#### 1,072"
    )
    assert clean_gsm8k_solution(raw).endswith("She sold 48+24 = 72.\nThe final answer is $\\boxed{1072}$.")


def test_local_files_split_train_and_val_deterministically():
    paths = {"gsm8k": str(FIX / "gsm8k.jsonl"), "math": str(FIX / "math.jsonl")}
    task = MathTrainTask(local_paths=paths, n_val=2, val_seed=0)
    train, val = task.problems("train"), task.problems("val")
    assert len(train) == 4 and len(val) == 2
    assert not {p.id for p in train} & {p.id for p in val}
    again = MathTrainTask(local_paths=paths, n_val=2, val_seed=0)
    assert [p.id for p in again.problems("val")] == [p.id for p in val]
    other = MathTrainTask(local_paths=paths, n_val=2, val_seed=1)
    assert sorted(p.id for p in other.problems("train") + other.problems("val")) == sorted(p.id for p in train + val)
    gsm = [p for p in train + val if p.id.startswith("train/gsm8k/")]
    assert gsm and all("<<" not in p.solution and "####" not in p.solution and "\\boxed{" in p.solution for p in gsm)
    assert all(task.grade(p.solution, p.answer) for p in train + val)  # references grade correct with the task


def test_hub_path_names_dataset_configs_and_equals_local(monkeypatch):
    calls = []
    subjects = []
    real = datasets.load_dataset

    def fake_load_dataset(hub_id, config=None, split=None, **kw):
        if hub_id in ("json", "parquet"):  # the local-file path reads through datasets too
            return real(hub_id, config, split=split, **kw)
        calls.append((hub_id, config, split))
        if hub_id == "openai/gsm8k":
            return datasets.Dataset.from_list(_rows("gsm8k"))
        subjects.append(config)
        full = datasets.Dataset.from_list(_rows("math"))
        return full if config == "algebra" else full.select([])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    hub = MathTrainTask(n_val=2)
    local = MathTrainTask(local_paths={"gsm8k": str(FIX / "gsm8k.jsonl"), "math": str(FIX / "math.jsonl")}, n_val=2)
    for split in ("train", "val"):
        assert hub.problems(split) == local.problems(split)
    assert ("openai/gsm8k", "main", "train") in calls
    assert subjects == [
        "algebra",
        "counting_and_probability",
        "geometry",
        "intermediate_algebra",
        "number_theory",
        "prealgebra",
        "precalculus",
    ]
    assert all(split == "train" for _, _, split in calls)


def test_hub_without_the_named_split_is_one_clear_error(monkeypatch):
    def missing(hub_id, config=None, split=None, **kw):
        raise ValueError(f"Unknown split \"{split}\". Should be one of ['test'].")

    monkeypatch.setattr(datasets, "load_dataset", missing)
    with pytest.raises(BenchmarkLoadError, match="openai/gsm8k.*split 'train'"):
        MathTrainTask(sources=["gsm8k"], n_val=1).problems("train")


def test_bad_settings_are_errors():
    with pytest.raises(BenchmarkLoadError, match="sources"):
        MathTrainTask(sources=["svamp"])
    with pytest.raises(BenchmarkLoadError, match="local_paths"):
        MathTrainTask(sources=["gsm8k"], local_paths={"math": "x.jsonl"})
    with pytest.raises(BenchmarkLoadError, match="leaves no training rows"):
        MathTrainTask(local_paths={"gsm8k": str(FIX / "gsm8k.jsonl")}, sources=["gsm8k"], n_val=3).problems("train")
