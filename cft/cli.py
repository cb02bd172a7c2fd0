"""`python -m cft {fit,validate,test,predict} --config A.yaml [--config B.yaml ...]`: LightningCLI with run dirs.

Every run lives in `<runs_root>/<experiment>/<run_name>/` (config.yaml, checkpoints/, hf/, metrics.csv, wandb/).
Without `--run_name` the name is `<subcommand>-<hash of the resolved config>`, so a different config never
collides with an earlier run and a requeued identical job finds (and resumes from) its own last checkpoint.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.utilities.exceptions import SIGTERMException

from cft.callbacks.stop import StopCheckpoint
from cft.errors import CFTError, ConfigError, RunDirError, error_line
from cft.launch import check_slurm_allocation
from cft.loggers import RunCSVLogger, TrimMetricsOnResume
from cft.run_dir import (
    NON_DEFINING,
    check_run_dir,
    defining,
    flatten,
    launch_rank,
    lock_run_dir,
    release_run_locks,
)
from cft.threads import set_torch_threads

STOPPED_EXIT_CODE = 143  # 128 + SIGTERM, as a shell reports a process the signal ended


@dataclass
class RunConfig:
    """Where a run writes and how it is logged.

    Args:
        experiment: experiment name (W&B group; first level of the run directory).
        name: run name (None: `<subcommand>-<config hash>`).
        root: directory holding all experiments.
        auto_resume: on `fit`, resume from `<run>/checkpoints/last.ckpt` when it exists (SLURM requeue).
        resume_with_changes: allow a run directory made by a different config (its config.yaml) to be reused
            with this one; without it that is refused, naming the settings that differ.
        checkpoint_every_n_steps: also write last.ckpt every N optimizer steps (None: at validation/epoch end).
        wandb_mode: "offline" (default: no login, `wandb sync` later), "online", or "disabled".
        wandb_project: W&B project.
        job_type: W&B job_type (default: the subcommand).
        tags: W&B tags (`method=<m>` and `seed=<s>` are added from `method` and seed_everything).
        method: the training method as comparisons name it (sft, cft, random, entropy, numeric, dft, rho1,
            pretrain, grpo, or a sweep's own name). None: on `fit`, the one the model's weighting or the data's
            selector gives, written into config.yaml; an evaluation takes its checkpoint's training run's.
    """

    experiment: str = "default"
    name: str | None = None
    root: str = "runs"
    auto_resume: bool = True
    resume_with_changes: bool = False
    checkpoint_every_n_steps: int | None = None
    wandb_mode: str = "offline"
    wandb_project: str = "cft"
    job_type: str | None = None
    tags: list[str] = field(default_factory=list)
    method: str | None = None

    def __post_init__(self) -> None:
        if self.wandb_mode not in ("offline", "online", "disabled"):
            raise ConfigError(f"run.wandb_mode must be offline, online or disabled, got {self.wandb_mode!r}")
        if self.checkpoint_every_n_steps is not None and self.checkpoint_every_n_steps < 1:
            raise ConfigError(f"run.checkpoint_every_n_steps={self.checkpoint_every_n_steps}: expected >= 1 or null")


class RunConfigSaver(SaveConfigCallback):
    """Saves the resolved config as `<run>/config.yaml`, overwriting on resume (same run, same config)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["overwrite"] = True
        super().__init__(*args, **kwargs)


class LastCheckpoint(ModelCheckpoint):
    """`checkpoints/last.ckpt` after every validation or epoch end (and every N steps when asked), no top-k copies.

    Lightning (2.6) writes last.ckpt on those events only when a top-k checkpoint was written in the same step, which
    `save_top_k=0` never does: an epoch-limited run (sft.yaml, cft.yaml) had no checkpoint to resume from until it
    had finished.
    """

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if not self._should_skip_saving_checkpoint(trainer) and self._should_save_on_train_epoch_end(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_skip_saving_checkpoint(trainer) and not self._should_save_on_train_epoch_end(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


class CFTCLI(LightningCLI):
    """LightningCLI with model and data in subclass mode, run directories, loggers and default callbacks."""

    def __init__(self, args: list[str] | None = None, run: bool = True, **kwargs: Any) -> None:
        kwargs.setdefault("seed_everything_default", 0)
        kwargs.setdefault("save_config_callback", RunConfigSaver)
        kwargs.setdefault("parser_kwargs", {"parser_mode": "yaml"})
        self.run_dir: Path | None = None
        self._new_run_dir = False
        try:
            super().__init__(
                L.LightningModule,
                L.LightningDataModule,
                subclass_mode_model=True,
                subclass_mode_data=True,
                args=args,
                run=run,
                auto_configure_optimizers=False,
                **kwargs,
            )
        except BaseException as e:
            if _find_cft_error(e) is not None:
                self._discard_new_run_dir()
            raise

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parse errors become one ConfigError line (not argparse's usage screen); a config file that is not valid
        YAML is named."""
        from jsonargparse import ArgumentError

        for path in _config_paths(sys.argv[1:] if args is None else args):
            _check_yaml(path)
        stack = [parser]
        while stack:  # the root parser and every subcommand parser raise instead of printing usage and exiting
            p = stack.pop()
            p.exit_on_error = False
            action = getattr(p, "_subcommands_action", None)
            stack += list(getattr(action, "_name_parser_map", {}).values()) if action is not None else []
        try:
            super().parse_arguments(parser, args)
        except ArgumentError as e:
            inner = _find_cft_error(e.__cause__ or e.__context__)
            if inner is not None:
                raise inner from e  # our own check, raised while jsonargparse built a value: its message says it all
            raise ConfigError(f"{_one_line(str(e))} (--help lists the options)") from e

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_class_arguments(RunConfig, "run")

    # -- run directory ----------------------------------------------------------------------------------------
    def _cfg(self):
        return self.config[self.subcommand] if self.subcommand else self.config

    def _config_hash(self, cfg) -> str:
        flat = {k: v for k, v in cfg.clone().as_dict().items()}
        for key in NON_DEFINING:
            parts = key.split(".")
            d = flat
            for p in parts[:-1]:
                d = d.get(p, {}) if isinstance(d, dict) else {}
            if isinstance(d, dict):
                d.pop(parts[-1], None)
        return hashlib.sha1(repr(sorted(flatten(flat).items())).encode()).hexdigest()[:8]

    def before_instantiate_classes(self) -> None:
        cfg = self._cfg()
        run = cfg.run
        name = run.name or f"{self.subcommand}-{self._config_hash(cfg)}"
        self.run_dir = Path(run.root) / run.experiment / name
        check_run_dir(self.run_dir)
        self._new_run_dir = not self.run_dir.exists()
        self.run_cfg = run
        check_slurm_allocation(cfg.trainer.get("num_nodes") or 1, cfg.trainer.get("devices"))
        cfg.trainer.default_root_dir = str(self.run_dir)
        # Other ranks (re-launched by Lightning or srun) share rank 0's run directory; annotation (predict) shards
        # of a SLURM array share one on purpose, and the annotation writer checks their identity itself.
        if launch_rank() == 0 and self.subcommand != "predict":
            lock_run_dir(self.run_dir)
            if not run.resume_with_changes:
                self._check_same_config(cfg)
        if self.subcommand == "fit" and run.auto_resume and cfg.get("ckpt_path") is None:
            newest = _newest_checkpoint(self.run_dir)
            if newest is not None:
                cfg.ckpt_path = str(newest)
                print(f"[cft] resuming {self.run_dir} from {newest}")
        if run.wandb_mode == "online":
            os.environ["WANDB_MODE"] = "online"  # an explicit opt-in wins over an inherited offline default
        else:
            os.environ.setdefault("WANDB_MODE", "offline")
        print(f"[cft] run directory: {self.run_dir}")

    def _check_same_config(self, cfg) -> None:
        """Refuse a run directory whose config.yaml defines another run: resuming would keep the checkpoint's
        state (optimizer, lr, step) while config.yaml is rewritten with settings that are not in effect."""
        saved = self.run_dir / "config.yaml"
        results = [self.run_dir / "metrics.csv", self.run_dir / "metrics.json"]
        if not saved.is_file() or (_newest_checkpoint(self.run_dir) is None and not any(p.exists() for p in results)):
            return  # nothing to resume or mix with (e.g. a run that failed while loading its model)
        import yaml

        try:
            old = yaml.safe_load(saved.read_text()) or {}
        except yaml.YAMLError as e:
            raise RunDirError(f"{saved}: not valid YAML ({e}); move it away or use another --run.name") from e
        new = yaml.safe_load(self._parser(self.subcommand).dump(cfg, skip_none=False)) or {}
        old_flat, new_flat = defining(old), defining(new)
        diff = [
            f"{k}: {old_flat.get(k, '<unset>')} -> {new_flat.get(k, '<unset>')}"
            for k in sorted(set(old_flat) | set(new_flat))
            if old_flat.get(k) != new_flat.get(k)
        ]
        if diff:
            shown = "; ".join(diff[:8]) + (f"; and {len(diff) - 8} more" if len(diff) > 8 else "")
            raise RunDirError(
                f"run directory {self.run_dir} was made by another config ({shown}); use another --run.name, "
                "or pass --run.resume_with_changes true to continue it with these settings"
            )

    def instantiate_trainer(self, **kwargs: Any) -> L.Trainer:
        cfg = self._cfg()
        trainer_cfg = cfg.trainer
        self._connect()
        self._check_inputs()
        if self.subcommand == "fit" and cfg.run.method is None and hasattr(self.model, "training_method"):
            # Resolved once from the objects themselves and saved with the config (config.yaml), where
            # cft.compare reads it: no inference from class names or tags afterwards.
            cfg.run.method = self.model.training_method(self.datamodule)
        if trainer_cfg.get("logger") in (None, True):
            kwargs["logger"] = self._loggers()
        callbacks = list(self._get(self.config_init, "trainer", default={}).get("callbacks") or [])
        if not any(isinstance(c, RichProgressBar) for c in callbacks) and trainer_cfg.get("enable_progress_bar", True):
            callbacks.append(RichProgressBar(leave=True))
        if self.subcommand == "fit" and not any(isinstance(c, ModelCheckpoint) for c in callbacks):
            callbacks.append(
                LastCheckpoint(
                    dirpath=self.run_dir / "checkpoints",
                    save_last=True,
                    save_top_k=0,
                    every_n_train_steps=self.run_cfg.checkpoint_every_n_steps,
                )
            )
        if self.subcommand == "fit" and not any(isinstance(c, StopCheckpoint) for c in callbacks):
            callbacks.append(StopCheckpoint(self.run_dir / "checkpoints"))
        if self.subcommand == "fit" and isinstance(kwargs.get("logger"), list):
            callbacks.append(TrimMetricsOnResume())
        if self.subcommand == "fit" and hasattr(self.model, "save_hf"):
            from cft.callbacks.hf_export import HFExport

            if not any(isinstance(c, HFExport) for c in callbacks):
                callbacks.append(HFExport())
        if self.subcommand == "predict":
            from cft.callbacks.annotation_writer import AnnotationWriter
            from cft.modules.scorer import PerturbationScorer

            if isinstance(self.model, PerturbationScorer) and not any(
                isinstance(c, AnnotationWriter) for c in callbacks
            ):
                callbacks.append(AnnotationWriter())  # the scorer's rows go nowhere else
        kwargs["callbacks"] = callbacks
        return super().instantiate_trainer(**kwargs)

    def _connect(self) -> None:
        """Give the DataModule the model's tokenizer and the model the DataModule's tasks (the graders of its
        dataloaders), their names and the row-length cap (checked against model.max_length): neither reads the other through the trainer. Not with run=False: loading the tokenizer is left
        to the caller, who may only want to inspect the objects."""
        if self.subcommand is None:
            return
        if hasattr(self.datamodule, "tokenizer") and hasattr(self.model, "tokenizer"):
            self.datamodule.tokenizer = self.model.tokenizer
        if hasattr(self.model, "tasks") and hasattr(self.datamodule, "tasks"):
            self.model.tasks = list(self.datamodule.tasks)
        if hasattr(self.model, "dataloader_names") and hasattr(self.datamodule, "names"):
            self.model.dataloader_names = list(self.datamodule.names)
        if hasattr(self.model, "data_max_length"):
            self.model.data_max_length = getattr(self.datamodule, "max_length", None)

    def _check_inputs(self) -> None:
        """Let the model and the DataModule check their input files and settings before the run directory and the
        W&B run exist, so that bad input leaves nothing behind. Not with run=False (objects built for inspection)."""
        if self.subcommand is None:
            return
        for part in (self.model, self.datamodule):
            check = getattr(part, "check_inputs", None)
            if callable(check):
                check()

    def _discard_new_run_dir(self) -> None:
        """Remove the run directory this invocation created, when a user error ended the run (nothing useful in it)."""
        if self.run_dir is None or not self._new_run_dir or not self.run_dir.exists():
            return
        wandb = sys.modules.get("wandb")
        if wandb is not None and getattr(wandb, "run", None) is not None:
            wandb.finish(exit_code=2)  # stop its writer before the files go
        shutil.rmtree(self.run_dir, ignore_errors=True)
        try:  # and the experiment dir, when this run was all it held
            self.run_dir.parent.rmdir()
        except OSError:
            pass

    def _loggers(self) -> list:
        run = self.run_cfg
        self.run_dir.mkdir(parents=True, exist_ok=True)
        loggers: list = [RunCSVLogger(save_dir=str(self.run_dir), name="", version="")]
        if run.wandb_mode != "disabled":
            from cft.loggers import RunWandbLogger, run_fields

            tags = [t for t in run.tags if not str(t).startswith(("method=", "seed="))]  # the fields below decide
            if run.method:
                tags.append(f"method={run.method}")
            tags.append(f"seed={self._cfg().get('seed_everything')}")
            cfg = self._cfg()
            config = {**cfg.clone().as_dict(), **run_fields(cfg, self.subcommand, run.job_type, tags)}
            loggers.append(
                RunWandbLogger(
                    save_dir=str(self.run_dir),
                    project=run.wandb_project,
                    name=self.run_dir.name,
                    id=f"{run.experiment}-{self.run_dir.name}".replace("/", "_")[:120],
                    group=run.experiment,
                    job_type=run.job_type or self.subcommand,
                    tags=tags,
                    offline=run.wandb_mode == "offline",
                    resume="allow",
                    config=config,
                )
            )
        return loggers


def _newest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint with the highest global step among last.ckpt and hpc_ckpt_* (older hpc_ckpt_* pruned)."""
    from cft.checkpoints import newest_checkpoint

    return newest_checkpoint(run_dir)


def _config_paths(args: list[str]) -> list[str]:
    """The files given to `--config`/`-c` (as `--config F` or `--config=F`)."""
    out = []
    for k, a in enumerate(args):
        if a in ("--config", "-c") and k + 1 < len(args):
            out.append(args[k + 1])
        elif a.startswith("--config="):
            out.append(a.split("=", 1)[1])
    return out


def _check_yaml(path: str) -> None:
    import yaml

    p = Path(path)
    if not p.is_file():
        return  # jsonargparse also accepts inline YAML here; its own error names a missing file
    try:
        yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or _one_line(str(e))
        raise ConfigError(f"config file {path!r} is not valid YAML: {problem}{where}") from e


def _one_line(text: str) -> str:
    return "; ".join(line.strip() for line in str(text).strip().splitlines() if line.strip())


def main(args: list[str] | None = None) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        set_torch_threads()
        CFTCLI(args=args)
    except SIGTERMException as e:  # Lightning stopped at a step (fit) or part (annotation) boundary
        detail = f": {e}" if str(e) else ""
        print(f"[cft] stopped by SIGTERM{detail}; run the same command again to resume", file=sys.stderr)
        raise SystemExit(STOPPED_EXIT_CODE) from e
    except Exception as e:  # jsonargparse and Lightning wrap errors raised inside them; show ours as one line
        inner = _find_cft_error(e)
        if inner is None:
            raise
        print(error_line(inner), file=sys.stderr)
        raise SystemExit(2) from e
    finally:
        release_run_locks()


def _find_cft_error(e: BaseException | None, depth: int = 0) -> CFTError | None:
    while e is not None and depth < 10:
        if isinstance(e, CFTError):
            return e
        e, depth = e.__cause__ or e.__context__, depth + 1
    return None


if __name__ == "__main__":
    main()
