"""The launch is checked against the SLURM allocation before anything is loaded."""

from __future__ import annotations

import pytest

from cft.cli import main
from cft.errors import ConfigError
from cft.launch import check_slurm_allocation
from tests.helpers import REPO

JOB = {"SLURM_NTASKS": "16", "SLURM_NNODES": "2", "SLURM_JOB_NAME": "cft-fit"}


def test_matching_allocation_passes_and_no_slurm_is_not_checked():
    check_slurm_allocation(2, 8, JOB)
    check_slurm_allocation(2, "0,1,2,3,4,5,6,7", JOB)
    check_slurm_allocation(2, "auto", JOB)  # Lightning resolves it (and checks) itself
    check_slurm_allocation(1, 4, {})
    check_slurm_allocation(1, 4, {**JOB, "SLURM_JOB_NAME": "bash"})  # an interactive shell inside salloc


def test_devices_times_nodes_not_matching_tasks_is_an_error():
    with pytest.raises(ConfigError, match=r"num_nodes=2 x trainer.devices=4 = 8 processes.*runs 16 task"):
        check_slurm_allocation(2, 4, JOB)
    with pytest.raises(ConfigError, match=r"num_nodes=1 but the SLURM job has 2 node"):
        check_slurm_allocation(1, 16, JOB)


def test_cli_refuses_a_mismatched_launch_before_the_run_dir(monkeypatch, tmp_path, capsys):
    for k, v in {**JOB, "SLURM_JOB_ID": "123"}.items():
        monkeypatch.setenv(k, v)
    args = ["fit", "--config", str(REPO / "configs/tiny/sft.yaml"), "--run.root", str(tmp_path)]
    with pytest.raises(SystemExit) as e:
        main([*args, "--trainer.num_nodes", "2", "--trainer.devices", "2"])
    assert e.value.code == 2
    assert "SLURM job runs 16 task(s)" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
