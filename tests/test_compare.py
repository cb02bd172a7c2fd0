"""cft.compare on small fake run dirs written here: pairing, mean ± std over seeds, files and plots, bad input."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from cft.compare import compare, find_runs, load_runs, main, read_curves, seed_table
from cft.errors import CompareError

SELECTORS = {"sft": "AllTokens", "cft": "CriticalTokens", "random": "RandomTokens"}


def write_run(
    root: Path,
    name: str,
    *,
    experiment: str = "study",
    tags: list[str] = (),
    method: str | None = None,
    seed: int = 0,
    selector: str = "CriticalTokens",
    weighting: str | None = None,
    model_path: str = "runs/tiny/pretrain/hf/last",
    evaluator: bool = False,
    csv: str | None = None,
    metrics: dict | None = None,
    stats: dict | None = None,
) -> Path:
    """A run dir shaped like the CLI's: config.yaml, and metrics.csv / metrics.json / data_stats.json as given."""
    d = root / experiment / name
    d.mkdir(parents=True)
    model_cls = "cft.modules.evaluator.Evaluator" if evaluator else "cft.modules.TokenWeightedLearner"
    init: dict = {"model": {"name_or_path": model_path}}
    if not evaluator:
        init["weighting"] = {"class_path": f"cft.modules.weighting.{weighting}"} if weighting else None
    config = {
        "seed_everything": seed,
        "model": {"class_path": model_cls, "init_args": init},
        "data": {"class_path": "cft.data.TrainDataModule", "init_args": {}},
        "run": {"experiment": experiment, "name": name, "root": str(root), "tags": list(tags), "method": method},
    }
    if not evaluator:
        config["data"]["init_args"]["selector"] = {"class_path": f"cft.selectors.{selector}"}
    (d / "config.yaml").write_text(yaml.safe_dump(config))
    if csv is not None:
        (d / "metrics.csv").write_text(csv)
    if metrics is not None:
        (d / "metrics.json").write_text(json.dumps(metrics))
    if stats is not None:
        (d / "data_stats.json").write_text(json.dumps(stats))
    return d


def train_csv(entropy0: float, acc: float, steps: int = 4) -> str:
    """Lightning CSV logger layout: train rows per step, validation rows at the same step with the other cells empty."""
    lines = ["epoch,step,train/entropy,train/frac_tokens_selected,train/loss,val/acc"]
    for s in range(steps):
        lines.append(f"0,{s},{entropy0 - 0.1 * s},0.5,{2.0 - 0.1 * s},")
        if s % 2 == 1:
            lines.append(f"0,{s},,,,{acc * (s + 1) / steps}")
    return "\n".join(lines) + "\n"


def eval_metrics(acc: float, entropy: float) -> dict:
    out = {}
    for split, scale in (("test", 1.0), ("test_hard", 0.5)):
        out[f"eval/{split}/acc"] = acc * scale
        out[f"eval/{split}/entropy"] = entropy
        out[f"eval/{split}/n"] = 100.0
        for k in (1, 2, 4, 8):
            out[f"eval/{split}/pass@{k}"] = min(1.0, acc * scale * (1 + 0.1 * k))
    return out


def write_fake_study(root: Path, methods=("sft", "cft", "random"), seeds=(0, 1, 2)) -> dict:
    """Train + eval run dirs per (method, seed), named as `python -m cft.sweep` names them (run.method,
    seed_everything). Returns the accuracies."""
    accs = {}
    for mi, method in enumerate(methods):
        for seed in seeds:
            acc = 0.4 + 0.1 * mi + 0.01 * seed
            accs[(method, seed)] = acc
            name = f"{method}-s{seed}"
            write_run(root, name, method=method, seed=seed, selector=SELECTORS[method], csv=train_csv(3.0 + mi, acc))
            write_run(
                root,
                f"{name}-eval",
                tags=["eval"],
                method=method,
                seed=seed,
                evaluator=True,
                model_path=f"{root}/study/{name}/hf/best",
                csv="epoch,eval/test/acc,step\n0,0.5,0\n",
                metrics=eval_metrics(acc, 1.0 + 0.2 * mi + 0.01 * seed),
            )
    return accs


def test_compare_summarises_methods_over_seeds(tmp_path):
    accs = write_fake_study(tmp_path / "runs")
    out = tmp_path / "out"
    summary = compare([str(tmp_path / "runs/study/*")], out)
    assert list(summary["method"]) == ["sft", "cft", "random"]
    assert list(summary["n_seeds"]) == [3, 3, 3]
    for _, row in summary.iterrows():
        vals = np.array([accs[(row["method"], s)] for s in (0, 1, 2)])
        assert row["eval/test/acc_mean"] == pytest.approx(vals.mean())
        assert row["eval/test/acc_std"] == pytest.approx(vals.std(ddof=1))
        assert row["eval/test_hard/pass@8_mean"] == pytest.approx(min(1.0, 0.5 * vals.mean() * 1.8))
        assert row["frac_tokens_selected_mean"] == pytest.approx(0.5)
    md = (out / "summary.md").read_text()
    assert "| method | seeds | test acc | test pass@8 | test entropy | test_hard acc" in md
    assert "| cft | 3 | 0.510 ± 0.010 |" in md
    assert pd.read_csv(out / "summary.csv").shape[0] == 3
    table = pd.read_csv(out / "runs.csv")
    assert table.shape[0] == 9 and table["eval_run"].str.endswith("-eval").all()
    curves = pd.read_csv(out / "curves.csv")
    assert curves.shape[0] == 9 * 4 and list(curves.columns[:3]) == ["method", "seed", "step"]
    for png in ("pass_at_k.png", "acc_vs_entropy.png", "train_entropy.png", "val_acc.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG", png


def test_curves_keep_the_last_value_per_step(tmp_path):
    path = tmp_path / "metrics.csv"
    # step 1 logged twice (a resumed run), validation on its own row
    path.write_text("epoch,step,train/entropy,val/acc\n0,0,3.0,\n0,1,2.0,\n0,1,2.5,\n0,1,,0.4\n0,2,1.0,\n")
    curves = read_curves(path)
    assert list(curves.index) == [0, 1, 2]
    assert list(curves["train/entropy"]) == [3.0, 2.5, 1.0]
    assert curves["val/acc"].dropna().to_dict() == {1: 0.4}


def test_method_from_run_method_inherited_by_eval_runs_and_legacy_tags(tmp_path):
    root = tmp_path / "runs"
    train = write_run(root, "fit-abc", seed=3, method="dft", csv=train_csv(3, 0.5))
    best = str(train / "hf" / "best")
    write_run(root, "eval-x", seed=0, evaluator=True, model_path=best, metrics=eval_metrics(0.5, 1))
    # a run dir from before run.method: the method was a tag; and one that names no method at all
    write_run(root, "old", seed=1, tags=["method=cft", "seed=1"], csv=train_csv(3, 0.2))
    write_run(root, "anon", seed=2, selector="RandomTokens", csv=train_csv(3, 0.2))
    runs = {Path(r.path).name: r for r in load_runs([str(root / "study/*")])}
    assert (runs["fit-abc"].method, runs["fit-abc"].seed) == ("dft", 3)
    assert (runs["eval-x"].method, runs["eval-x"].seed) == ("dft", 3)  # inherited from the checkpoint's run
    assert (runs["old"].method, runs["old"].seed) == ("cft", 1)
    assert runs["anon"].method == "unknown"  # class names are not read: the CLI writes run.method on fit
    table = seed_table(list(runs.values()))
    row = table[table["method"] == "dft"].iloc[0]
    assert row["train_run"].endswith("fit-abc") and row["eval_run"].endswith("eval-x")


def test_duplicate_runs_use_the_newest_with_a_warning(tmp_path):
    root = tmp_path / "runs"
    old = write_run(root, "a", method="cft", metrics=eval_metrics(0.1, 1))
    new = write_run(root, "b", method="cft", metrics=eval_metrics(0.9, 1))
    past = time.time() - 100
    os.utime(old / "metrics.json", (past, past))
    with pytest.warns(UserWarning, match="using the newest"):
        table = seed_table(load_runs([old, new]))
    assert table.shape[0] == 1 and table["eval/test/acc"].iloc[0] == pytest.approx(0.9)


def test_run_without_metrics_is_a_clear_error(tmp_path):
    d = write_run(tmp_path, "nometrics")
    with pytest.raises(CompareError, match=r"nometrics.*metrics\.csv and metrics\.json are both missing"):
        load_runs([d])
    with pytest.raises(CompareError, match=r"config\.yaml is missing"):
        load_runs([tmp_path])
    with pytest.raises(CompareError, match="no run dirs"):
        load_runs([str(tmp_path / "nothing" / "*")])


def test_cli_and_find_runs(tmp_path, capsys):
    write_fake_study(tmp_path / "runs", methods=("cft",), seeds=(0,))
    assert len(find_runs(tmp_path / "runs")) == 2
    assert main([str(tmp_path / "runs/study/*"), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "| cft | 1 |" in out and "±" not in out.split("\n")[2]  # one seed: no std
    assert main([str(tmp_path / "missing"), "--out", str(tmp_path / "out")]) == 2
    assert "missing" in capsys.readouterr().err


def test_short_training_run_with_only_validation_rows_is_a_training_run(tmp_path):
    # log_every_n_steps larger than the run: metrics.csv holds validation rows only
    d = write_run(tmp_path, "short", method="cft", csv="epoch,step,val/acc,val/loss\n0,3,0.5,1.0\n")
    (run,) = load_runs([d])
    assert run.is_train and not run.is_eval
    assert seed_table([run])["val/acc_best"].iloc[0] == 0.5


def test_wandb_source_refuses_offline_mode_at_once(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    with pytest.raises(CompareError, match="WANDB_MODE=offline"):
        compare([], tmp_path / "out", wandb_project="cft")


def test_rl_runs_plot_policy_entropy_and_reward(tmp_path):
    """GRPO runs log rl/entropy rather than train/entropy: the entropy plot and a reward plot use those."""
    csv = (
        "epoch,rl/entropy,rl/reward_mean,step,val/acc\n"
        + "".join(f"0,{0.1 - 0.01 * s},{0.2 + 0.05 * s},{s},\n" for s in range(4))
        + "0,,,3,0.5\n"
    )
    for seed in (0, 1):
        write_run(
            tmp_path / "runs",
            f"grpo-s{seed}",
            method="grpo",
            seed=seed,
            selector=SELECTORS["sft"],
            csv=csv,
        )
    out = tmp_path / "out"
    compare([str(tmp_path / "runs/study/*")], out)
    assert (out / "rl_reward.png").stat().st_size > 20000  # a real plot (the "no curves" placeholder is ~8 kB)
    curves = pd.read_csv(out / "curves.csv")
    assert "rl/entropy" in curves.columns and curves["rl/entropy"].dropna().round(3).tolist()[:4] == [
        0.1,
        0.09,
        0.08,
        0.07,
    ]
