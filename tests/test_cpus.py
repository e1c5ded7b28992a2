"""Worker count follows the CPUs really available: affinity, capped by a cgroup quota."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import skserve.cpus
from skserve.cpus import available_cpus, cgroup_cpu_quota, worker_threads


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


@pytest.mark.parametrize(
    ("cpu_max", "quota"), [("max 100000", None), ("150000 100000", 1.5), ("50000 100000", 0.5)]
)
def test_reads_the_cgroup_v2_quota(tmp_path: Path, cpu_max: str, quota: float | None) -> None:
    write(tmp_path / "cpu.max", cpu_max)
    assert cgroup_cpu_quota(tmp_path) == quota


@pytest.mark.parametrize("directory", ["cpu", "cpu,cpuacct"])
@pytest.mark.parametrize(("quota_us", "quota"), [("-1", None), ("200000", 2.0)])
def test_reads_the_cgroup_v1_quota(
    tmp_path: Path, directory: str, quota_us: str, quota: float | None
) -> None:
    write(tmp_path / directory / "cpu.cfs_quota_us", quota_us)
    write(tmp_path / directory / "cpu.cfs_period_us", "100000")
    assert cgroup_cpu_quota(tmp_path) == quota


def test_no_cgroup_files_means_no_quota(tmp_path: Path) -> None:
    assert cgroup_cpu_quota(tmp_path) is None
    assert available_cpus(tmp_path) == len(os.sched_getaffinity(0))


def test_a_fractional_quota_rounds_up_and_never_exceeds_the_affinity(tmp_path: Path) -> None:
    write(tmp_path / "cpu.max", "50000 100000")
    assert available_cpus(tmp_path) == 1
    write(tmp_path / "cpu.max", "6400000 100000")
    assert available_cpus(tmp_path) == len(os.sched_getaffinity(0))


@pytest.mark.parametrize(("cpus", "workers", "threads"), [(8, 2, 4), (8, 3, 2), (2, 2, 1), (1, 4, 1)])
def test_each_worker_gets_its_share_of_the_cpus_for_its_thread_pools(
    monkeypatch: pytest.MonkeyPatch, cpus: int, workers: int, threads: int
) -> None:
    monkeypatch.delenv("SKSERVE_THREADS", raising=False)
    monkeypatch.setattr(skserve.cpus, "available_cpus", lambda: cpus)
    assert worker_threads(workers) == threads


def test_skserve_threads_overrides_the_share(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKSERVE_THREADS", "3")
    assert worker_threads(8) == 3
