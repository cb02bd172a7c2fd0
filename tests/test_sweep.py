"""Sweeps: grid index -> (method, seed) covers the grid once, exact dry-run commands, clear errors; the shipped grid's
commands and the early-stopping config parse through the real CLI."""

from __future__ import annotations

import itertools
import shlex

import pytest
import yaml

from cft.errors import SweepError
from cft.sweep import Grid, main
from tests.helpers import REPO

STUDY = REPO / "configs/experiments/tiny_study.yaml"


def test_index_covers_the_grid_exactly_once():
    grid = Grid.load(STUDY)
    assert list(grid.methods) == ["sft", "cft", "random", "entropy", "numeric", "dft"]
    assert grid.seeds == [0, 1, 2] and len(grid) == 18
    points = [grid.point(i) for i in range(len(grid))]
    assert sorted(points) == sorted(itertools.product(grid.methods, grid.seeds))
    assert points[:4] == [("sft", 0), ("sft", 1), ("sft", 2), ("cft", 0)]


def test_dry_run_prints_the_exact_commands(capsys):
    assert main(["--grid", str(STUDY), "--index", "7", "--dry-run"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    where = "--run.root runs --run.experiment tiny_study --seed_everything 1"
    assert lines == [
        "python -m cft fit --config configs/tiny/cft.yaml --data.init_args.selector cft.selectors.RandomTokens "
        f"--data.init_args.selector.init_args.seed 1 {where} --run.name random-s1 "
        "--run.method random --data.init_args.seed 1",
        "python -m cft test --config configs/tiny/eval.yaml --model.init_args.num_samples 8 "
        f"--model.init_args.model.name_or_path runs/tiny_study/random-s1/hf/best {where} "
        "--run.name random-s1-eval --run.method random --run.tags '[eval]'",
    ]


def test_all_dry_run_and_slurm_index(capsys, monkeypatch):
    assert main(["--grid", str(STUDY), "--all", "--dry-run"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 36
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "17")
    assert main(["--grid", str(STUDY), "--dry-run", "--fit-extra=--trainer.max_steps 5"]) == 0
    fit, test = capsys.readouterr().out.strip().splitlines()
    assert "--run.name dft-s2" in fit and fit.endswith("--trainer.max_steps 5")
    assert "max_steps" not in test
    assert main(["--grid", str(STUDY), "--count"]) == 0
    assert capsys.readouterr().out.strip() == "18"


def test_out_of_range_index_is_one_clear_error(capsys, monkeypatch):
    assert main(["--grid", str(STUDY), "--index", "18", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "index 18 is out of range" in err and "6 methods x 3 seeds = 18 points (valid indices 0..17)" in err
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID", raising=False)
    assert main(["--grid", str(STUDY), "--dry-run"]) == 2
    assert "--index" in capsys.readouterr().err
    with pytest.raises(SweepError, match="out of range"):
        Grid.load(STUDY).point(-1)


@pytest.mark.parametrize(
    "text,match",
    [
        ("experiment: e\nseeds: [0]\nmethods: {a: []}\nmethod: {}\n", "unknown key"),
        ("experiment: e\nseeds: [0, x]\nmethods: {a: []}\n", "'seeds' must be a list of integers"),
        ("experiment: e\nseeds: [0]\n", "'methods' is missing"),
        ("experiment: e\nseeds: [0]\nmethods: {a: --x}\n", "'methods.a' must be a list"),
        ("experiment: e\nseeds: [0]\nmethods: {a: ['{sed}']}\n", "bad placeholder"),
    ],
)
def test_bad_grid_files_name_file_and_key(tmp_path, text, match):
    path = tmp_path / "grid.yaml"
    path.write_text(text)
    with pytest.raises(SweepError, match=match) as e:
        Grid.load(path).commands(0)
    assert str(path) in str(e.value)


def test_run_skips_finished_points(tmp_path, capsys):
    grid = tmp_path / "grid.yaml"
    grid.write_text(f"experiment: e\nroot: {tmp_path}\nseeds: [0]\nmethods: {{a: []}}\neval: []\n")
    done = tmp_path / "e" / "a-s0-eval"
    done.mkdir(parents=True)
    (done / "metrics.json").write_text("{}")
    assert main(["--grid", str(grid), "--all"]) == 0
    assert "is done" in capsys.readouterr().out


def _parses(args: list[str]) -> None:
    from cft.cli import main as cli

    with pytest.raises(SystemExit) as e:
        cli([*args, "--print_config"])
    assert e.value.code in (0, None), shlex.join(args)


def _is_grid(path) -> bool:
    raw = yaml.safe_load(path.read_text())
    return isinstance(raw, dict) and {"methods", "seeds"} <= set(raw)


GRIDS = sorted(p for p in (REPO / "configs").rglob("*.yaml") if _is_grid(p))


def test_the_grids_are_the_expected_files():
    """A grid the parse test below does not know about fails here rather than going untested."""
    names = [str(p.relative_to(REPO)) for p in GRIDS]
    assert {"configs/experiments/tiny_study.yaml", "configs/experiments/tiny_grpo_study.yaml"} <= set(names), names
    assert "configs/paper/sweep.yaml" in names


@pytest.mark.parametrize("path", GRIDS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_grid_command_parses(path, capsys):
    """Every method of every shipped grid: its fit and eval commands parse through the real CLI (seeds only change
    values, so one seed per method)."""
    grid = Grid.load(path)
    for i in range(0, len(grid), len(grid.seeds)):
        for args in grid.commands(i):
            # configs are relative to the repo root, as in the printed commands
            _parses([str(REPO / a) if a.startswith("configs/") else a for a in args])
    capsys.readouterr()


def test_one_grid_command_parses_with_its_selector(capsys):
    fit, test = Grid.load(STUDY).commands(7)
    _parses([str(REPO / a) if a.startswith("configs/") else a for a in fit])
    out = capsys.readouterr().out
    assert "class_path: cft.selectors.RandomTokens" in out and "method: random" in out


def test_early_stopping_config_adds_lightnings_callback(tmp_path):
    from lightning.pytorch.callbacks import EarlyStopping

    from cft.cli import CFTCLI

    cli = CFTCLI(
        args=[
            "--config",
            str(REPO / "configs/tiny/cft.yaml"),
            "--config",
            str(REPO / "configs/experiments/tiny_early_stopping.yaml"),
            "--run.root",
            str(tmp_path),
            "--run.wandb_mode",
            "disabled",
        ],
        run=False,
    )
    stops = [c for c in cli.trainer.callbacks if isinstance(c, EarlyStopping)]
    assert len(stops) == 1
    assert (stops[0].monitor, stops[0].mode, stops[0].patience) == ("val/acc", "max", 4)


def _write_annotations(path, tokenizer, n: int = 24) -> None:
    """Annotated shards shaped like the scorer's (random critical flags and entropies), for the tokenizer given."""
    import random

    from cft.data.annotation_format import write_part
    from cft.lm.loading import tokenizer_fingerprint
    from cft.tasks import ArithmeticTask
    from cft.tasks.templates import PlainTemplate

    rng = random.Random(0)
    rows = []
    for p in ArithmeticTask().problems("train")[:n]:
        prompt = PlainTemplate().render(p.question, tokenizer)
        ids = tokenizer(p.solution, add_special_tokens=False)["input_ids"]
        rows.append(
            {
                **{"id": p.id, "question": p.question, "answer": p.answer, "prompt": prompt, "response": p.solution},
                "prompt_token_ids": tokenizer(prompt)["input_ids"],
                "response_token_ids": ids,
                "critical": [int(rng.random() < 0.15) for _ in ids],
                "entropy": [rng.random() for _ in ids],
            }
        )
    path.mkdir(parents=True)
    write_part(path / "part-00000.parquet", rows, {"tokenizer": tokenizer_fingerprint(tokenizer)})


@pytest.mark.slow
def test_sweep_end_to_end_then_compare(tiny_model_dir, world_tokenizer, tmp_path, monkeypatch, capsys):
    """The real sweep (fit + test subprocesses per point) on a 2 x 1 grid, then the comparison of its runs."""
    from cft.compare import compare

    _write_annotations(tmp_path / "ann", world_tokenizer)
    fast = ["--trainer.max_steps", "3", "--trainer.max_epochs", "-1", "--trainer.val_check_interval", "3"]
    fast += ["--trainer.check_val_every_n_epoch", "null", "--trainer.log_every_n_steps", "1"]
    fast += ["--data.init_args.micro_batch_size", "4", "--data.init_args.n_val", "4"]
    fast += ["--model.init_args.val_max_new_tokens", "4", "--trainer.enable_progress_bar", "false"]
    model = ["--model.init_args.model.name_or_path", str(tiny_model_dir), "--run.wandb_mode", "disabled"]
    grid = {
        "experiment": "e2e",
        "root": str(tmp_path / "runs"),
        "seeds": [0],
        "fit": [
            "--config",
            "configs/tiny/cft.yaml",
            "--data.init_args.annotations",
            str(tmp_path / "ann"),
            *model,
            *fast,
        ],
        "eval": ["--config", "configs/tiny/eval.yaml", "--data.init_args.limit", "2", "--run.wandb_mode", "disabled"]
        + ["--model.init_args.max_new_tokens", "4", "--model.init_args.num_samples", "2"]
        + ["--trainer.enable_progress_bar", "false"],
        "methods": {"cft": [], "random": ["--data.init_args.selector", "cft.selectors.RandomTokens"]},
    }
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(grid))
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert main(["--grid", str(tmp_path / "grid.yaml"), "--all"]) == 0
    summary = compare([str(tmp_path / "runs/e2e/*")], tmp_path / "out").set_index("method")
    assert list(summary.index) == ["cft", "random"]
    # same number of selected tokens per row: the random control differs from CFT only in which tokens
    frac = summary["frac_tokens_selected_mean"]
    assert 0 < frac["cft"] < 1 and frac["random"] == pytest.approx(frac["cft"])
    assert summary["eval/test/pass@2_mean"].notna().all()
    capsys.readouterr()
    assert main(["--grid", str(tmp_path / "grid.yaml"), "--all"]) == 0  # finished points are skipped
    assert capsys.readouterr().out.count("is done") == 2
