"""Thread count from the cores available to the process (affinity, cgroup quota) and the documented overrides."""

from __future__ import annotations

import pytest

from cft.errors import ConfigError
from cft.threads import available_cpus, cgroup_cpu_limit, num_threads


def _cpu_max(tmp_path, text: str):
    path = tmp_path / "cpu.max"
    path.write_text(text)
    return path


def test_cgroup_v2_quota(tmp_path):
    assert cgroup_cpu_limit(_cpu_max(tmp_path, "150000 100000\n"), tmp_path / "none") == 1.5
    assert cgroup_cpu_limit(_cpu_max(tmp_path, "max 100000\n"), tmp_path / "none") is None


def test_cgroup_v1_quota(tmp_path):
    (tmp_path / "cpu.cfs_quota_us").write_text("300000\n")
    (tmp_path / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_limit(tmp_path / "no_cpu.max", tmp_path) == 3.0
    (tmp_path / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_limit(tmp_path / "no_cpu.max", tmp_path) is None


@pytest.mark.parametrize(
    "cpu_max,affinity,expected",
    [
        ("200000 100000", 64, 2),  # a 2-CPU quota on a 64-core host: 2 threads, not 64
        ("150000 100000", 64, 1),  # 1.5 CPUs: rounded down (a second thread would only be throttled)
        ("50000 100000", 8, 1),  # under one CPU: still one thread
        ("max 100000", 4, 4),  # no quota: the affinity mask decides
        ("800000 100000", 3, 3),  # quota above the mask: the mask decides
    ],
)
def test_available_cpus(tmp_path, cpu_max, affinity, expected):
    assert available_cpus(_cpu_max(tmp_path, cpu_max), tmp_path / "none", affinity=affinity) == expected


def test_no_cgroup_files_uses_affinity(tmp_path):
    assert available_cpus(tmp_path / "missing", tmp_path / "missing_v1", affinity=5) == 5


def test_overrides(tmp_path):
    probe = {"cpu_max": _cpu_max(tmp_path, "200000 100000"), "v1_dir": tmp_path / "none", "affinity": 64}
    assert num_threads({}, **probe) == 2
    assert num_threads({"OMP_NUM_THREADS": "3"}, **probe) == 3
    assert num_threads({"OMP_NUM_THREADS": "3", "CFT_NUM_THREADS": "6"}, **probe) == 6
    with pytest.raises(ConfigError, match="CFT_NUM_THREADS='zero'"):
        num_threads({"CFT_NUM_THREADS": "zero"}, **probe)
    with pytest.raises(ConfigError, match="OMP_NUM_THREADS='0'"):
        num_threads({"OMP_NUM_THREADS": "0"}, **probe)
