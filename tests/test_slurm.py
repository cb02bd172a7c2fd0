"""slurm/fit.sbatch under a fake SLURM (tests/fixtures/fake_slurm: srun starts the tasks as local CPU processes with
the SLURM variables, scontrol records the requeue and stops the tasks): a 2-rank fit signalled with SIGUSR1 mid-run,
requeued and started again ends with the weights of an uninterrupted run, and metrics.csv has each step once."""

from __future__ import annotations

import csv
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from transformers import AutoModelForCausalLM

from tests.helpers import REPO, fast_fit_args

SHIMS = REPO / "tests/fixtures/fake_slurm"
STEPS = 10


class SlowSteps(L.Callback):
    """Test-only: a pause after every step (so a signal lands between steps) and the step written where the test
    can see it."""

    def __init__(self, seconds: float = 0.4, path: str = "") -> None:
        self.seconds, self.path = seconds, path

    def on_train_batch_end(self, trainer, *args, **kwargs) -> None:
        if trainer.is_global_zero and self.path:
            Path(self.path).write_text(str(trainer.global_step))
        time.sleep(self.seconds)

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if self.path:
            Path(self.path).write_text(str(batch_idx + 1))
        time.sleep(self.seconds)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(fake_dir: Path, job_id: str, restart: int = 0) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "RANK", "LOCAL_RANK", "WORLD_SIZE"))}
    env.update(
        PATH=f"{SHIMS}:{env['PATH']}",
        FAKE_SLURM_DIR=str(fake_dir),
        PY=str(Path(os.sys.executable)),
        SLURM_JOB_ID=job_id,
        SLURM_JOB_NAME="cft-fit",
        SLURM_NTASKS="2",
        SLURM_NNODES="1",
        SLURM_JOB_NUM_NODES="1",
        SLURM_NTASKS_PER_NODE="2",
        SLURM_NODELIST="127.0.0.1",
        SLURM_RESTART_COUNT=str(restart),
        SLURM_SUBMIT_DIR=str(REPO),
        MASTER_PORT=str(_free_port()),
        WANDB_MODE="disabled",
        OMP_NUM_THREADS="1",
        HF_HUB_OFFLINE="1",
    )
    return env


def _args(model_dir: Path, root: Path, step_file: Path) -> list[str]:
    args = fast_fit_args(model_dir, root, name="job", steps=STEPS)[1:]  # fit.sbatch adds the subcommand
    args += ["--data.init_args.micro_batch_size", "2", "--data.init_args.max_train_rows", "48"]
    args += ["--trainer.accelerator", "cpu", "--trainer.strategy", "ddp", "--model.init_args.val_max_new_tokens", "0"]
    args += ["--trainer.callbacks+=tests.test_slurm.SlowSteps", f"--trainer.callbacks.path={step_file}"]
    return args


def _sbatch(args: list[str], env: dict[str, str], background: bool = False):
    cmd = ["bash", str(REPO / "slurm/fit.sbatch"), *args]
    if background:
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def _train_steps(run: Path) -> list[int]:
    with open(run / "metrics.csv", newline="") as f:
        return [int(r["step"]) for r in csv.DictReader(f) if r.get("train/loss")]


@pytest.mark.slow
def test_fit_sbatch_requeue_under_fake_slurm_resumes_exactly(tiny_model_dir, tmp_path):
    ref_root, root = tmp_path / "ref", tmp_path / "requeued"
    fake = tmp_path / "slurm"
    fake.mkdir()

    res = _sbatch(_args(tiny_model_dir, ref_root, tmp_path / "ref_step"), _env(fake, "4242"))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    ref = AutoModelForCausalLM.from_pretrained(ref_root / "exp/job/hf/last").state_dict()

    step_file = tmp_path / "step"
    proc = _sbatch(_args(tiny_model_dir, root, step_file), _env(fake, "4243"), background=True)
    deadline = time.time() + 300
    while not (step_file.is_file() and step_file.read_text() and int(step_file.read_text()) >= 4):
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read()[-3000:] if proc.stdout else ""
        time.sleep(0.05)
    for pid in (fake / "pids").read_text().split():
        os.kill(int(pid), signal.SIGUSR1)  # what --signal=USR1@T delivers to every task
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode != 0, "the requeued job must stop before the end"
    assert (fake / "scontrol.log").read_text().split() == ["requeue", "4243"], out[-3000:]
    run = root / "exp/job"
    assert list(run.glob("hpc_ckpt_*.ckpt")) and (run / "checkpoints/last.ckpt").exists()
    stopped_at = torch.load(run / "checkpoints/last.ckpt", weights_only=False)["global_step"]
    assert 4 <= stopped_at < STEPS, stopped_at

    res = _sbatch(_args(tiny_model_dir, root, step_file), _env(fake, "4243", restart=1))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "resuming" in res.stdout
    got = AutoModelForCausalLM.from_pretrained(run / "hf/last").state_dict()
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], rtol=0, atol=1e-6, msg=f"{k} differs after the requeue")
    assert _train_steps(run) == list(range(STEPS)) == _train_steps(ref_root / "exp/job")
    assert not list(run.glob("hpc_ckpt_*.ckpt"))  # the restart resumed from last.ckpt and pruned the older one


def test_sweep_submit_makes_one_multi_gpu_job_per_point_and_a_dependent_eval(tmp_path, monkeypatch):
    import shlex

    from cft.sweep import Grid
    from cft.sweep import main as sweep_main

    monkeypatch.setenv("PATH", f"{SHIMS}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM_DIR", str(tmp_path))
    grid_path = REPO / "configs/experiments/tiny_study.yaml"
    sbatch = "--nodes=2 --gpus-per-node=8 --ntasks-per-node=8"
    assert sweep_main(["--grid", str(grid_path), "--submit", "--sbatch", sbatch]) == 0
    calls = [shlex.split(line) for line in (tmp_path / "sbatch.log").read_text().splitlines()]
    grid = Grid.load(grid_path)
    assert len(calls) == 2 * len(grid)
    for i in range(len(grid)):
        fit, test = calls[2 * i], calls[2 * i + 1]
        want_fit, want_test = grid.commands(i)
        assert fit[fit.index("slurm/fit.sbatch") + 1 :] == want_fit
        assert test[test.index("slurm/fit.sbatch") + 1 :] == want_test
        assert shlex.split(sbatch) == [a for a in fit if a.startswith(("--nodes", "--gpus", "--ntasks"))]
        assert f"--dependency=afterok:{1001 + 2 * i}" in test  # the fake sbatch numbers jobs 1001, 1002, ...
        assert "--ntasks-per-node=1" in test


@pytest.mark.slow
def test_annotation_array_task_requeues_on_usr1_and_finishes_after_restart(tiny_model_dir, tmp_path):
    """--signal=B:USR1@T reaches the batch script: it requeues the array task and stops the annotation, which keeps
    its finished parts; the restarted task annotates the rest, each question once."""
    import json

    from tests.test_annotation_io import annotate_args, rows_of

    fake = tmp_path / "slurm"
    fake.mkdir()
    out, step_file = tmp_path / "ann", tmp_path / "step"
    extra = annotate_args(tiny_model_dir, out, "--data.init_args.batch_size", "2")[3:]  # after predict --config X
    extra += ["--trainer.callbacks.init_args.examples_per_part", "2"]
    extra += ["--trainer.callbacks+=tests.test_slurm.SlowSteps", f"--trainer.callbacks.path={step_file}"]
    env = _env(fake, "77")
    env.update(SLURM_ARRAY_JOB_ID="77", SLURM_ARRAY_TASK_ID="0", SLURM_ARRAY_TASK_COUNT="1", SLURM_NTASKS="1",
               SLURM_NNODES="1", SLURM_NTASKS_PER_NODE="1", SLURM_JOB_NAME="cft-annotate")  # fmt: skip
    cmd = ["bash", str(REPO / "slurm/annotate_array.sbatch"), str(REPO / "configs/tiny/annotate.yaml"), *extra]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while not (step_file.is_file() and step_file.read_text() and int(step_file.read_text()) >= 2):
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read()[-3000:] if proc.stdout else ""
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGUSR1)  # B:USR1 signals the batch shell only
    log, _ = proc.communicate(timeout=300)
    assert proc.returncode != 0, log[-3000:]
    assert (fake / "scontrol.log").read_text().split() == ["requeue", "77_0"], log[-3000:]
    assert json.loads((out / "metadata.json").read_text())["status"] == "running"
    n_parts = len(list(out.glob("part-*.parquet")))
    assert n_parts >= 1

    res = subprocess.run(cmd[:3] + [a for a in extra if "SlowSteps" not in a and "callbacks.path" not in a],
                         cwd=REPO, env=_env(fake, "77") | {"SLURM_ARRAY_JOB_ID": "77", "SLURM_ARRAY_TASK_ID": "0",
                         "SLURM_ARRAY_TASK_COUNT": "1", "SLURM_NTASKS": "1", "SLURM_JOB_NAME": "cft-annotate"},
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    ids = [r["id"] for r in rows_of(out)]
    assert len(ids) == len(set(ids)) == 12 and len(list(out.glob("part-*.parquet"))) > n_parts  # limit 12, all kept
    assert json.loads((out / "metadata.json").read_text())["status"] == "complete"
