"""The error contract, through the real entry point: every user-input error is a `cft.errors.CFTError` subclass,
`python -m cft` prints it as ONE line `error: ...` (no traceback) and exits 2, and no run directory, W&B run or
half-written file is left behind."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

import cft.errors as errors
from cft.cli import main
from cft.errors import CFTError

REPO = Path(__file__).resolve().parents[1]


def _cli(subcommand: str, config: str, model_dir: Path, root: Path, *extra: str) -> list[str]:
    """`python -m cft SUBCOMMAND --config CONFIG` on `model_dir` under `root`, with W&B offline: a W&B run would be
    created (and left behind) if the input were checked too late."""
    args = [subcommand, "--config", str(REPO / config), "--model.init_args.model.name_or_path", str(model_dir)]
    return args + [
        "--run.root",
        str(root),
        "--run.wandb_mode",
        "offline",
        "--trainer.enable_progress_bar",
        "false",
        *extra,
    ]


def _fit(model_dir: Path, root: Path, config: str = "configs/tiny/sft.yaml") -> list[str]:
    small = ["--data.init_args.max_train_rows", "8", "--data.init_args.micro_batch_size", "4"]
    return _cli("fit", config, model_dir, root, "--trainer.max_steps", "1", "--data.init_args.n_val", "2", *small)


def _annotate(model_dir: Path, root: Path) -> list[str]:
    return _cli("predict", "configs/tiny/annotate.yaml", model_dir, root, "--data.init_args.limit", "2")


def _eval(model_dir: Path, root: Path) -> list[str]:
    return _cli("test", "configs/tiny/eval.yaml", model_dir, root, "--data.init_args.limit", "2")


def _grpo(model_dir: Path, root: Path, *extra: str) -> list[str]:
    return _cli("fit", "configs/tiny/grpo.yaml", model_dir, root, *extra)


def _one_error_line(args: list[str], capsys, root: Path, error_class: type[CFTError], pattern: str) -> str:
    """Run main(args); assert exit 2, exactly one `error:` line on stderr matching `pattern`, no traceback, and no
    file written under `root`. Returns the line."""
    capsys.readouterr()
    root_existed = root.exists()
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    if not root_existed:  # not even an empty run.root / experiment directory stays behind
        assert not root.exists(), sorted(str(p) for p in root.rglob("*"))
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    assert re.search(pattern, lines[0]), lines[0]
    cause = exit_info.value.__cause__
    while cause is not None and not isinstance(cause, CFTError):
        cause = cause.__cause__ or cause.__context__
    assert type(cause) is error_class, f"{type(cause).__name__} raised, {error_class.__name__} expected"
    files = [p for p in root.rglob("*") if p.is_file()] if root.exists() else []
    assert files == [], f"left behind: {files[:5]}"
    assert not any(p.name == "wandb" for p in root.rglob("*")) if root.exists() else True
    return lines[0]


# -- settings (ConfigError and its subclasses) ------------------------------------------------------------------
@pytest.mark.parametrize(
    "extra,pattern",
    [
        (["--run.wandb_mode", "offlin"], r"run\.wandb_mode must be offline, online or disabled, got 'offlin'"),
        (["--model.init_args.model.dtype", "fp32"], r"model\.dtype must be float32, bfloat16 or float16, got 'fp32'"),
        (["--data.init_args.micro_batch_size", "0"], r"data\.micro_batch_size=0 .* expected >= 1"),
        (["--model.init_args.optimizer.init_args.lr", "-1"], r"model\.optimizer: Invalid learning rate: -1"),
        (["--trainer.max_stepz", "3"], r"max_stepz.*--help lists the options"),
    ],
    ids=["wandb_mode", "dtype", "micro_batch_0", "negative_lr", "unknown_option"],
)
def test_config_error(tiny_model_dir, tmp_path, capsys, extra, pattern):
    root = tmp_path / "runs"
    _one_error_line(_fit(tiny_model_dir, root) + extra, capsys, root, errors.ConfigError, pattern)


def test_scorer_setting_is_one_line(tiny_model_dir, tmp_path, capsys):
    """Issue 8.1's probe: --model.init_args.fail_fraction 2.0 on the scorer printed a 77-line traceback."""
    root = tmp_path / "runs"
    args = _annotate(tiny_model_dir, root) + ["--model.init_args.settings.criterion", "fraction"]
    args += ["--model.init_args.settings.fail_fraction", "2.0"]
    _one_error_line(args, capsys, root, errors.ConfigError, r"fail_fraction=2\.0: expected a fraction in \(0, 1\]")


def test_yaml_parse_error_names_the_file(tiny_model_dir, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer:\n  max_steps: [1, 2\n")
    root = tmp_path / "runs"
    line = _one_error_line(
        _fit(tiny_model_dir, root) + ["--config", str(bad)], capsys, root, errors.ConfigError, r"is not valid YAML"
    )
    assert str(bad) in line and "line 3" in line


def test_grpo_config_error(tiny_model_dir, tmp_path, capsys):
    root = tmp_path / "runs"
    args = _grpo(tiny_model_dir, root, "--model.init_args.reward_weights", "[1.0, 2.0, 3.0]")
    _one_error_line(args, capsys, root, errors.GRPOConfigError, r"reward_weights has 3 entries for reward_funcs")


def test_weighting_error(tiny_model_dir, tmp_path, capsys):
    root = tmp_path / "runs"
    args = _fit(tiny_model_dir, root) + ["--model.init_args.weighting", "cft.modules.weighting.Rho1Weighting"]
    args += ["--model.init_args.weighting.init_args.reference.name_or_path", str(tiny_model_dir)]
    args += ["--model.init_args.weighting.init_args.fraction", "1.5"]
    _one_error_line(args, capsys, root, errors.WeightingError, r"Rho1Weighting\.fraction must be in \(0, 1\], got 1\.5")


def test_selector_error(tiny_model_dir, tmp_path, capsys):
    root = tmp_path / "runs"
    args = _fit(tiny_model_dir, root) + ["--data.init_args.selector", "cft.selectors.RandomTokens"]
    args += ["--data.init_args.selector.init_args.fraction", "2.0"]
    _one_error_line(args, capsys, root, errors.SelectorError, r"RandomTokens\.fraction must be in \[0, 1\], got 2\.0")


# -- paths and files ----------------------------------------------------------------------------------------------
def test_run_root_that_is_a_file(tiny_model_dir, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    args = _fit(tiny_model_dir, afile)
    _one_error_line(args, capsys, tmp_path / "nothing", errors.RunDirError, r"afile' is a file, not a directory")
    assert afile.read_text() == "x"


def test_missing_model_dir(tmp_path, capsys):
    root = tmp_path / "runs"
    args = _fit(tmp_path / "no_model", root)
    _one_error_line(args, capsys, root, errors.ModelLoadError, r"local model dir .*no_model' does not exist")


def test_corrupt_safetensors_is_named(tiny_model_dir, tmp_path, capsys):
    model = tmp_path / "corrupt_model"
    shutil.copytree(tiny_model_dir, model)
    (model / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00garbage!" * 4)
    root = tmp_path / "runs"
    _one_error_line(
        _fit(model, root), capsys, root, errors.ModelLoadError, r"model\.safetensors' are not a readable safetensors"
    )


def test_missing_annotations(tiny_model_dir, tmp_path, capsys):
    root = tmp_path / "runs"
    args = _fit(tiny_model_dir, root, "configs/tiny/cft.yaml") + ["--data.init_args.annotations", str(tmp_path / "no")]
    _one_error_line(args, capsys, root, errors.DataError, r"annotations .*no': no part-\*\.parquet files found")


def test_corrupt_parquet_is_named(tiny_model_dir, tmp_path, capsys):
    ann = tmp_path / "ann"
    ann.mkdir()
    (ann / "part-00000.parquet").write_bytes(b"PAR1garbagePAR1")
    root = tmp_path / "runs"
    args = _fit(tiny_model_dir, root, "configs/tiny/cft.yaml") + ["--data.init_args.annotations", str(ann)]
    _one_error_line(args, capsys, root, errors.AnnotationError, r"part-00000\.parquet: not a readable parquet part")


@pytest.mark.parametrize(
    "text,pattern",
    [
        ('{"question": "1+1", "answer": "2"}\n{"question": "2+2", \n', r"line 2: not valid JSON"),
        ('{"question": "1+1", "answer": "2"}\n[1, 2]\n', r"line 2: expected a JSON object, got list"),
    ],
    ids=["malformed_line", "list_line"],
)
def test_bad_jsonl_line(tiny_model_dir, tmp_path, capsys, text, pattern):
    data = tmp_path / "q.jsonl"
    data.write_text(text)
    root = tmp_path / "runs"
    args = _annotate(tiny_model_dir, root) + ["--data.init_args.dataset", str(data)]
    line = _one_error_line(args, capsys, root, errors.DataError, pattern)
    assert str(data) in line


def test_bad_benchmark_file(tiny_model_dir, tmp_path, capsys):
    data = tmp_path / "gsm8k.jsonl"
    data.write_text('{"question": "1+1", "answer": "#### 2"}\n[1, 2]\n')
    root = tmp_path / "runs"
    args = _eval(tiny_model_dir, root) + ["--data.init_args.benchmarks", "[gsm8k]"]
    args += ["--data.init_args.local_paths", json.dumps({"gsm8k": str(data)})]
    _one_error_line(args, capsys, root, errors.BenchmarkLoadError, r"gsm8k\.jsonl' line 2: expected a JSON object")


# -- errors found once the run has started: the new run directory is removed ---------------------------------
def test_error_inside_the_run_removes_the_new_run_dir(tiny_model_dir, tmp_path, capsys):
    root = tmp_path / "runs"
    args = _fit(tiny_model_dir, root) + ["--data.init_args.max_length", "4"]
    _one_error_line(args, capsys, root, errors.DataError, r"over max_length=4")


def raising_reward(completions: list[str], answers: list[str], **kwargs) -> list[float]:
    raise KeyError("no field 'steps' in the completion")


def test_reward_error_inside_the_run(tiny_model_dir, tmp_path, capsys):
    root = tmp_path / "runs"
    reward = [
        "--model.init_args.reward_funcs",
        "[tests.test_errors.raising_reward]",
        "--model.init_args.reward_weights",
    ]
    small = ["--model.init_args.num_generations", "2", "--model.init_args.max_new_tokens", "4"]
    small += ["--data.init_args.batch_size", "2", "--data.init_args.n_val", "2", "--trainer.max_steps", "1"]
    args = _grpo(tiny_model_dir, root, *reward, "[1.0]", *small, "--trainer.callbacks", "[]")
    _one_error_line(args, capsys, root, errors.RewardError, r"reward function 'raising_reward' raised KeyError")


def test_existing_run_dir_is_kept(tiny_model_dir, tmp_path, capsys):
    """A run directory that existed before (a run being resumed) is never removed by a failed start."""
    root = tmp_path / "runs"
    run = root / "tiny" / "mine"
    run.mkdir(parents=True)
    (run / "keep.txt").write_text("earlier work")
    args = _fit(tiny_model_dir, root) + ["--run.name", "mine", "--data.init_args.max_length", "4"]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    assert (run / "keep.txt").read_text() == "earlier work"


# -- the other command-line tools ---------------------------------------------------------------------------------
def test_compare_error(tmp_path, capsys):
    from cft.compare import main as compare_main

    assert compare_main([str(tmp_path / "no_such_run"), "--out", str(tmp_path / "out")]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "does not exist" in lines[0]
    assert not (tmp_path / "out").exists()


def test_sweep_error(tmp_path, capsys):
    from cft.sweep import main as sweep_main

    grid = tmp_path / "grid.yaml"
    grid.write_text("not: [valid\n")
    assert sweep_main(["--grid", str(grid), "--count"]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and str(grid) in lines[0]


def test_every_user_error_is_a_cft_error():
    """One base: every class in cft.errors is a CFTError, and no other module defines its own user-error class."""
    import ast

    classes = [obj for obj in vars(errors).values() if isinstance(obj, type) and obj.__module__ == errors.__name__]
    assert {"AnnotationError", "BenchmarkLoadError", "ConfigError", "DataError"} <= {c.__name__ for c in classes}
    for cls in classes:
        assert issubclass(cls, CFTError)
    own = []
    for path in (REPO / "cft").rglob("*.py"):
        if path.name == "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.name.endswith("Error"):
                own.append(f"{path.relative_to(REPO)}:{node.name}")
    assert own == [], f"error classes outside cft/errors.py: {own}"
