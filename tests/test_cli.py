"""The CLI: every shipped YAML parses, fit writes its run directory, resume continues exactly, bad input fails."""

from __future__ import annotations

import re

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM

from cft.cli import main
from tests.helpers import REPO, fast_fit_args

STRATEGY_BASE = REPO / "configs/tiny/sft.yaml"


def _shipped_configs():
    """Every shipped config but the sweep grids (tests/test_sweep.py parses each grid point's commands), with the
    command its header gives; the command must load the file itself."""
    out = []
    for path in sorted((REPO / "configs").rglob("*.yaml")):
        text = path.read_text()
        raw = yaml.safe_load(text)
        if isinstance(raw, dict) and {"methods", "seeds"} <= set(raw):
            continue
        m = re.search(r"python -m cft (fit|validate|test|predict) ((?:--config [^\s`]+ ?)+)", text)
        if m is None:
            raise AssertionError(f"{path}: header comment must give the command that runs it (python -m cft ...)")
        configs = re.findall(r"--config ([^\s`'\"]+)", m.group(2))
        if str(path.relative_to(REPO)) not in configs:
            raise AssertionError(f"{path}: the command in its header does not load it ({m.group(0)})")
        out.append(pytest.param(m.group(1), configs, id=str(path.relative_to(REPO))))
    return out


@pytest.mark.parametrize("subcommand,configs", _shipped_configs())
def test_every_shipped_yaml_parses(subcommand, configs, capsys):
    args = [subcommand]
    for c in configs:
        args += ["--config", str(REPO / c)]
    with pytest.raises(SystemExit) as e:
        main([*args, "--print_config"])
    assert e.value.code in (0, None)
    printed = capsys.readouterr().out
    assert "class_path" in printed and "trainer:" in printed


def test_yaml_typo_is_one_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer:\n  max_stepz: 3\n")
    with pytest.raises(SystemExit) as e:
        main(["fit", "--config", str(STRATEGY_BASE), "--config", str(bad), "--print_config"])
    assert e.value.code != 0
    assert "max_stepz" in capsys.readouterr().err


def test_wrong_type_is_one_clear_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["fit", "--config", str(STRATEGY_BASE), "--trainer.max_steps", "many", "--print_config"])
    assert e.value.code != 0
    assert "max_steps" in capsys.readouterr().err


def test_fit_writes_run_directory(tiny_model_dir, tmp_path):
    main(fast_fit_args(tiny_model_dir, tmp_path, name="e2e", steps=4))
    run = tmp_path / "exp" / "e2e"
    assert (run / "config.yaml").is_file()
    assert (run / "checkpoints" / "last.ckpt").is_file()
    metrics = (run / "metrics.csv").read_text()
    for key in ("train/loss", "train/entropy", "train/frac_tokens_selected", "val/acc", "val/loss"):
        assert key in metrics.splitlines()[0]
    for sub in ("last", "best"):
        model = AutoModelForCausalLM.from_pretrained(run / "hf" / sub)
        assert model.config.model_type == "qwen2"
        assert (run / "hf" / sub / "tokenizer.json").is_file()
    # A second run of the same config in the same run dir resumes (and does not crash on config.yaml).
    main(fast_fit_args(tiny_model_dir, tmp_path, name="e2e", steps=4))


def test_default_run_names_differ_by_config(tiny_model_dir, tmp_path):
    args = fast_fit_args(tiny_model_dir, tmp_path, steps=1)
    i = args.index("--run.name")
    del args[i : i + 2]
    main(args)
    main([*args, "--model.init_args.lr_schedule.warmup_steps", "1"])
    runs = sorted(p.name for p in (tmp_path / "exp").iterdir())
    assert len(runs) == 2 and all(r.startswith("fit-") for r in runs)


def _weights(path):
    return AutoModelForCausalLM.from_pretrained(path).state_dict()


def test_resume_mid_run_gives_same_weights(tiny_model_dir, tmp_path):
    from tests.helpers import SimulatedCrash

    every = ["--run.checkpoint_every_n_steps", "1"]
    main(fast_fit_args(tiny_model_dir, tmp_path / "a", name="r", steps=6) + every)
    # Interrupted run: a crash after step 4 (last.ckpt holds step 3), then the same command resumes mid-epoch.
    crash = ["--trainer.callbacks+=tests.helpers.CrashAtStep", "--trainer.callbacks.step", "4"]
    with pytest.raises(SimulatedCrash):
        main(fast_fit_args(tiny_model_dir, tmp_path / "b", name="r", steps=6) + every + crash)
    assert torch.load(tmp_path / "b/exp/r/checkpoints/last.ckpt", weights_only=False)["global_step"] == 3
    main(fast_fit_args(tiny_model_dir, tmp_path / "b", name="r", steps=6) + every)
    steps = [line.split(",")[1] for line in (tmp_path / "b/exp/r/metrics.csv").read_text().splitlines()[1:]]
    assert "0" in steps and "5" in steps, "metrics.csv must keep the rows from before the crash"
    a = _weights(tmp_path / "a/exp/r/hf/last")
    b = _weights(tmp_path / "b/exp/r/hf/last")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=f"{k} differs after resume")
    # and training did change the weights
    init = _weights(tiny_model_dir)
    assert any(not torch.equal(init[k], a[k]) for k in a)


def test_missing_model_path_is_clear(tmp_path, capsys):
    args = fast_fit_args(tmp_path / "nope", tmp_path, steps=1)
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: model.name_or_path") and "nope" in err[-1] and "does not exist" in err[-1]
    assert not (tmp_path / "exp" / "t" / "checkpoints").exists()


def test_wandb_offline_run_is_written(tiny_model_dir, tmp_path):
    """The default logger set: W&B offline (no login, no network) beside the local metrics.csv."""
    args = fast_fit_args(tiny_model_dir, tmp_path, name="wb", steps=2)
    i = args.index("--run.wandb_mode")
    args[i + 1] = "offline"
    main(args)
    import wandb

    wandb.finish()  # Lightning leaves the run open; finished here, its summary is not printed into a later test
    run = tmp_path / "exp" / "wb"
    offline = list((run / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and (offline[0] / "run-exp-wb.wandb").is_file()
    assert "train/loss" in (run / "metrics.csv").read_text()


def test_fit_records_its_method_in_the_config(tiny_model_dir, tmp_path):
    """run.method is resolved from the selector or weighting objects on fit and saved in config.yaml (where
    cft.compare reads it); an explicit one wins."""
    cases = {
        "all": [],  # sft.yaml: AllTokens
        "dft": ["--model.init_args.weighting", "cft.modules.weighting.DFTWeighting"],
        "own": ["--run.method", "sft_own"],
    }
    for name, extra in cases.items():
        main(
            fast_fit_args(tiny_model_dir, tmp_path, name=name, steps=1)
            + ["--model.init_args.val_max_new_tokens", "0"]
            + extra
        )
    methods = {n: yaml.safe_load((tmp_path / "exp" / n / "config.yaml").read_text())["run"]["method"] for n in cases}
    assert methods == {"all": "sft", "dft": "dft", "own": "sft_own"}
