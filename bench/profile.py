"""`make bench-profile`: where a skserve worker's time goes under load, sampled with py-spy.

For each benchmark model: start skserve the way `make bench` does (one worker pinned to core 0),
load it with wrk at 16 connections (1 row per request, every answer checked), and sample the
worker with py-spy from core 1. Writes bench/results/profile-<model>.svg (flame graph) and
prints, per model, the share of samples by library and the top functions by own and total time.

Environment: BENCH_PROFILE_SECONDS (default 15), BENCH_MODELS (default "pipeline,forest,mixed"),
BENCH_QUIET_WAIT (seconds to wait for other sessions' CPU work to stop first, default 60).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import run

PY_SPY = run.VENV_BIN / "py-spy"
RATE_HZ = 200
CONNECTIONS = 16

# A frame's library, from the first component of the file path py-spy prints (e.g. "sklearn/tree/x.py").
AREAS = {
    "skserve": "skserve",
    "sklearn": "scikit-learn",
    "joblib": "joblib",
    "numpy": "numpy/scipy",
    "scipy": "numpy/scipy",
    "json": "json (stdlib)",
    "flask": "flask/werkzeug",
    "werkzeug": "flask/werkzeug",
    "gunicorn": "gunicorn",
    "prometheus_client": "prometheus_client",
    "logging": "logging (stdlib)",
    "threading": "threads/sockets (stdlib)",
    "concurrent": "threads/sockets (stdlib)",
    "queue": "threads/sockets (stdlib)",
    "selectors": "threads/sockets (stdlib)",
    "socket": "threads/sockets (stdlib)",
}


def area(frame: str) -> str:
    path = frame.rpartition(" (")[2].rstrip(")").split(":", 1)[0]
    top = path.split("/", 1)[0].removesuffix(".py")
    return AREAS.get(top, f"other: {top}" if top else "other")


def short(frame: str) -> str:
    """'predict (sklearn/ensemble/_forest.py)' from py-spy's 'predict (/…/site-packages/sklearn/…)'."""
    name, _, where = frame.partition(" (")
    for cut in ("site-packages/", "/src/", "/lib/python3.11/"):
        if cut in where:
            where = where.split(cut, 1)[1]
            break
    return f"{name} ({where.rstrip(')')})"


def summarize(collapsed: Path, top: int = 15) -> str:
    """Markdown: samples by library (own time) and the top functions by own and total time."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    by_area: Counter[str] = Counter()
    samples = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        frames = stack.split(";")
        samples += count
        own[short(frames[-1])] += count
        by_area[area(frames[-1])] += count
        for frame in set(frames):
            total[short(frame)] += count
    lines = [f"{samples} samples (py-spy at {RATE_HZ} Hz)", ""]
    lines += ["| library (own time) | share |", "|---|---|"]
    minor = sum(n for name, n in by_area.items() if name.startswith("other") and n < samples / 100)
    major = [
        (name, n) for name, n in by_area.most_common() if not name.startswith("other") or n >= samples / 100
    ]
    lines += [f"| {name} | {100 * n / samples:.1f}% |" for name, n in major]
    lines += [f"| other modules, each < 1% | {100 * minor / samples:.1f}% |"] if minor else []
    lines += ["", "| function (own time) | share |", "|---|---|"]
    lines += [f"| `{name}` | {100 * n / samples:.1f}% |" for name, n in own.most_common(top)]
    lines += ["", "| function (total time, incl. callees) | share |", "|---|---|"]
    lines += [f"| `{name}` | {100 * n / samples:.1f}% |" for name, n in total.most_common(top)]
    return "\n".join(lines)


def py_spy(pid: int, seconds: int, out: Path, fmt: str, *extra: str) -> subprocess.Popen[bytes]:
    """py-spy on core 1, not pausing the worker (--nonblocking), aggregated by function."""
    argv = [
        "taskset", "-c", run.LOAD_CORE, str(PY_SPY), "record", "--pid", str(pid),
        "--duration", str(seconds), "--rate", str(RATE_HZ), "--nonblocking", "--function",
        "--format", fmt, "--output", str(out), *extra,
    ]  # fmt: skip
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def profile(model: str, model_dir: Path, work: Path, seconds: int) -> str:
    quiet = run.wait_for_quiet(float(os.environ.get("BENCH_QUIET_WAIT", "60")))
    cases = run.write_cases(model_dir, run.MODELS[model].rows(), 1, work)
    failures = run.Failures()
    with run.running(run.SKSERVE, model_dir, 1, work) as server:
        failures.check("warm-up", run.wrk(server.port, "/predict", cases.lua, CONNECTIONS, 2))
        worker = run.process_tree(server.process.pid)[1]
        # Collapsed stacks, kept beside the report for grepping callers (gitignored).
        active, gil = run.RESULTS / f"profile-{model}.txt", run.RESULTS / f"profile-{model}-gil.txt"
        samplers = [
            py_spy(worker, seconds, active, "raw"),
            py_spy(worker, seconds, gil, "raw", "--gil"),
            py_spy(worker, seconds, run.RESULTS / f"profile-{model}.svg", "flamegraph"),
        ]
        with run.CpuMeter(run.process_tree(server.process.pid)) as cpu:
            result = run.wrk(server.port, "/predict", cases.lua, CONNECTIONS, seconds + 2)
        failures.check("profiled load", result)
        for sampler in samplers:
            _, err = sampler.communicate(timeout=seconds + 60)
            if sampler.returncode != 0:
                raise RuntimeError(f"py-spy failed: {err.decode(errors='replace')}")
    if failures.messages:
        raise RuntimeError("; ".join(failures.messages))
    rate = result["requests"] / (result["duration_us"] / 1e6)
    noise = cpu.metrics(result["requests"])
    return (
        f"## {model}: {rate:,.0f} req/s while sampled\n\n"
        f"Server CPU {noise['cpu_ms_per_req']:.2f} ms per request; other sessions' work took "
        f"{quiet['other_load_before_pct']:.0f}% of the server's core just before and "
        f"{noise['server_core_other_pct']:.0f}% of the server's core during the load.\n\n"
        f"### Threads not idle (running, or waiting for the GIL or the core)\n\n{summarize(active)}\n\n"
        f"### The thread holding the GIL (Python-level CPU; C code that releases the GIL is missing)\n\n"
        f"{summarize(gil)}"
    )


def main() -> int:
    run.check_tools()
    seconds = int(os.environ.get("BENCH_PROFILE_SECONDS", "15"))
    models = tuple(m for m in os.environ.get("BENCH_MODELS", ",".join(run.MODELS)).split(",") if m)
    run.RESULTS.mkdir(exist_ok=True)
    commit = run.git_commit()
    with tempfile.TemporaryDirectory(prefix="skserve-profile-") as tmp:
        work = Path(tmp)
        dirs = run.train_models(models, work / "models")
        reports = [profile(model, dirs[model], work, seconds) for model in models]
    head = (
        "# skserve worker profile under load (`make bench-profile`)\n\n"
        f"Commit {commit}; one gunicorn worker pinned to core {run.SERVER_CORE}, wrk at {CONNECTIONS} "
        f"connections and py-spy (--nonblocking, {seconds} s) on core {run.LOAD_CORE}. py-spy's "
        "'not idle' view also counts threads blocked on a lock or the GIL; the GIL view is where "
        "Python code spends the CPU. Flame graphs: profile-<model>.svg.\n\n"
    )
    text = head + "\n\n".join(reports) + "\n"
    (run.RESULTS / "profile.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
