"""Annotation output end to end through `python -m cft predict`: parquet parts and metadata, resume after SIGKILL,
refusals, shards and merge, reading for training, projection of critical spans onto another tokenizer."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pyarrow.parquet as pq
import pytest

from cft.annotation_cli import merge
from cft.cli import CFTCLI
from cft.data.annotation_format import (
    part_info,
    project_char_spans,
    read_annotated_rows,
    write_part,
)
from cft.data.annotation_input import AnnotationDataModule
from cft.errors import AnnotationError, DataError
from cft.tasks import ArithmeticTask

REPO = Path(__file__).resolve().parents[1]
KEYS = ("id", "response_token_ids", "critical", "alternatives", "rollouts_failed", "critical_char_spans")


def annotate_args(model_dir: Path, out: Path, *extra: str, limit: int = 12, responses: str = "reference") -> list[str]:
    return [
        "predict", "--config", str(REPO / "configs/tiny/annotate.yaml"),
        "--model.init_args.model.name_or_path", str(model_dir),
        "--run.root", str(out.parent / "runs"), "--run.wandb_mode", "disabled",
        "--trainer.enable_progress_bar", "false", "--trainer.logger", "false",
        "--trainer.callbacks.init_args.output_dir", str(out),
        "--trainer.callbacks.init_args.examples_per_part", "4",
        "--data.init_args.responses", responses, "--data.init_args.limit", str(limit),
        "--data.init_args.batch_size", "4",
        "--model.init_args.settings.max_new_tokens", "16", "--model.init_args.settings.max_rollout_tokens", "8",
        *extra,
    ]  # fmt: skip


def rows_of(out: Path) -> list[dict]:
    return [r for p in sorted(out.glob("part-*.parquet")) for r in pq.read_table(p).to_pylist()]


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, tiny_model_dir) -> Path:
    out = tmp_path_factory.mktemp("annotate") / "ann"
    CFTCLI(args=annotate_args(tiny_model_dir, out))
    return out


def test_parts_metadata_and_schema(reference_run, world_tokenizer, tiny_model_dir, tmp_path):
    import datasets

    parts = sorted(reference_run.glob("part-*.parquet"))
    assert [p.name for p in parts] == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    ds = datasets.load_dataset("parquet", data_files=[str(p) for p in parts], split="train", cache_dir=str(tmp_path))
    need = {"id", "question", "answer", "prompt", "response", "prompt_token_ids", "response_token_ids", "critical",
            "critical_char_spans"}  # fmt: skip
    assert need <= set(ds.column_names) and len(ds) == 12
    meta = json.loads((reference_run / "metadata.json").read_text())
    c = meta["counts"]
    assert meta["status"] == "complete" and c["questions"] == c["kept"] == 12 and c["yield"] == 1.0
    assert c["response_tokens"] == sum(len(r) for r in ds["response_token_ids"])
    assert c["critical_tokens"] == sum(map(sum, ds["critical"])) > 0
    assert c["rollouts"] == sum(map(sum, ds["rollouts_total"]))  # every scored position's rollouts, counted once
    assert c["rollouts_per_s"] == pytest.approx(c["rollouts"] / c["wall_s"])
    # Truncation is auditable: per position in the rows, and why every rollout ended in metadata.json.
    assert sum(c["rollout_reasons"].values()) == c["rollouts"]
    assert c["rollouts_truncated"] == c["rollout_reasons"]["length"] == sum(map(sum, ds["rollouts_truncated"])) > 0
    assert all(len(t) == len(r) for t, r in zip(ds["rollouts_truncated"], ds["response_token_ids"]))
    assert all(t <= n for ts, ns in zip(ds["rollouts_truncated"], ds["rollouts_total"]) for t, n in zip(ts, ns))
    assert set(c["by_class"]) == {"digits", "operators", "words", "punctuation", "whitespace", "mixed"}
    ident = meta["identity"]
    assert ident["scorer"]["alternative_ranks"] == [2, 3] and ident["model"]["name_or_path"] == str(tiny_model_dir)
    assert ident["tokenizer"]["vocab_size"] == len(world_tokenizer) and meta["weights_sha256"]
    for row in ds:
        assert len(row["critical"]) == len(row["response_token_ids"]) == len(row["response_token_offsets"]) - 1
        assert world_tokenizer.decode(row["response_token_ids"]) == row["response"]
        texts = [row["response"][a:b] for a, b in zip(row["response_token_offsets"], row["response_token_offsets"][1:])]
        assert "".join(texts) == row["response"]
        crit = [t for t, c in zip(texts, row["critical"]) if c]
        assert [row["response"][a:b] for a, b in row["critical_char_spans"]] == crit


def test_killed_run_resumes_without_loss_or_duplicates(tmp_path, tiny_model_dir, reference_run):
    out = tmp_path / "ann"
    # Same settings as the reference run, cut into parts of one batch of 2 questions each (6 in all).
    cmd = [
        sys.executable,
        "-m",
        "cft",
        *annotate_args(
            tiny_model_dir,
            out,
            "--data.init_args.batch_size",
            "2",
            "--trainer.callbacks.init_args.examples_per_part",
            "2",
        ),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    # Killed after batch 2 (0-based), once the writer has written that batch as part-00002.
    kill = ["--trainer.callbacks+=tests.helpers.SigkillAtBatch", "--trainer.callbacks.batch", "2"]
    proc = subprocess.run([*cmd, *kill], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-3000:]
    assert json.loads((out / "metadata.json").read_text())["status"] == "running"
    assert [p.name for p in sorted(out.glob("part-*.parquet"))] == [f"part-0000{i}.parquet" for i in range(3)]
    CFTCLI(args=cmd[3:])  # the same command again (in-process, to spare a second interpreter start-up)
    got, want = rows_of(out), rows_of(reference_run)
    assert len({r["id"] for r in got}) == len(got) == 12
    assert sorted(({k: r[k] for k in KEYS} for r in got), key=lambda r: r["id"]) == [
        {k: r[k] for k in KEYS} for r in sorted(want, key=lambda r: r["id"])
    ]
    assert not list(out.glob(".*tmp*"))
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["status"] == "complete" and meta["counts"]["questions"] == 12


def test_resume_with_other_settings_is_refused(reference_run, tiny_model_dir):
    before = {p.name: p.stat().st_mtime_ns for p in reference_run.iterdir()}
    with pytest.raises(AnnotationError, match=r"scorer\.criterion: 'all' -> 'any'"):
        CFTCLI(args=annotate_args(tiny_model_dir, reference_run, "--model.init_args.settings.criterion", "any"))
    assert {p.name: p.stat().st_mtime_ns for p in reference_run.iterdir()} == before


def test_resume_with_other_weights_is_refused(tmp_path, tiny_model_dir, world_tokenizer):
    from cft.lm.loading import TinyArch, build_tiny_model

    model_dir, out = tmp_path / "model", tmp_path / "ann"
    shutil.copytree(tiny_model_dir, model_dir)
    CFTCLI(args=annotate_args(model_dir, out, limit=4))
    arch = TinyArch(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=128)
    build_tiny_model(arch, world_tokenizer, seed=1).save_pretrained(model_dir)
    with pytest.raises(AnnotationError, match="other weights"):
        CFTCLI(args=annotate_args(model_dir, out, limit=4))


def test_no_correct_response_is_a_clear_error(tmp_path, tiny_model_dir):
    out = tmp_path / "ann"
    with pytest.raises(AnnotationError, match="no correct response among 4 questions"):
        CFTCLI(args=annotate_args(tiny_model_dir, out, limit=4, responses="self"))
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["counts"]["kept"] == 0 and meta["counts"]["skipped"] == {"unfinished": 4}, meta["counts"]["skipped"]


def test_dataset_references_without_answer_or_wrong_are_counted_skips(tmp_path, tiny_model_dir):
    data = tmp_path / "problems.jsonl"
    records = [
        {"question": "Compute 2 + 3.", "answer": "5", "solution": "2 + 3 = 5\n#### 5"},
        {"question": "Compute 4 * 2.", "answer": "#### 8", "solution": "4 * 2 = 8\n#### 8"},
        {"question": "Compute 9 - 1.", "answer": "8", "solution": "9 - 1 = 7\n#### 7"},
        {"question": "Compute 6 + 1.", "answer": "7", "solution": "I am not sure."},
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "ann"
    args = ["--data.init_args.dataset", str(data), "--data.init_args.solution_field", "solution"]
    CFTCLI(args=annotate_args(tiny_model_dir, out, *args, limit=0))
    counts = json.loads((out / "metadata.json").read_text())["counts"]
    assert counts["questions"] == 4 and counts["kept"] == 2
    assert counts["skipped"] == {"reference_incorrect": 1, "reference_no_answer": 1}


def test_empty_data_set_is_a_clear_error(tmp_path, tiny_model_dir):
    with pytest.raises(DataError, match="no problems to annotate"):
        CFTCLI(args=annotate_args(tiny_model_dir, tmp_path / "ann", "--data.init_args.task.init_args.n_train", "0"))
    assert not list((tmp_path / "ann").glob("part-*"))


def test_shards_and_merge(tmp_path, tiny_model_dir, monkeypatch):
    root = tmp_path / "ann"
    for i in range(2):
        monkeypatch.setenv("SLURM_ARRAY_TASK_ID", str(i))
        monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "2")
        CFTCLI(args=annotate_args(tiny_model_dir, root, limit=6))
    shards = sorted(d.name for d in root.iterdir())
    assert shards == ["shard-00000-of-00002", "shard-00001-of-00002"]
    partial = tmp_path / "partial"
    shutil.copytree(root / shards[0], partial / shards[0])
    with pytest.raises(AnnotationError, match=r"missing shards \[1\]"):
        merge(partial)
    meta = merge(root)
    assert meta["counts"]["questions"] == meta["counts"]["kept"] == 6
    assert len({r["id"] for r in rows_of(root)}) == 6
    with pytest.raises(AnnotationError, match="already holds part files"):
        merge(root)


def test_train_rows_carry_critical_weights(reference_run, world_tokenizer):
    from cft.data.train import TrainDataModule
    from cft.selectors import CriticalTokens

    dm = TrainDataModule(ArithmeticTask(), annotations=str(reference_run), selector=CriticalTokens(), n_val=4)
    # A stand-in for the Trainer: only what TrainDataModule.setup reads (no run dir: is_global_zero False).
    dm.tokenizer = world_tokenizer
    dm.trainer = SimpleNamespace(accumulate_grad_batches=1, world_size=1, is_global_zero=False, global_rank=0)
    dm.setup("fit")
    stored = {r["id"]: r for r in rows_of(reference_run)}
    assert len(dm.train_rows) == 12
    for row in dm.train_rows:
        src = stored[row["id"]]
        assert row["response_ids"] == src["response_token_ids"] + [world_tokenizer.eos_token_id]
        assert row["weights"] == [float(c) for c in src["critical"]] + [0.0]
        assert len(row["entropy"]) == len(src["response_token_ids"])
    n_crit = sum(sum(r["critical"]) for r in stored.values())
    n_tok = sum(len(r["response_token_ids"]) + 1 for r in stored.values())
    assert dm.frac_tokens_selected == pytest.approx(n_crit / n_tok)


def test_read_refuses_other_tokenizer_and_bad_rows(reference_run, world_tokenizer, tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    other = AutoTokenizer.from_pretrained(tiny_model_dir)
    other.add_tokens(["<extra>"])
    with pytest.raises(AnnotationError, match=r"part-00000\.parquet: annotated with another tokenizer"):
        read_annotated_rows(reference_run, other)
    part = sorted(reference_run.glob("part-*.parquet"))[0]
    rows, info = pq.read_table(part).to_pylist(), part_info(part)
    rows[1]["critical"] = rows[1]["critical"][:-1]
    write_part(tmp_path / "part-00000.parquet", rows, info)
    with pytest.raises(DataError, match=r"part-00000\.parquet row 1 .*'critical' has"):
        read_annotated_rows(tmp_path, world_tokenizer)
    with pytest.raises(DataError, match="no part"):
        read_annotated_rows(tmp_path / "nowhere", world_tokenizer)


def test_project_char_spans_to_a_multi_digit_tokenizer(reference_run):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    rows = rows_of(reference_run)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)  # no digit splitting: "228" is one token
    bpe.decoder = decoders.ByteLevel()
    texts = [p.solution for p in ArithmeticTask().problems("train")[:500]]
    bpe.train_from_iterator(
        texts,
        trainers.BpeTrainer(
            vocab_size=700,
            special_tokens=["<eos>"],
            show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    target = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<eos>")
    multi_digit = 0
    for row in rows:
        ids, crit = project_char_spans(row["response"], row["critical_char_spans"], target)
        offsets = target(row["response"], add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        critical_chars = {i for a, b in row["critical_char_spans"] for i in range(a, b)}
        for (a, b), c in zip(offsets, crit):
            assert c == int(any(i in critical_chars for i in range(a, b)))
            multi_digit += c and row["response"][a:b].strip().isdigit() and len(row["response"][a:b].strip()) > 1
        covered = {i for (a, b), c in zip(offsets, crit) if c for i in range(a, b)}
        assert critical_chars <= covered
    assert multi_digit > 0
    projected = read_annotated_rows(reference_run, target, project=True)
    assert all(len(r["critical"]) == len(r["response_ids"]) - 1 for r in projected)

    # The training DataModule refuses the foreign shards by default and projects them when asked.
    from cft.data.train import TrainDataModule
    from cft.selectors import CriticalTokens

    target.pad_token = target.eos_token
    trainer = SimpleNamespace(accumulate_grad_batches=1, world_size=1, is_global_zero=False, global_rank=0)
    refuse = TrainDataModule(ArithmeticTask(), annotations=str(reference_run), selector=CriticalTokens(), n_val=4)
    refuse.trainer, refuse.tokenizer = trainer, target
    with pytest.raises(ValueError, match="tokenizer"):
        refuse.setup("fit")
    dm = TrainDataModule(ArithmeticTask(), annotations=str(reference_run), project_annotations=True,
                         selector=CriticalTokens(), n_val=4)  # fmt: skip
    dm.trainer, dm.tokenizer = trainer, target
    dm.setup("fit")
    by_id = {r["id"]: r for r in projected}
    assert len(dm.train_rows) == len(projected)
    assert all(r["weights"] == [float(c) for c in by_id[r["id"]]["critical"]] + [0.0] for r in dm.train_rows)


def test_datamodule_shard_defaults_from_slurm(monkeypatch):
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "4")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "1")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "8")
    dm = AnnotationDataModule(ArithmeticTask())
    assert (dm.shard_index, dm.shard_count) == (3, 8)
    with pytest.raises(ValueError, match="shard_index=9"):
        AnnotationDataModule(ArithmeticTask(), shard_index=9)


def test_shipped_configs_parse():
    for sub, cfg in (("predict", "annotate.yaml"), ("fit", "cft.yaml")):
        with pytest.raises(SystemExit) as exit_:
            CFTCLI(args=[sub, "--config", str(REPO / "configs/tiny" / cfg), "--print_config"])
        assert exit_.value.code in (0, None)


def test_sigterm_stops_annotation_at_a_part_boundary(tmp_path, tiny_model_dir, reference_run, capsys):
    from cft.cli import STOPPED_EXIT_CODE, main

    out = tmp_path / "ann"
    args = annotate_args(
        tiny_model_dir, out, "--data.init_args.batch_size", "2", "--trainer.callbacks.init_args.examples_per_part", "2"
    )
    with pytest.raises(SystemExit) as e:
        main([*args, "--trainer.callbacks+=tests.helpers.SigtermAtStep", "--trainer.callbacks.step", "1"])
    assert e.value.code == STOPPED_EXIT_CODE and "stopped by SIGTERM" in capsys.readouterr().err
    # Signalled after batch 1; the batch in flight finishes, its part is written, and the run stops there.
    assert [p.name for p in sorted(out.glob("part-*.parquet"))] == [f"part-0000{i}.parquet" for i in range(3)]
    assert json.loads((out / "metadata.json").read_text())["status"] == "running"
    assert not list(out.glob(".*tmp*"))
    main(args)
    got, want = rows_of(out), rows_of(reference_run)
    assert sorted(r["id"] for r in got) == sorted(r["id"] for r in want)
    assert json.loads((out / "metadata.json").read_text())["status"] == "complete"


def test_progress_bar_shows_kept_questions_and_rollout_rate(tiny_model_dir):
    """The scorer reports its running totals to listeners; the callback writes them into the predict bar."""
    from cft.callbacks import AnnotationProgressBar
    from cft.lm.loading import ModelConfig
    from cft.modules.scorer import PerturbationScorer

    shown: list[str] = []
    tqdm_bar = SimpleNamespace(set_postfix_str=shown.append)
    trainer = SimpleNamespace(progress_bar_callback=SimpleNamespace(_predict_progress_bar=tqdm_bar))
    scorer = PerturbationScorer(ModelConfig(name_or_path=str(tiny_model_dir)))
    callback = AnnotationProgressBar()
    callback.on_predict_start(trainer, scorer)
    scorer.progress.asked, scorer.progress.kept, scorer.progress.seconds = 8, 3, 1.5
    scorer._t_batch = time.perf_counter()  # the chunk took microseconds: 3000 rollouts in ~1.5 s
    scorer._on_chunk(rollouts=3000, tokens=12000)
    assert shown == ["kept 3/8 · 2,000 rollouts/s"]
    callback.on_predict_end(trainer, scorer)
    assert scorer.progress_listeners == []
