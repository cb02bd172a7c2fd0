"""A run directory belongs to one config and one process: another config under the same --run.name is refused
(naming the settings that differ) unless resume_with_changes; a second process on a run directory in use is refused."""

from __future__ import annotations

import os

import pytest
import torch

from cft.cli import main
from cft.run_dir import lock_run_dir
from tests.helpers import fast_fit_args


def test_other_config_under_same_name_is_refused(tiny_model_dir, tmp_path, capsys):
    args = fast_fit_args(tiny_model_dir, tmp_path, name="r", steps=2)
    main(args)
    # The same config with the same run dir spelled another way resumes (nothing to refuse).
    other_spelling = [a if a != str(tmp_path) else f"{tmp_path}/../{tmp_path.name}" for a in args]
    main(other_spelling)
    config = (tmp_path / "exp/r/config.yaml").read_text()
    lr = ["--model.init_args.optimizer.init_args.lr", "0.01"]
    with pytest.raises(SystemExit) as e:
        main([*args, "--trainer.max_steps", "3", *lr])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: run directory") and "another config" in err
    assert "model.init_args.optimizer.init_args.lr: 0.0003 -> 0.01" in err and "trainer.max_steps: 2 -> 3" in err
    assert (tmp_path / "exp/r/config.yaml").read_text() == config, "the refused run must not rewrite config.yaml"
    # The opt-in resumes the checkpoint with the new settings and records them.
    main([*args, "--trainer.max_steps", "3", *lr, "--run.resume_with_changes", "true"])
    assert "lr: 0.01" in (tmp_path / "exp/r/config.yaml").read_text()
    assert torch.load(tmp_path / "exp/r/checkpoints/last.ckpt", weights_only=False)["global_step"] == 3


def test_second_process_on_a_run_dir_is_refused(tiny_model_dir, tmp_path, capsys):
    # A holder process (forked: no second interpreter start-up) takes the lock through the same code path as a run
    # and keeps it until told to stop.
    locked_r, locked_w = os.pipe()
    stop_r, stop_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the holder
        try:
            lock_run_dir(tmp_path / "exp" / "r")
            os.write(locked_w, b"1")
            os.read(stop_r, 1)
        finally:
            os._exit(0)
    try:
        assert os.read(locked_r, 1) == b"1"
        with pytest.raises(SystemExit) as e:
            main(fast_fit_args(tiny_model_dir, tmp_path, name="r", steps=1))
        assert e.value.code == 2
        last = capsys.readouterr().err.strip().splitlines()[-1]
        assert last.startswith("error: run directory") and f"in use by pid {pid} on" in last, last
        assert not (tmp_path / "exp/r/checkpoints").exists() and not (tmp_path / "exp/r/metrics.csv").exists()
    finally:
        os.write(stop_w, b"1")
        os.waitpid(pid, 0)
    # Released when the holder ends: the same command now runs.
    main(fast_fit_args(tiny_model_dir, tmp_path, name="r", steps=1))
    assert (tmp_path / "exp/r/checkpoints/last.ckpt").is_file()


def test_refused_run_leaves_no_run_dir(tmp_path, capsys):
    args = fast_fit_args(tmp_path / "no-model", tmp_path, name="r", steps=1)
    with pytest.raises(SystemExit):
        main(args)
    assert not (tmp_path / "exp" / "r").exists()


def test_file_system_without_locks_runs_unguarded(tmp_path, monkeypatch, capsys):
    import errno

    import cft.run_dir as run_dir

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(run_dir.fcntl, "flock", no_locks)
    run_dir.lock_run_dir(tmp_path / "run")
    assert "not guarded against a second process" in capsys.readouterr().out
    assert not run_dir._held_locks
