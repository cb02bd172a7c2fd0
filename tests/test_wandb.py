"""W&B: the whole resolved config is logged with method, seed, stage and model as fields, the module's hparams do not
replace it, best val/acc is a summary metric; cft.compare reads runs through recorded W&B API objects."""

from __future__ import annotations

import pandas as pd
import pytest
from lightning.pytorch.loggers import WandbLogger

import cft.loggers
from cft.cli import main
from cft.compare.runs import load_wandb_runs
from cft.loggers import RunWandbLogger
from tests.helpers import fast_fit_args


class _Config(dict):
    def __init__(self, calls):
        super().__init__()
        self.calls = calls

    def update(self, params, allow_val_change=False):
        self.calls.append(dict(params))
        super().update(params)


class _Experiment:
    def __init__(self):
        self.updates, self.metrics = [], []
        self.config = _Config(self.updates)

    def define_metric(self, name, summary=None, **kwargs):
        self.metrics.append((name, summary))


def test_cli_logs_the_whole_resolved_config_with_run_fields(tiny_model_dir, tmp_path, monkeypatch):
    seen = {}

    class Recording(RunWandbLogger):
        def __init__(self, *args, **kwargs):
            seen.update(kwargs["config"])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(cft.loggers, "RunWandbLogger", Recording)
    args = fast_fit_args(tiny_model_dir, tmp_path, name="wb", steps=1)
    args[args.index("--run.wandb_mode") + 1] = "offline"
    main([*args, "--run.method", "cft", "--seed_everything", "3", "--run.tags", "[stage=cft]"])
    assert seen["model"]["class_path"] == "cft.modules.TokenWeightedLearner"
    assert seen["data"]["class_path"] == "cft.data.TrainDataModule" and "trainer" in seen
    assert (seen["method"], seen["seed"], seen["stage"]) == ("cft", 3, "cft")
    assert seen["model_name"] == str(tiny_model_dir)


def test_module_hparams_go_under_hparams_and_best_val_acc_is_a_summary(monkeypatch, tmp_path):
    exp = _Experiment()
    monkeypatch.setattr(WandbLogger, "experiment", property(lambda self: exp))
    logger = RunWandbLogger(project="p", offline=True, save_dir=str(tmp_path))
    logger.log_hyperparams({"model": {"name_or_path": "x"}, "val_max_new_tokens": 8})
    assert exp.updates == [{"hparams": {"model": {"name_or_path": "x"}, "val_max_new_tokens": 8}}]
    assert ("val/acc", "max") in exp.metrics and ("val/loss", "min") in exp.metrics
    logger.experiment  # noqa: B018 - defined once, not at every access
    assert len(exp.metrics) == len(RunWandbLogger.SUMMARIES)


class _ApiRun:
    """Stands in for `wandb.apis.public.Run`: the attributes cft.compare reads, with values as the API returns them."""

    def __init__(self, run_id, method, seed, acc):
        self.id, self.group, self.tags = run_id, "qwen2.5-7b", [f"method={method}", f"seed={seed}", "stage=cft"]
        self.config = {
            "seed_everything": seed,
            "run": {"method": method, "experiment": "qwen2.5-7b"},
            "method": method,
            "model": {"class_path": "cft.modules.TokenWeightedLearner"},
        }
        self.summary = {"eval/gsm8k/acc": acc, "eval/avg/acc": acc, "_runtime": 120.5, "val/acc": {"max": 0.5}}

    def history(self, samples=0, pandas=True):
        return pd.DataFrame({"trainer/global_step": [0, 1, 1], "train/loss": [2.0, 1.5, 1.4],
                             "train/frac_tokens_selected": [0.1, 0.12, 0.12]})  # fmt: skip


def test_compare_reads_runs_through_the_wandb_api(monkeypatch):
    import wandb

    calls = {}

    class _Api:
        def __init__(self, timeout=None):
            calls["timeout"] = timeout

        def runs(self, project, filters=None):
            calls["runs"] = (project, filters)
            return [_ApiRun("a1", "cft", 0, 0.61), _ApiRun("a2", "sft", 1, 0.55)]

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setattr(wandb, "Api", _Api)
    runs = load_wandb_runs("ent/cft", group="qwen2.5-7b")
    assert calls["runs"] == ("ent/cft", {"group": "qwen2.5-7b"})
    assert [(r.method, r.seed, r.experiment, r.path) for r in runs] == [
        ("cft", 0, "qwen2.5-7b", "wandb:ent/cft/a1"),
        ("sft", 1, "qwen2.5-7b", "wandb:ent/cft/a2"),
    ]
    assert runs[0].eval == {"eval/gsm8k/acc": 0.61, "eval/avg/acc": 0.61} and runs[0].wall_s == 120.5
    assert list(runs[0].curves.index) == [0, 1] and runs[0].curves.loc[1, "train/loss"] == 1.4
    assert runs[0].frac_tokens_selected == pytest.approx((0.1 + 0.12) / 2)


def test_compare_wandb_errors_name_the_project(monkeypatch):
    import wandb

    from cft.errors import CompareError

    class _Empty:
        def __init__(self, timeout=None):
            pass

        def runs(self, project, filters=None):
            return []

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setattr(wandb, "Api", _Empty)
    with pytest.raises(CompareError, match="'ent/cft' has no runs in group 'g'"):
        load_wandb_runs("ent/cft", group="g")
