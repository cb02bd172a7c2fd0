"""The demo's stage skipping (finished stages are not rerun, unfinished ones are) and its table through cft.compare."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import cft.demo as demo
from tests.test_compare import eval_metrics, train_csv, write_run


@pytest.fixture
def calls(tmp_path, monkeypatch) -> list[list[str]]:
    """Run the demo's stages under tmp_path with the CLI replaced by a recorder."""
    monkeypatch.setattr(demo, "ROOT", str(tmp_path))
    recorded: list[list[str]] = []
    monkeypatch.setattr(demo, "_cli", lambda args, log: recorded.append(args))
    return recorded


def _write_meta(out: Path, status: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "metadata.json").write_text(json.dumps({"status": status, "counts": {}}))


def test_annotation_reruns_until_complete_then_skips(tmp_path, calls):
    out = tmp_path / "demo/annotate/annotations"
    assert demo.annotate(Path("base")) == out and len(calls) == 1  # nothing there yet
    _write_meta(out, "running")  # a killed annotation: the rerun resumes it
    demo.annotate(Path("base"))
    assert len(calls) == 2 and calls[-1][:3] == ["predict", "--config", "configs/tiny/annotate.yaml"]
    _write_meta(out, "complete")  # the writer's last act
    demo.annotate(Path("base"))
    assert len(calls) == 2


def test_fit_and_eval_skip_finished_runs(tmp_path, calls):
    demo.fit("sft", "configs/tiny/sft.yaml", method="sft-ref")
    assert calls[-1][calls[-1].index("--run.method") + 1] == "sft-ref"
    (tmp_path / "demo/sft/hf/last").mkdir(parents=True)
    (tmp_path / "demo/sft/hf/last/config.json").write_text("{}")
    demo.fit("sft", "configs/tiny/sft.yaml")
    assert len(calls) == 1
    assert demo.evaluate("sft", Path("m")) == tmp_path / "demo/eval-sft" and len(calls) == 2
    (tmp_path / "demo/eval-sft").mkdir(parents=True)
    (tmp_path / "demo/eval-sft/metrics.json").write_text("{}")
    demo.evaluate("sft", Path("m"))
    assert len(calls) == 2


def test_table_is_the_comparison_of_the_demo_runs(tmp_path, monkeypatch):
    """Training runs named by the demo (run.method), evaluation runs paired with them through their checkpoint."""
    monkeypatch.setattr(demo, "ROOT", str(tmp_path))
    runs = []
    for i, method in enumerate(("sft", "cft")):
        runs.append(write_run(tmp_path, method, experiment="demo", method=method, csv=train_csv(3.0, 0.5)))
        runs.append(
            write_run(
                tmp_path,
                f"eval-{method}",
                experiment="demo",
                evaluator=True,
                model_path=str(tmp_path / "demo" / method / "hf/best"),
                metrics=eval_metrics(0.5 + 0.25 * i, 1.0),
            )  # fmt: skip
        )
    text = demo.table(runs)
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    assert set(rows) == {"method", "sft", "cft"}
    assert "| 0.500 |" in rows["sft"] and "| 0.750 |" in rows["cft"]  # test acc of each, one seed: no ±
    assert (tmp_path / "demo/compare/summary.csv").is_file()


def test_grpo_curve_averages_the_rounds_between_validations(tmp_path):
    csv = tmp_path / "metrics.csv"
    csv.write_text(
        "step,rl/entropy,rl/reward_mean,val/acc\n0,1.0,0.0,\n1,0.5,1.0,\n1,,,0.25\n2,0.25,0.5,\n3,0.75,0.5,\n3,,,0.5\n"
    )
    assert demo._curve(csv) == [(1, "0.250", "0.750", "0.50"), (3, "0.500", "0.500", "0.50")]


def test_testbed_world_runs_its_own_configs_and_two_pretraining_stages(tmp_path, calls, monkeypatch):
    monkeypatch.setattr(demo, "CONFIGS", demo.CONFIGS)  # main() sets both for the chosen world; restored after
    monkeypatch.setattr(demo, "EXP", demo.EXP)
    monkeypatch.setattr(demo, "table", lambda runs: "")
    demo.main(["--world", "testbed", "--stages", "pretrain"])
    assert [c[:3] for c in calls] == [
        ["fit", "--config", "configs/testbed/pretrain.yaml"],
        ["fit", "--config", "configs/testbed/pretrain.yaml"],
        ["test", "--config", "configs/testbed/eval.yaml"],
    ]
    stage2 = calls[1]
    assert stage2[stage2.index("--run.name") + 1] == "pretrain2"
    assert "configs/testbed/pretrain_continue.yaml" in stage2
    assert stage2[stage2.index("--model.init_args.model.name_or_path") + 1] == str(
        tmp_path / "demo-testbed/pretrain/hf/last"
    )
    assert calls[2][calls[2].index("--model.init_args.model.name_or_path") + 1].endswith(
        "demo-testbed/pretrain2/hf/last"
    )


@pytest.mark.parametrize(
    ("world", "expected"),
    [
        ("testbed", ["--model.init_args.settings.skip_decided_rollouts", "true", "--data.init_args.limit", "200"]),
        ("arithmetic", ["--model.init_args.settings.skip_decided_rollouts", "true"]),
    ],
)
def test_fast_annotation_skips_decided_rollouts_and_halves_the_testbed_questions(calls, monkeypatch, world, expected):
    monkeypatch.setattr(demo, "CONFIGS", demo.CONFIGS)
    monkeypatch.setattr(demo, "EXP", demo.EXP)
    seen: list[tuple[str, ...]] = []

    def annotate(model_dir: Path, *overrides: str) -> Path:
        seen.append(overrides)
        raise SystemExit("recorded")

    monkeypatch.setattr(demo, "annotate", annotate)
    for fast in (True, False):
        with pytest.raises(SystemExit, match="recorded"):
            demo.main(["--world", world, "--stages", "annotate", *(["--fast"] if fast else [])])
    assert seen == [tuple(expected), ()]
