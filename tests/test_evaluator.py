"""Evaluator end to end through the real CLI entry on a tiny random model, plus its metric arithmetic."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cft.lm.generation import Generation

REPO = Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "configs" / "tiny" / "eval.yaml")
FIXTURES = Path(__file__).parent / "fixtures" / "benchmarks"


def _run(tmp_path: Path, model_dir: Path, *extra: str, subcommand: str = "test") -> Path:
    from cft.cli import main

    main(
        [
            subcommand,
            "--config",
            CONFIG,
            "--model.init_args.model.name_or_path",
            str(model_dir),
            "--run.root",
            str(tmp_path),
            "--run.name",
            "eval",
            "--run.wandb_mode",
            "disabled",
            "--trainer.enable_progress_bar",
            "false",
            "--data.init_args.limit",
            "8",
            "--model.init_args.max_new_tokens",
            "8",
            *extra,
        ]
    )
    return tmp_path / "tiny" / "eval"


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_eval_cli_greedy_writes_predictions_and_metrics(tmp_path, tiny_model_dir):
    run = _run(tmp_path, tiny_model_dir)
    for name in ("test", "test_hard"):
        rows = _jsonl(run / "predictions" / f"{name}.jsonl")
        assert len(rows) == 8
        assert {"id", "prompt", "generation", "extracted", "answer", "correct", "entropy", "num_tokens"} <= set(rows[0])
        assert "samples" not in rows[0]
        assert rows[0]["id"].startswith(f"arithmetic/{name}/")
        assert rows[0]["prompt"].startswith("Question: ")
        assert all(r["num_tokens"] <= 8 for r in rows)
    metrics = json.loads((run / "metrics.json").read_text())
    for name in ("test", "test_hard"):
        for key in ("acc", "entropy", "mean_length", "n"):
            assert f"eval/{name}/{key}" in metrics
        rows = _jsonl(run / "predictions" / f"{name}.jsonl")  # the metrics are those of the written predictions
        assert metrics[f"eval/{name}/acc"] == pytest.approx(sum(r["correct"] for r in rows) / len(rows))
        assert metrics[f"eval/{name}/mean_length"] == pytest.approx(sum(r["num_tokens"] for r in rows) / len(rows))
        assert metrics[f"eval/{name}/entropy"] > 0.0  # a random model is far from certain
        assert metrics[f"eval/{name}/n"] == 8
    assert not any("pass@" in k for k in metrics)
    # The same metrics reach the local CSV log.
    header = (run / "metrics.csv").read_text().splitlines()[0]
    assert "eval/test/acc" in header
    assert not list(run.rglob(".*.jsonl.*")), "temporary files left behind"


def test_eval_cli_sampling_metrics(tmp_path, tiny_model_dir):
    run = _run(tmp_path, tiny_model_dir, "--model.init_args.num_samples", "4", "--data.init_args.splits", "[test]")
    metrics = json.loads((run / "metrics.json").read_text())
    for key in (
        "acc",
        "pass@1",
        "pass@2",
        "pass@4",
        "maj@1",
        "maj@4",
        "distinct_answers",
        "distinct_4",
        "sample_entropy",
    ):
        assert f"eval/test/{key}" in metrics, key
    assert "eval/test_hard/acc" not in metrics
    assert metrics["eval/test/pass@1"] <= metrics["eval/test/pass@2"] <= metrics["eval/test/pass@4"]
    rows = _jsonl(run / "predictions" / "test.jsonl")
    assert len(rows) == 8 and len(rows[0]["samples"]) == 4
    assert {"text", "extracted", "correct", "entropy"} <= set(rows[0]["samples"][0])


def test_eval_cli_benchmarks_from_local_files(tmp_path, tiny_model_dir):
    """A benchmark by name (data.benchmarks + local_paths) and one as the task (class_path cft.tasks.BenchmarkTask)."""
    task = {
        "class_path": "cft.tasks.BenchmarkTask",
        "init_args": {"name": "svamp", "local_path": str(FIXTURES / "svamp.jsonl")},
    }
    run = _run(
        tmp_path,
        tiny_model_dir,
        "--data.init_args.task",
        json.dumps(task),
        "--data.init_args.splits",
        "[test]",
        "--data.init_args.benchmarks",
        "[gsm8k]",
        "--data.init_args.local_paths",
        json.dumps({"gsm8k": str(FIXTURES / "gsm8k.jsonl")}),
    )
    assert [r["answer"] for r in _jsonl(run / "predictions" / "gsm8k.jsonl")] == ["72", "10", "2,700"]
    svamp = _jsonl(run / "predictions" / "test.jsonl")
    assert [r["id"] for r in svamp] == ["svamp/000000", "svamp/000001", "svamp/000002"]
    assert set(json.loads((run / "metrics.json").read_text())) >= {"eval/gsm8k/acc", "eval/test/acc"}


def test_acc_is_one_when_generations_are_gold(tmp_path, tiny_model_dir, monkeypatch):
    """With `generate` replaced by one that answers correctly, acc, pass@k and maj@k are exactly 1."""
    import cft.lm.engines.hf as hf_engine
    from cft.tasks import ArithmeticTask

    gold = {}
    task = ArithmeticTask()
    for split in ("test", "test_hard"):
        for p in task.problems(split)[:8]:
            gold[p.question] = p.answer

    def fake_generate(model, tokenizer, prompt_ids, num_samples=1, **kwargs):
        out = []
        for ids in prompt_ids:
            prompt = tokenizer.decode(ids)
            question = prompt.split("Question: ", 1)[1].split("\nAnswer:", 1)[0]
            text = f"work\n#### {gold[question]}"
            out.append([Generation(token_ids=[1, 2, 3], text=text, finished=True, mean_entropy=0.5)] * num_samples)
        return out

    monkeypatch.setattr(hf_engine, "generate", fake_generate)
    run = _run(tmp_path, tiny_model_dir, "--model.init_args.num_samples", "2")
    metrics = json.loads((run / "metrics.json").read_text())
    for name in ("test", "test_hard"):
        assert metrics[f"eval/{name}/acc"] == 1.0
        assert metrics[f"eval/{name}/pass@2"] == 1.0
        assert metrics[f"eval/{name}/maj@2"] == 1.0
        assert metrics[f"eval/{name}/entropy"] == pytest.approx(0.5)
        assert metrics[f"eval/{name}/mean_length"] == 3.0
        assert metrics[f"eval/{name}/distinct_answers"] == 1.0
    rows = _jsonl(run / "predictions" / "test.jsonl")
    assert all(r["correct"] and r["extracted"] == r["answer"] for r in rows)


def test_benchmarks_log_acc_avg_and_write_extraction_rules(tmp_path, tiny_model_dir, monkeypatch):
    """Two benchmarks graded by the qwen_math rules: per-benchmark acc, their unweighted mean as eval/avg/acc (in
    metrics.json and the CSV log), and predictions with the extracted answer and the rule that found it."""
    import cft.lm.engines.hf as hf_engine

    # gsm8k fixture golds: 72, 10, 2700; svamp: 51, 3, 2.
    replies = {
        "Natalia": "She sold 48 + 24 = 72 clips.\nThe answer is 72.",  # "the answer is" -> 72, right
        "Weng": "So she earned $\\boxed{10}$.",  # boxed, right
        "A shop": "I think it is 2600",  # last number, wrong
        "Each pack": "76 - 25 = \\boxed{51}",
        "Dan had": "The final answer is $3$. I hope it is correct.",  # Minerva's sentence
        "": "no idea",  # nothing extracted
    }

    def fake_generate(model, tokenizer, prompt_ids, num_samples=1, **kwargs):
        out = []
        for ids in prompt_ids:
            prompt = tokenizer.decode(ids)
            question = prompt.split("Question: ", 1)[1]
            text = next(reply for start, reply in replies.items() if question.startswith(start))
            out.append([Generation(token_ids=[1, 2], text=text, finished=True, mean_entropy=0.1)] * num_samples)
        return out

    monkeypatch.setattr(hf_engine, "generate", fake_generate)
    run = _run(
        tmp_path,
        tiny_model_dir,
        "--data.init_args.splits",
        "[]",
        "--data.init_args.benchmarks",
        "[gsm8k, svamp]",
        "--data.init_args.local_paths",
        json.dumps({"gsm8k": str(FIXTURES / "gsm8k.jsonl"), "svamp": str(FIXTURES / "svamp.jsonl")}),
        "--data.init_args.grading",
        "qwen_math",
    )
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["eval/gsm8k/acc"] == pytest.approx(2 / 3)
    assert metrics["eval/svamp/acc"] == pytest.approx(2 / 3)
    assert metrics["eval/avg/acc"] == pytest.approx(2 / 3)
    header = (run / "metrics.csv").read_text().splitlines()[0]
    assert "eval/avg/acc" in header and "eval/svamp/acc" in header
    gsm8k = _jsonl(run / "predictions" / "gsm8k.jsonl")
    assert [(r["extracted"], r["rule"], r["correct"]) for r in gsm8k] == [
        ("72", "answer_is", True),
        ("10", "boxed", True),
        ("2600", "last_number", False),
    ]
    svamp = _jsonl(run / "predictions" / "svamp.jsonl")
    assert [(r["extracted"], r["rule"], r["correct"]) for r in svamp] == [
        ("51", "boxed", True),
        ("3", "minerva", True),
        (None, "none", False),
    ]


def test_problem_metrics_hand_computed(world_tokenizer, tiny_model_dir):
    """Known per-sample correctness -> pass@k, maj@k and acc by hand."""
    from cft.lm.loading import ModelConfig
    from cft.modules.evaluator import Evaluator
    from cft.tasks import ArithmeticTask

    ev = Evaluator(ModelConfig(name_or_path=str(tiny_model_dir)), num_samples=4, ks=[1, 2, 4])

    def s(ans, ok):
        return {
            "text": f"#### {ans}",
            "extracted": ans,
            "correct": ok,
            "entropy": 1.0,
            "num_tokens": 2,
            "finished": True,
        }

    records = [
        {
            "answer": "5",
            "correct": True,
            "entropy": 1.0,
            "num_tokens": 3,
            "finished": True,
            "samples": [s("5", True), s("6", False), s("6", False), s("5", True)],
        },
        {
            "answer": "7",
            "correct": False,
            "entropy": 3.0,
            "num_tokens": 1,
            "finished": False,
            "samples": [s("1", False), s("2", False), s("3", False), s("7", True)],
        },
    ]
    m = ev.problem_metrics(records, ArithmeticTask())
    assert m["acc"] == 0.5
    assert m["entropy"] == pytest.approx((1.0 * 4 + 3.0 * 1) / 5)  # token-weighted (EOS counts when finished)
    assert m["pass@1"] == pytest.approx((2 / 4 + 1 / 4) / 2)
    assert m["pass@2"] == pytest.approx(((1 - 1 / 6) + (1 - 3 / 6)) / 2)  # C(2,2)/C(4,2), C(3,2)/C(4,2)
    assert m["pass@4"] == 1.0
    assert m["maj@1"] == 0.5  # problem 1: "5" first; problem 2: "1"
    assert m["maj@2"] == 0.5  # 5 vs 6 tie -> 5 (first); 1 vs 2 tie -> 1
    assert m["maj@4"] == 0.5  # 5-5 vs 6-6 tie -> 5; problem 2 all distinct -> 1
    assert m["distinct_answers"] == pytest.approx((2 + 4) / 2)
    assert m["frac_unfinished"] == 0.5


def test_k_above_num_samples_is_rejected(tiny_model_dir):
    from cft.lm.loading import ModelConfig
    from cft.modules.evaluator import Evaluator, default_ks

    cfg = ModelConfig(name_or_path=str(tiny_model_dir))
    with pytest.raises(ValueError, match=r"ks=\[1, 8\].*num_samples=4.*\[8\]"):
        Evaluator(cfg, num_samples=4, ks=[1, 8])
    with pytest.raises(ValueError, match="num_samples=0"):
        Evaluator(cfg, ks=[1])
    with pytest.raises(ValueError, match="nothing would be generated"):
        Evaluator(cfg, greedy=False)
    assert default_ks(8) == [1, 2, 4, 8]
    assert default_ks(6) == [1, 2, 4, 6]
    assert default_ks(0) == []


def test_eval_datamodule_rejects_bad_input():
    from cft.data.eval import EvalDataModule
    from cft.tasks import ArithmeticTask

    with pytest.raises(ValueError, match="unknown benchmark 'gsm9k'.*gsm8k"):
        EvalDataModule(benchmarks=["gsm9k"])
    with pytest.raises(ValueError, match="neither"):
        EvalDataModule()
    with pytest.raises(ValueError, match="local_paths"):
        EvalDataModule(ArithmeticTask(), local_paths={"gsm8k": "x.jsonl"})
    dm = EvalDataModule(ArithmeticTask(), benchmarks=["gsm8k"], splits=["test"])
    assert dm.names == ["test", "gsm8k"]
    assert dm.task_for(1).name == "gsm8k"


def test_eval_datamodule_rows(world_tokenizer):
    from cft.data.eval import EvalDataModule
    from cft.tasks import ArithmeticTask

    dm = EvalDataModule(
        ArithmeticTask(),
        splits=["test"],
        limit=3,
        batch_size=2,
        benchmarks=["svamp"],
        local_paths={"svamp": str(FIXTURES / "svamp.jsonl")},
    )
    rows = dm.build_rows(world_tokenizer)
    assert [len(r) for r in rows] == [3, 3]
    row = rows[1][0]
    assert set(row) == {"index", "id", "question", "prompt", "prompt_ids", "answer"}
    assert row["prompt"] == f"Question: {row['question']}\nAnswer:\n"
    assert row["prompt_ids"] == world_tokenizer(row["prompt"], add_special_tokens=True)["input_ids"]
    dm.rows = rows
    batch = next(iter(dm.test_dataloader()[0]))
    assert isinstance(batch["prompt_ids"], list) and len(batch["prompt_ids"]) == 2


@pytest.mark.parametrize(
    "config", ["configs/tiny/eval.yaml", "configs/eval/qwen_math_suite.yaml", "configs/eval/competition.yaml"]
)
def test_shipped_eval_configs_parse(config, capsys):
    from cft.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["test", "--config", str(REPO / config), "--print_config"])
    assert exit_info.value.code in (0, None)
    assert "cft.modules.evaluator.Evaluator" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize(
    "strategy",
    [
        ["--trainer.devices", "2", "--trainer.strategy", "ddp"],
        ["--config", str(REPO / "configs" / "strategy" / "deepspeed_zero3_cpu.yaml")],  # synced_gpus generation
    ],
    ids=["ddp", "zero3"],
)
def test_two_ranks_match_single_process(tmp_path, tiny_model_dir, strategy):
    """2 CPU ranks (gloo): the sampler pads 5 problems to 6; gathered predictions equal the 1-process run."""
    import os
    import subprocess
    import sys

    def run(name: str, *extra: str) -> Path:
        cmd = [
            sys.executable,
            "-m",
            "cft",
            "test",
            "--config",
            CONFIG,
            "--model.init_args.model.name_or_path",
            str(tiny_model_dir),
            "--run.root",
            str(tmp_path),
            "--run.name",
            name,
            "--run.wandb_mode",
            "disabled",
            "--trainer.enable_progress_bar",
            "false",
            "--data.init_args.limit",
            "5",
            "--data.init_args.batch_size",
            "2",
            "--data.init_args.splits",
            "[test]",
            "--model.init_args.max_new_tokens",
            "8",
            *extra,
        ]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        subprocess.run(cmd, cwd=REPO, env=env, check=True, capture_output=True, timeout=300)
        return tmp_path / "tiny" / name

    single = run("single")
    ddp = run("two_ranks", *strategy)
    rows_single = _jsonl(single / "predictions" / "test.jsonl")
    rows_ddp = _jsonl(ddp / "predictions" / "test.jsonl")
    assert [r["id"] for r in rows_ddp] == [r["id"] for r in rows_single]  # deduplicated, in dataset order
    assert [r["generation"] for r in rows_ddp] == [r["generation"] for r in rows_single]
    m_single = json.loads((single / "metrics.json").read_text())
    m_ddp = json.loads((ddp / "metrics.json").read_text())
    assert m_ddp["eval/test/n"] == 5
    assert m_ddp["eval/test/acc"] == m_single["eval/test/acc"]
    assert m_ddp["eval/test/entropy"] == pytest.approx(m_single["eval/test/entropy"], rel=1e-4)


def test_truncate_at_stop_as_the_harness() -> None:
    from cft.modules.evaluator import truncate_at_stop

    stop = ["</s>", "<|im_end|>", "<|endoftext|>"]
    assert truncate_at_stop("so \\boxed{3}<|im_end|>\nuser: more \\boxed{4}", stop) == "so \\boxed{3}"
    assert truncate_at_stop("a<|endoftext|>b</s>c", stop) == "a"
    assert truncate_at_stop("  no stop here  ", stop) == "no stop here"
    assert truncate_at_stop("  kept as is  ", []) == "  kept as is  "


def test_suite_config_is_the_harness_settings() -> None:
    import yaml

    config = yaml.safe_load((REPO / "configs" / "eval" / "qwen_math_suite.yaml").read_text())
    model, data = config["model"]["init_args"], config["data"]["init_args"]
    assert model["greedy"] is True and model["num_samples"] == 0
    assert model["max_new_tokens"] == 2048
    assert model["model"]["stop_strings"] == ["</s>", "<|im_end|>", "<|endoftext|>"]
    assert data["grading"] == "qwen_math"
    from cft.tasks.math_benchmarks import QWEN_MATH_SUITE

    assert tuple(data["benchmarks"]) == QWEN_MATH_SUITE and "math500" not in data["benchmarks"]


def test_malformed_benchmark_file_is_one_line_error_through_the_cli(tmp_path, tiny_model_dir, capsys):
    bad = tmp_path / "gsm8k.jsonl"
    bad.write_text('{"question": "q", "answer": "#### 1"}\n{"question": "q2", "answer": \n')
    with pytest.raises(SystemExit) as e:
        _run(
            tmp_path,
            tiny_model_dir,
            "--data.init_args.splits",
            "[]",
            "--data.init_args.benchmarks",
            "[gsm8k]",
            "--data.init_args.local_paths",
            json.dumps({"gsm8k": str(bad)}),
        )
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "gsm8k.jsonl' line 2: not valid JSON" in err[-1]
    assert "Traceback" not in "\n".join(err)
    assert not (tmp_path / "tiny" / "eval" / "metrics.json").exists()


def test_multiple_choice_majority_votes_on_the_extracted_letter(tiny_model_dir):
    """Samples that pick one option in different words ("(B)", a boxed B, "choice is b") vote together."""
    from cft.lm.generation import Generation
    from cft.lm.loading import ModelConfig
    from cft.modules.evaluator import Evaluator
    from cft.tasks.math_benchmarks import BenchmarkTask

    task = BenchmarkTask("gaokao2023en", local_path=str(REPO / "tests/fixtures/benchmarks/gaokao2023en.jsonl"))
    ev = Evaluator(ModelConfig(name_or_path=str(tiny_model_dir)), num_samples=4, ks=[1, 2, 4])

    def record(answer: str, texts: list[str]) -> dict:
        gens = [Generation(token_ids=[1, 2], text=t, finished=True, mean_entropy=1.0) for t in texts]
        samples = [ev._graded(task, g, answer) for g in gens]
        return {**samples[0], "answer": answer, "samples": samples}

    records = [
        # C, B, B, B: the first vote is wrong, the 2-sample vote ties C/B (first wins: C), 4 samples elect B
        record("B", ["The answer is (C).", "\\boxed{B}", "So the choice is b", "I pick C. The answer is B."]),
        # D, A, A, D: tie at 4, the first answer (D) wins
        record("D", ["The answer is D", "The answer is (A)", "\\boxed{A}", "\\boxed{(D)}"]),
    ]
    assert [s["extracted"] for s in records[0]["samples"]] == ["C", "B", "B", "B"]
    m = ev.problem_metrics(records, task)
    assert (m["maj@1"], m["maj@2"], m["maj@4"]) == (0.5, 0.5, 1.0)
    assert m["pass@1"] == pytest.approx((3 / 4 + 2 / 4) / 2)
    assert m["distinct_answers"] == 2.0
