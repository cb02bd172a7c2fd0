"""Helpers to run the real CLI entry point in tests (in-process or as a subprocess)."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L

from cft.tasks import ArithmeticTask

REPO = Path(__file__).resolve().parents[1]


def fast_fit_args(model_dir: Path, root: Path, name: str = "t", steps: int = 4, config: str = "configs/tiny/sft.yaml"):
    """CLI args for a few SFT steps of the tiny test model on a handful of rows."""
    return [
        "fit",
        "--config",
        str(REPO / config),
        "--model.init_args.model.name_or_path",
        str(model_dir),
        "--run.root",
        str(root),
        "--run.name",
        name,
        "--run.experiment",
        "exp",
        "--run.wandb_mode",
        "disabled",
        "--trainer.max_steps",
        str(steps),
        "--trainer.max_epochs",
        "-1",
        "--trainer.val_check_interval",
        str(steps),
        "--trainer.check_val_every_n_epoch",
        "null",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.log_every_n_steps",
        "1",
        "--data.init_args.micro_batch_size",
        "4",
        "--data.init_args.max_train_rows",
        "32",
        "--data.init_args.n_val",
        "4",
        "--model.init_args.val_max_new_tokens",
        "8",
    ]


def run_cli(args: list[str], timeout: int = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m cft ARGS` in a subprocess (needed when Lightning launches extra ranks)."""
    full_env = {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "cft", *args], cwd=REPO, env=full_env, capture_output=True, text=True, timeout=timeout
    )


class SimulatedCrash(RuntimeError):
    pass


class CrashAtStep(L.Callback):
    """Raises once `global_step` reaches `step`: a stand-in for a killed job."""

    def __init__(self, step: int = 1) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *args, **kwargs) -> None:
        if trainer.global_step >= self.step:
            raise SimulatedCrash(f"crash at step {trainer.global_step}")


class SigtermAtStep(L.Callback):
    """Sends SIGTERM to this process once, after optimizer step `step` (fit) or predict batch `step` (annotation):
    a preempted or cancelled job, at a known point."""

    def __init__(self, step: int = 1) -> None:
        self.step, self.sent = step, False

    def _send(self, reached: bool) -> None:
        if reached and not self.sent:
            self.sent = True
            os.kill(os.getpid(), signal.SIGTERM)

    def on_train_batch_end(self, trainer, *args, **kwargs) -> None:
        self._send(trainer.global_step >= self.step)

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._send(batch_idx >= self.step)


class SigkillAtBatch(L.Callback):
    """SIGKILLs this process after predict batch `batch` (the callbacks before it, e.g. the annotation writer, have
    run for that batch): a job killed without warning, at a known point. Use in a subprocess."""

    def __init__(self, batch: int = 1) -> None:
        self.batch = batch

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if batch_idx >= self.batch:
            os.kill(os.getpid(), signal.SIGKILL)


class TrainingState(L.Callback):
    """Records, before each training batch and at the end, what an optimizer step changes: the weights, the
    optimizer's state, the learning rate and the scheduler's step count (in `TrainingState.seen`, a class attribute,
    since the CLI builds the instance)."""

    seen: list[dict] = []

    def _record(self, trainer, pl_module, batch=None) -> None:
        opt = trainer.optimizers[0]
        TrainingState.seen.append(
            {
                "global_step": trainer.global_step,
                "step_weight_sum": None if batch is None else float(batch["step_weight_sum"]),
                "weights": {n: p.detach().clone() for n, p in pl_module.named_parameters()},
                "opt": {
                    i: {k: v.clone() if hasattr(v, "clone") else v for k, v in s.items()}
                    for i, s in enumerate(opt.state.values())
                },  # fmt: skip
                "lr": opt.param_groups[0]["lr"],
                "sched_steps": trainer.lr_scheduler_configs[0].scheduler.last_epoch,
            }
        )

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._record(trainer, pl_module, batch)

    def on_train_end(self, trainer, pl_module) -> None:
        self._record(trainer, pl_module)


class RankWeights(L.Callback):
    """Saves each rank's trained parameters to `out_dir/rank<r>.pt` at the end of fit (to check ranks agree)."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir

    def on_train_end(self, trainer, pl_module) -> None:
        import torch

        os.makedirs(self.out_dir, exist_ok=True)
        weights = {n: p.detach().clone() for n, p in pl_module.named_parameters()}
        torch.save(weights, os.path.join(self.out_dir, f"rank{trainer.global_rank}.pt"))


class HashGradedTask(ArithmeticTask):
    """Passes about half of all texts, by hash: mixed masks even with a random model."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**{"answer_format": None, **kwargs})  # rollouts are then graded by `grade`: by hash

    def grade(self, generation: str, answer: str) -> bool:
        return hashlib.sha256(generation.encode()).digest()[0] % 2 == 0


class StepLog(L.Callback):
    """Writes `out_dir/steps-rank<r>.json`: at the start of each optimisation step and at the end of fit, what an
    update moves (a hash of this rank's weights, global_step, the optimizer's per-parameter step counts, the
    scheduler's steps and, under DeepSpeed, the engine's global and skipped steps). A file, since multi-rank runs are
    subprocesses."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir, self.seen = out_dir, []

    def _record(self, trainer, batch=None) -> None:
        engine = trainer.model if hasattr(trainer.model, "basic_optimizer") else None
        opt = engine.basic_optimizer if engine is not None else trainer.optimizers[0]
        weights = hashlib.sha256()
        for p in trainer.lightning_module.parameters():
            p = getattr(p, "ds_tensor", p)  # ZeRO-3: this rank's partition
            weights.update(p.detach().float().cpu().numpy().tobytes())
        self.seen.append(
            {
                "weights": weights.hexdigest(),
                "global_step": trainer.global_step,
                "step_weight_sum": None if batch is None else float(batch["step_weight_sum"]),
                "opt_steps": sorted({int(s["step"]) for s in opt.state.values() if "step" in s}),
                "sched_steps": trainer.lr_scheduler_configs[0].scheduler.last_epoch,
                "engine_steps": None if engine is None else engine.global_steps,
                "engine_skipped": None if engine is None else engine.skipped_steps,
            }
        )

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx % trainer.accumulate_grad_batches == 0:
            self._record(trainer, batch)

    def on_train_end(self, trainer, pl_module) -> None:
        import json

        self._record(trainer)
        if hasattr(trainer.model, "basic_optimizer"):
            # DeepSpeed's view of AdamW's moments per parameter (None where it has none, or lost the link to them).
            from deepspeed.utils import safe_get_full_optimizer_state

            exp_avg = safe_get_full_optimizer_state(next(pl_module.parameters()), "exp_avg")
            self.seen[-1]["exp_avg_norm"] = None if exp_avg is None else float(exp_avg.float().norm())
        os.makedirs(self.out_dir, exist_ok=True)
        with open(os.path.join(self.out_dir, f"steps-rank{trainer.global_rank}.json"), "w") as f:
            json.dump(self.seen, f)


def lively_model(model_dir, tokenizer):
    """The random tiny model at `model_dir`, re-initialised so its continuations depend on context (a small random
    init just echoes its input), with EOS and newline made likely so every stopping path occurs."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.15, generator=gen)
        emb = model.get_input_embeddings().weight
        emb[tokenizer.eos_token_id] *= 1.5
        emb[tokenizer("\n")["input_ids"][0]] *= 1.3
    return model
