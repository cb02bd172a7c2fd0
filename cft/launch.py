"""Checks of the launch against the SLURM allocation, before any model is loaded or GPU time is spent."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from cft.errors import ConfigError


def _device_count(devices: Any) -> int | None:
    """Processes per node asked for by `trainer.devices` (None: decided by Lightning, e.g. "auto" or -1)."""
    if isinstance(devices, (list, tuple)):
        return len(devices)
    if isinstance(devices, str):
        devices = devices.strip()
        if "," in devices:
            return len([d for d in devices.split(",") if d.strip()])
        if not devices.lstrip("-").isdigit():
            return None
        devices = int(devices)
    if isinstance(devices, int) and devices > 0:
        return devices
    return None


def check_slurm_allocation(num_nodes: int, devices: Any, env: Mapping[str, str] | None = None) -> None:
    """Under `srun` (SLURM_NTASKS set), `trainer.num_nodes` x `trainer.devices` must equal the job's tasks, and
    `num_nodes` its nodes: otherwise Lightning would wait for ranks that never start, or start ranks twice."""
    env = os.environ if env is None else env
    if "SLURM_NTASKS" not in env or env.get("SLURM_JOB_NAME") in ("bash", "interactive"):
        return  # not a batch step (Lightning ignores SLURM in interactive shells too)
    ntasks = int(env["SLURM_NTASKS"])
    nnodes = int(env.get("SLURM_NNODES", env.get("SLURM_JOB_NUM_NODES", "1")))
    per_node = _device_count(devices)
    if num_nodes != nnodes:
        raise ConfigError(
            f"trainer.num_nodes={num_nodes} but the SLURM job has {nnodes} node(s) (SLURM_NNODES); "
            f"pass --trainer.num_nodes {nnodes} (slurm/fit.sbatch does)"
        )
    if per_node is not None and num_nodes * per_node != ntasks:
        raise ConfigError(
            f"trainer.num_nodes={num_nodes} x trainer.devices={devices} = {num_nodes * per_node} processes, but the "
            f"SLURM job runs {ntasks} task(s) (SLURM_NTASKS; --ntasks-per-node must equal the GPUs per node)"
        )
