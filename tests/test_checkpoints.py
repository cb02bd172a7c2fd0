"""Resume picks the checkpoint with the highest stored global step, whatever the file times; old hpc_ckpt_* pruned."""

from __future__ import annotations

import os

import torch

from cft.checkpoints import checkpoint_step, newest_checkpoint


def _ckpt(path, step, mtime):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"global_step": step, "state_dict": {"w": torch.zeros(2)}}, path)
    os.utime(path, (mtime, mtime))


def _deepspeed_dir(path, step, mtime):
    """A DeepSpeed checkpoint dir as Lightning writes it; the dir's own mtime is old, as when DeepSpeed rewrites it."""
    _ckpt(path / "checkpoint" / "mp_rank_00_model_states.pt", step, mtime + 50)
    (path / "latest").write_text("checkpoint")
    os.utime(path, (mtime, mtime))


def test_highest_step_wins_over_newest_mtime_and_older_hpc_are_pruned(tmp_path, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("SLURM_PROCID", raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    _ckpt(tmp_path / "checkpoints/last.ckpt", 30, mtime=1000)
    _ckpt(tmp_path / "hpc_ckpt_1.ckpt", 10, mtime=3000)  # newest file, oldest step
    _ckpt(tmp_path / "hpc_ckpt_2.ckpt", 50, mtime=2000)
    _ckpt(tmp_path / "hpc_ckpt_3.ckpt", 20, mtime=4000)
    assert newest_checkpoint(tmp_path) == tmp_path / "hpc_ckpt_2.ckpt"
    assert sorted(p.name for p in tmp_path.glob("hpc_ckpt_*")) == ["hpc_ckpt_2.ckpt"]
    assert (tmp_path / "checkpoints/last.ckpt").is_file()  # last.ckpt is never pruned


def test_deepspeed_dir_with_an_old_mtime_is_chosen_by_its_step(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_PROCID", "1")  # not rank 0: nothing is deleted
    monkeypatch.delenv("RANK", raising=False)
    _deepspeed_dir(tmp_path / "checkpoints/last.ckpt", 40, mtime=1000)
    _deepspeed_dir(tmp_path / "hpc_ckpt_1.ckpt", 25, mtime=5000)
    assert checkpoint_step(tmp_path / "checkpoints/last.ckpt") == 40
    assert newest_checkpoint(tmp_path) == tmp_path / "checkpoints/last.ckpt"
    assert (tmp_path / "hpc_ckpt_1.ckpt").is_dir()


def test_unreadable_or_missing_checkpoints_are_not_candidates(tmp_path):
    assert newest_checkpoint(tmp_path) is None
    (tmp_path / "hpc_ckpt_1.ckpt").write_bytes(b"half written")
    assert checkpoint_step(tmp_path / "hpc_ckpt_1.ckpt") is None
    assert newest_checkpoint(tmp_path) is None


def test_resumed_run_logs_each_step_once(tiny_model_dir, tmp_path):
    """Checkpoint every 2 steps (the last at step 4), killed at step 6: step 5 was logged after the checkpoint and is
    logged again by the resumed run; metrics.csv keeps each step once."""
    import csv

    import pytest

    from cft.cli import main
    from tests.helpers import SimulatedCrash, fast_fit_args

    args = fast_fit_args(tiny_model_dir, tmp_path, name="m", steps=8)
    args += ["--run.checkpoint_every_n_steps", "2", "--model.init_args.val_max_new_tokens", "0"]
    with pytest.raises(SimulatedCrash):
        main([*args, "--trainer.callbacks+=tests.helpers.CrashAtStep", "--trainer.callbacks.step", "6"])
    main(args)
    with open(tmp_path / "exp/m/metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    steps = [int(r["step"]) for r in rows if r.get("train/loss")]
    assert steps == list(range(8)), steps
