"""How many CPUs this process may really use: its affinity mask, capped by a cgroup CPU quota."""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def available_cpus(cgroup_root: Path = CGROUP_ROOT) -> int:
    """At least 1; a container limited with `--cpus 1.5` on a 16-core host gets 2, not 16."""
    cpus = len(os.sched_getaffinity(0))
    quota = cgroup_cpu_quota(cgroup_root)
    if quota is not None:
        cpus = min(cpus, math.ceil(quota))
    return max(cpus, 1)


# The variables OpenMP, OpenBLAS and MKL size their thread pools by, read when each library loads.
THREAD_POOL_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def worker_threads(workers: int) -> int:
    """Threads for each worker's OpenMP and BLAS pools: its share of the CPUs, or SKSERVE_THREADS."""
    return int(os.environ.get("SKSERVE_THREADS") or max(available_cpus() // workers, 1))


def cgroup_cpu_quota(cgroup_root: Path = CGROUP_ROOT) -> float | None:
    """The CPU quota in CPUs from cgroup v2 `cpu.max` or v1 `cpu.cfs_quota_us`; None when unlimited."""
    v2 = _read(cgroup_root / "cpu.max")
    if v2 is not None:
        quota, _, period = v2.partition(" ")
        return None if quota == "max" else int(quota) / int(period)
    for v1 in ("cpu", "cpu,cpuacct"):
        quota_us = _read(cgroup_root / v1 / "cpu.cfs_quota_us")
        period_us = _read(cgroup_root / v1 / "cpu.cfs_period_us")
        if quota_us is not None and period_us is not None:
            return None if int(quota_us) <= 0 else int(quota_us) / int(period_us)
    return None


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None
