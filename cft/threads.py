"""How many intra-op threads torch uses: the cores this process may actually run on, not the machine's.

torch sizes its thread pool from the machine's cores. In a container or a SLURM job limited by a CPU affinity mask or
a cgroup quota, that oversubscribes the cores the job owns: on a shared 2-core box the demo's pretraining took
31 minutes instead of 4. `set_torch_threads()` (called by `python -m cft` and `cft.demo`) uses instead

1. `CFT_NUM_THREADS`, when set (an explicit choice for this framework);
2. else `OMP_NUM_THREADS`, when set (the usual knob, which torch would also read);
3. else the cores available to the process: its affinity mask, capped by the cgroup CPU quota.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

from cft.errors import ConfigError

__all__ = ["ENV_VAR", "available_cpus", "cgroup_cpu_limit", "num_threads", "set_torch_threads"]

ENV_VAR = "CFT_NUM_THREADS"
CGROUP_V2_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
CGROUP_V1_DIR = Path("/sys/fs/cgroup/cpu")


def cgroup_cpu_limit(
    cpu_max: str | os.PathLike = CGROUP_V2_CPU_MAX, v1_dir: str | os.PathLike = CGROUP_V1_DIR
) -> float | None:
    """CPUs the cgroup quota allows (quota / period, e.g. 1.5), or None when there is no quota or no cgroup file.

    cgroup v2: `cpu.max` holds `"<quota> <period>"` or `"max <period>"`; cgroup v1: `cpu.cfs_quota_us` (-1 = none)
    and `cpu.cfs_period_us`.
    """
    try:
        quota, _, period = Path(cpu_max).read_text().strip().partition(" ")
        if quota == "max":
            return None
        return int(quota) / int(period or 100000)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((Path(v1_dir) / "cpu.cfs_quota_us").read_text())
        period_us = int((Path(v1_dir) / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


def available_cpus(
    cpu_max: str | os.PathLike = CGROUP_V2_CPU_MAX,
    v1_dir: str | os.PathLike = CGROUP_V1_DIR,
    affinity: int | None = None,
) -> int:
    """Cores this process may use: its affinity mask (`affinity` overrides it, for tests), capped by the cgroup
    quota rounded down (a quota of 1.5 CPUs gives 1 thread: a second one would only be throttled), at least 1."""
    if affinity is None:
        affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    n = affinity
    limit = cgroup_cpu_limit(cpu_max, v1_dir)
    if limit is not None:
        n = min(n, math.floor(limit))
    return max(1, n)


def num_threads(environ: Mapping[str, str] | None = None, **probe: object) -> int:
    """The thread count to use: `CFT_NUM_THREADS`, else `OMP_NUM_THREADS`, else `available_cpus(**probe)`."""
    environ = os.environ if environ is None else environ
    for var in (ENV_VAR, "OMP_NUM_THREADS"):
        value = environ.get(var, "").strip()
        if value:
            try:
                n = int(value)
            except ValueError:
                n = 0
            if n < 1:
                raise ConfigError(f"{var}={value!r}: expected a whole number of threads >= 1")
            return n
    return available_cpus(**probe)  # type: ignore[arg-type]


def set_torch_threads() -> int:
    """Set torch's intra-op thread count to `num_threads()`; returns it."""
    import torch

    n = num_threads()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n
