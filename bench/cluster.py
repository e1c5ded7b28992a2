"""`make bench-cluster`: skserve through HAProxy on Swarm with 1 and 2 replicas, against one container.

The stack is the one `make cluster-up` deploys (deploy/swarm/cluster.sh, stack skserve-bench), every
replica and the direct container limited to one CPU. wrk drives each with bench/predict.lua, which
checks every answer. Then: a soak through the load balancer at about half the 2-replica
throughput (bench/paced.lua), with each replica's resident memory at its start and end; and the
time a rolling update of 3 replicas takes (`make cluster-update` of an image already built).
Writes bench/results/cluster.{md,json}; exits 1 if any answer was wrong or failed.

Environment: BASE_IMAGE (as for `make docker-build`; default skserve-base:bookworm),
BENCH_DURATION (seconds per load, default 10), BENCH_CONNECTIONS (default 16),
BENCH_SOAK_S (default 600), BENCH_CLUSTER_PORT (the load balancer's, default 18080).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import run  # bench/ is on sys.path when cluster.py runs as a script

ROOT = run.ROOT
RESULTS = run.RESULTS
STACK = "skserve-bench"
REPOSITORY = "skserve-bench"
API = f"{STACK}_api"
PORT = int(os.environ.get("BENCH_CLUSTER_PORT", "18080"))
BASE_IMAGE = os.environ.get("BASE_IMAGE", "skserve-base:bookworm")
DURATION_S = int(os.environ.get("BENCH_DURATION", "10"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "16"))
SOAK_S = int(os.environ.get("BENCH_SOAK_S", "600"))
SOAK_CONNECTIONS = 8
SOAK_SHARE = 0.5  # of the 2-replica throughput
RSS_SETTLE_S = 30  # the soak's first RSS reading, once the workers' caches have filled
WARMUP_S = 3
UPDATE_REPLICAS = 3

CLUSTER_ENV = {
    "CLUSTER_STACK": STACK,
    "CLUSTER_IMAGE": REPOSITORY,
    "CLUSTER_PORT": str(PORT),
    "BASE_IMAGE": BASE_IMAGE,
}

# The resident memory of every process in a container, in KiB (run with the image's Python).
RSS_KIB = """
import os
total = 0
for pid in filter(str.isdigit, os.listdir('/proc')):
    try:
        with open(f'/proc/{pid}/status') as stream:
            total += next(int(line.split()[1]) for line in stream if line.startswith('VmRSS:'))
    except (OSError, StopIteration):
        continue
print(total)
"""


def cluster(verb: str, **env: str) -> str:
    """One deploy/swarm/cluster.sh verb (what `make cluster-<verb>` runs); its output."""
    done = subprocess.run(
        [str(ROOT / "deploy" / "swarm" / "cluster.sh"), verb],
        env={**os.environ, **CLUSTER_ENV, **env}, cwd=ROOT, capture_output=True, text=True, timeout=1800,
        check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"cluster.sh {verb} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True, timeout=300).stdout


def service_image() -> str:
    return docker("service", "inspect", "--format", "{{.Spec.TaskTemplate.ContainerSpec.Image}}", API).strip()


def replicas() -> list[str]:
    return docker("ps", "--quiet", "--filter", f"label=com.docker.swarm.service.name={API}").split()


def rss_mib(container: str) -> float:
    return int(docker("exec", container, "python", "-c", RSS_KIB)) / 1024


def model_dir_of(image: str, into: Path) -> Path:
    """The artifact pair copied out of `image`."""
    into.mkdir(parents=True)
    container = docker("create", image).strip()
    try:
        docker("cp", f"{container}:/app/models/.", str(into))
    finally:
        docker("rm", container)
    return into


def wrk_command(
    port: int, connections: int, seconds: int, cases: Path, pause_ms: float | None = None
) -> list[str]:
    """wrk POSTing to /predict on `port`, every answer checked; paced by `pause_ms` per connection."""
    script = "bench/predict.lua" if pause_ms is None else "bench/paced.lua"
    pace = [] if pause_ms is None else [f"{pause_ms:.1f}"]
    return [
        "wrk", f"--threads={connections}", f"--connections={connections}", f"--duration={seconds}s",
        f"--timeout={run.WRK_TIMEOUT}", f"--script={script}", f"http://127.0.0.1:{port}/predict",
        "--", str(cases), *pace,
    ]  # fmt: skip


def wrk_result(stdout: str) -> dict[str, Any]:
    line = next((ln for ln in stdout.splitlines() if ln.startswith("WRK_RESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result:\n{stdout}")
    result: dict[str, Any] = json.loads(line.removeprefix("WRK_RESULT "))
    return result


def wrk(port: int, cases: Path, connections: int, seconds: int) -> dict[str, Any]:
    """One wrk run at full speed."""
    argv = wrk_command(port, connections, seconds, cases)
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=seconds + 60, check=True)
    return wrk_result(done.stdout)


def measure(port: int, cases: Path, where: str, failures: run.Failures) -> dict[str, float]:
    """Warm up, then one checked load of DURATION_S at CONNECTIONS."""
    failures.check(f"{where} warm-up", wrk(port, cases, CONNECTIONS, WARMUP_S))
    result = wrk(port, cases, CONNECTIONS, DURATION_S)
    failures.check(where, result)
    metrics = run.load_metrics(result, 1)
    print(f"{where}: {metrics['req_s']:.0f} req/s, p99 {metrics['p99_ms']:.1f} ms", flush=True)
    return metrics


def direct(image: str, cases: Path, failures: run.Failures) -> dict[str, float]:
    """One container of `image` with one CPU, published on the host, without a load balancer."""
    port = run.free_port()
    # As `make docker-run` runs the image; /tmp is a tmpfs inside the container, not a host path.
    container = docker(
        "run", "--detach", "--cpus", "1", "--read-only", "--tmpfs", "/tmp",  # noqa: S108
        "--publish", f"127.0.0.1:{port}:8000", "--name", f"{STACK}-direct", image,
    ).strip()  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not run.answers(port, "GET", "/ready", None):
            if time.monotonic() > deadline:
                raise RuntimeError("the direct container did not become ready in 60 s")
            time.sleep(0.2)
        return measure(port, cases, "one container, no load balancer", failures)
    finally:
        docker("rm", "--force", container)


def soak(cases: Path, capacity_req_s: float, failures: run.Failures) -> dict[str, Any]:
    """SOAK_S through the load balancer at SOAK_SHARE of `capacity_req_s`; replicas' RSS growth."""
    target = capacity_req_s * SOAK_SHARE
    pause_ms = max(SOAK_CONNECTIONS * 1000 / target - 1.0, 0.0)  # less about 1 ms of latency
    containers = replicas()
    argv = wrk_command(PORT, SOAK_CONNECTIONS, SOAK_S, cases, pause_ms)
    load = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    time.sleep(RSS_SETTLE_S)
    rss_start = {container: rss_mib(container) for container in containers}
    output, _ = load.communicate(timeout=SOAK_S + 120)
    rss_end = {container: rss_mib(container) for container in containers}
    result = wrk_result(output)
    failures.check("soak", result)
    metrics = run.load_metrics(result, 1)
    growth = max(100 * (rss_end[c] - rss_start[c]) / rss_start[c] for c in containers)
    print(f"soak: {metrics['req_s']:.0f} req/s for {SOAK_S} s, {metrics['errors']:.0f} errors, "
          f"RSS growth at most {growth:.1f}%", flush=True)  # fmt: skip
    return {
        "seconds": SOAK_S,
        "target_req_s": target,
        **metrics,
        "requests": result["requests"],
        "rss_start_mib": list(rss_start.values()),
        "rss_end_mib": list(rss_end.values()),
        "rss_growth_max_pct": growth,
    }


def rolling_update(base_image: str) -> dict[str, Any]:
    """The time `make cluster-update` takes to replace UPDATE_REPLICAS replicas with an image built before."""
    cluster("scale", REPLICAS=str(UPDATE_REPLICAS))
    new = f"{REPOSITORY}:cluster-update"
    build = ["make", "--no-print-directory", "docker-build", f"IMAGE={new}", f"BASE_IMAGE={base_image}"]
    subprocess.run([*build, "TRAIN_SEED=7"], cwd=ROOT, check=True, capture_output=True, timeout=1800)
    began = time.monotonic()
    output = cluster("update", UPDATE_IMAGE=new)
    took = time.monotonic() - began
    if service_image() != new:
        raise RuntimeError(f"the update did not complete:\n{output}")
    print(f"rolling update of {UPDATE_REPLICAS} replicas: {took:.1f} s", flush=True)
    return {"replicas": UPDATE_REPLICAS, "seconds": took}


def markdown(meta: dict[str, Any], loads: dict[str, dict[str, float]], soaked: dict[str, Any],
             update: dict[str, Any]) -> str:  # fmt: skip
    lines = [
        "# Cluster benchmark (make bench-cluster)",
        "",
        f"{meta['date']}, commit {meta['commit']}, {meta['cpus']} CPUs, load average "
        f"{meta['loadavg_start']} at the start and {meta['loadavg_end']} at the end. The machine is shared "
        "with other sessions' work, so these figures are noisy: compare them with each other, not with "
        "other machines.",
        "",
        f"wrk, {CONNECTIONS} connections, {DURATION_S} s per load after {WARMUP_S} s of warm-up, one row per "
        "request, every answer checked. Every replica and the direct container have one CPU "
        "(`--cpus 1`, one gunicorn worker); HAProxy and wrk share the machine's two cores with them.",
        "",
        "| target | req/s | p50 ms | p99 ms | errors |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, metrics in loads.items():
        lines.append(
            f"| {name} | {metrics['req_s']:.0f} | {metrics['p50_ms']:.1f} | {metrics['p99_ms']:.1f} | "
            f"{metrics['errors']:.0f} |"
        )
    lines += [
        "",
        f"Rolling update of {update['replicas']} replicas (start-first, one at a time, each gated by its "
        f"health check, image built beforehand): {update['seconds']:.0f} s.",
        "",
        f"Soak: {soaked['seconds']} s through the load balancer with 2 replicas, {SOAK_CONNECTIONS} paced "
        f"connections aiming at {soaked['target_req_s']:.0f} req/s (half the 2-replica figure): "
        f"{soaked['req_s']:.0f} req/s, {soaked['requests']} requests, {soaked['errors']:.0f} errors, "
        f"p99 {soaked['p99_ms']:.1f} ms. Replica RSS (all processes, MiB) after {RSS_SETTLE_S} s: "
        f"{', '.join(f'{v:.1f}' for v in soaked['rss_start_mib'])}; at the end: "
        f"{', '.join(f'{v:.1f}' for v in soaked['rss_end_mib'])}; largest growth "
        f"{soaked['rss_growth_max_pct']:.1f}%.",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    failures = run.Failures()
    meta: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
        ).stdout.strip(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "loadavg_start": " ".join(f"{v:.1f}" for v in os.getloadavg()),
    }
    loads: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        work = Path(tmp)
        try:
            cluster("up", REPLICAS="1")
            image = service_image()
            cases = run.write_cases(model_dir_of(image, work / "model"), run.iris_rows(), 1, work).lua
            loads["one container, no load balancer"] = direct(image, cases, failures)
            loads["HAProxy + 1 replica"] = measure(PORT, cases, "HAProxy + 1 replica", failures)
            cluster("scale", REPLICAS="2")
            loads["HAProxy + 2 replicas"] = measure(PORT, cases, "HAProxy + 2 replicas", failures)
            soaked = soak(cases, loads["HAProxy + 2 replicas"]["req_s"], failures)
            update = rolling_update(BASE_IMAGE)
        finally:
            cluster("down")
    meta["loadavg_end"] = " ".join(f"{v:.1f}" for v in os.getloadavg())
    RESULTS.mkdir(exist_ok=True)
    record = {
        "meta": meta,
        "loads": loads,
        "soak": soaked,
        "rolling_update": update,
        "failures": failures.messages,
    }
    (RESULTS / "cluster.json").write_text(json.dumps(record, indent=2) + "\n")
    (RESULTS / "cluster.md").write_text(markdown(meta, loads, soaked, update))
    for message in failures.messages:
        print(f"FAILED {message}", file=sys.stderr)
    return 1 if failures.messages else 0


if __name__ == "__main__":
    sys.exit(main())
