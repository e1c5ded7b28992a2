"""HistGradientBoosting behind 2 workers on one core: host-sized thread pools, then each worker's share.

Without skserve's sizing, OpenMP and BLAS give every worker a pool of the host's CPUs, as they do in a
container whose CPU quota is below the host's (scikit-learn#35017); "host-sized" emulates that with
SKSERVE_THREADS set to the host's CPU count. "worker share" is skserve's default: the server's one
core split between its 2 workers, one thread each. Every answer is checked, as in run.py. Writes
bench/results/thread-pools.{md,json}; BENCH_THREAD_POOLS=0 leaves it out of `make bench`, and
`.venv/bin/python bench/thread_pools.py` runs it alone (BENCH_ROUNDS, BENCH_DURATION as for run.py).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import run  # the benchmark's own server, load and checking functions
import threadpoolctl

MODEL = "hist_gradient_boosting"
WORKERS = 2
CONNECTIONS = 16
SETTINGS = {"host-sized": str(os.cpu_count()), "worker share": ""}  # SKSERVE_THREADS
# Others' work on the server's core is shown with the figures: on a shared machine it decides req/s.
METRICS = ("req_s", "p50_ms", "p99_ms", "cpu_ms_per_req", "server_core_other_pct")


def server(setting: str) -> run.Server:
    """skserve started as run.py starts it, with SKSERVE_THREADS set to `setting` (empty: unset)."""

    def command(model_dir: Path, port: int, workers: int) -> tuple[list[str], dict[str, str], Path]:
        argv, env, cwd = run.ours_command(model_dir, port, workers)
        return argv, {**env, "SKSERVE_THREADS": setting}, cwd

    return run.Server(run.OURS, command, "/ready")


def measure(config: run.Config, work: Path, failures: run.Failures) -> list[dict[str, Any]]:
    """One record per round, setting and request size, in alternating order of the settings."""
    model_dir = work / MODEL
    subprocess.run(
        [sys.executable, str(run.ROOT / "train.py"), "--model", MODEL, "--output", str(model_dir)],
        check=True,
        timeout=300,
    )
    # The expected answers, one predict per request body: OpenMP's spinning threads make each of
    # them slow on a busy machine, and they are not what is measured.
    with threadpoolctl.threadpool_limits(1):
        cases = {
            rows: run.write_cases(model_dir, run.iris_rows(), rows, work) for rows in (1, run.BATCH_ROWS)
        }
    records = []
    for round_no in range(config.rounds):
        order = list(SETTINGS.items()) if round_no % 2 == 0 else list(SETTINGS.items())[::-1]
        for name, setting in order:
            print(f"bench: thread pools, round {round_no + 1}/{config.rounds}, {name}", flush=True)
            run.wait_for_quiet(config.quiet_wait)
            with run.running(server(setting), model_dir, WORKERS, work) as live:
                failures.check(
                    f"thread pools {name} warm-up", run.wrk(live.port, "/predict", cases[1].lua, 16, 1)
                )
                pids = run.process_tree(live.process.pid)
                for rows, rows_cases in cases.items():
                    with run.CpuMeter(pids) as cpu:
                        result = run.wrk(live.port, "/predict", rows_cases.lua, CONNECTIONS, config.duration)
                    failures.check(f"thread pools {name} {rows} rows", result)
                    metrics = run.load_metrics(result, rows) | cpu.metrics(result["requests"])
                    records.append({"round": round_no + 1, "setting": name, "rows": rows, "metrics": metrics})
    return records


def markdown(records: list[dict[str, Any]], config: run.Config) -> str:
    lines = [
        f"# Thread pools: {MODEL}, {WORKERS} workers on one core, {CONNECTIONS} connections",
        "",
        f"Median of {config.rounds} round(s) of {config.duration} s; SKSERVE_THREADS={os.cpu_count()} "
        "(the host's CPUs) for host-sized, unset for skserve's default share. "
        f"Machine: {run.machine()}; commit {run.git_commit()}.",
        "",
        "| rows/request | pools | req/s | p50 ms | p99 ms | server CPU ms/req | others' use of its core % |",
        "|---|---|---|---|---|---|---|",
    ]
    for rows in sorted({r["rows"] for r in records}):
        for name in SETTINGS:
            values = [
                statistics.median(
                    r["metrics"][m] for r in records if r["setting"] == name and r["rows"] == rows
                )
                for m in METRICS
            ]
            lines.append(f"| {rows} | {name} | " + " | ".join(run.number(v) for v in values) + " |")
    return "\n".join(lines) + "\n"


def run_thread_pools(config: run.Config, work: Path, failures: run.Failures) -> None:
    """Measure both settings and write bench/results/thread-pools.{md,json} (BENCH_THREAD_POOLS=0: skip)."""
    if os.environ.get("BENCH_THREAD_POOLS", "1") == "0":
        return
    records = measure(config, work, failures)
    run.RESULTS.mkdir(exist_ok=True)
    (run.RESULTS / "thread-pools.json").write_text(json.dumps({"records": records}, indent=2) + "\n")
    (run.RESULTS / "thread-pools.md").write_text(markdown(records, config))
    print((run.RESULTS / "thread-pools.md").read_text())


if __name__ == "__main__":
    run.check_tools()
    alone = run.Config.from_env()
    found = run.Failures()
    with tempfile.TemporaryDirectory(prefix="skserve-bench-") as tmp:
        run_thread_pools(alone, Path(tmp), found)
    sys.exit(1 if found.messages else 0)
