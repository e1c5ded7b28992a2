"""gunicorn settings for skserve, each with its reason. Environment: PORT, WEB_CONCURRENCY, MODEL_DIR,
SKSERVE_THREADS, SKSERVE_DRAIN_SECONDS.

`skserve serve` and the repository's gunicorn.conf.py both use this module. It must be imported
before anything imports prometheus_client (see PROMETHEUS_MULTIPROC_DIR below), which is why the
package's __init__ imports nothing heavy.
"""

import atexit
import gc
import logging
import os
import shutil
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any


def _clean_metrics_dir(directory: Path, remove: bool, master_pid: int) -> None:
    """Delete prometheus_client's files from `directory`, or the whole directory if `remove`."""
    if os.getpid() != master_pid:  # workers inherit atexit handlers through fork
        return
    if remove:
        shutil.rmtree(directory, ignore_errors=True)
    else:
        for path in directory.glob("*.db"):
            path.unlink(missing_ok=True)


# /metrics adds up every worker's metrics through files in one directory (prometheus_client's
# multiprocess mode), named by PROMETHEUS_MULTIPROC_DIR, which prometheus_client reads once, when
# first imported: so it is set up here, before skserve (which imports it) is. A directory set in
# the environment is used, emptied of old metric files at start and at exit, and kept; otherwise
# each start makes a fresh one under TMPDIR (default /tmp), removed at exit. atexit, unlike the
# on_exit hook, also runs when the app fails to load. A SIGHUP reload re-reads this file and keeps
# the directory.
if "prometheus_client" not in sys.modules:
    _given_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    _metrics_dir = Path(_given_dir or tempfile.mkdtemp(prefix="skserve-metrics-"))
    _metrics_dir.mkdir(parents=True, exist_ok=True)
    _clean_metrics_dir(_metrics_dir, remove=False, master_pid=os.getpid())
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(_metrics_dir)
    atexit.register(_clean_metrics_dir, _metrics_dir, not _given_dir, os.getpid())

import threadpoolctl  # noqa: E402
from gunicorn import glogging  # type: ignore[import-untyped]  # noqa: E402
from prometheus_client import multiprocess  # noqa: E402 (after PROMETHEUS_MULTIPROC_DIR is set, above)

from skserve import drain  # noqa: E402 (before the workers fork: they share its flag)
from skserve.cpus import THREAD_POOL_VARIABLES, available_cpus, worker_threads  # noqa: E402 (likewise: skserve imports prometheus_client)

log = logging.getLogger(__name__)

# The app factory; it loads and verifies the model named by MODEL_DIR.
wsgi_app = "skserve.app:create_app()"

# Listen on every interface so the server is reachable in a container; PORT is the platform convention.
bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"

# Predictions are CPU-bound, so one worker per CPU we may use (cgroup quota aware, unlike
# gunicorn's own default); WEB_CONCURRENCY overrides it, as platforms expect.
workers = int(os.environ.get("WEB_CONCURRENCY") or available_cpus())

# OpenMP (HistGradientBoosting) and BLAS size their thread pools from the host's CPUs and
# ignore cgroup quotas (scikit-learn#35017): N workers with that many threads each oversubscribe
# the CPUs. Each worker gets its share instead; SKSERVE_THREADS overrides it (and replaces any
# OMP_NUM_THREADS or *BLAS_NUM_THREADS given). Set here, before the app imports the libraries,
# because OpenMP reads it once, at load, for every thread: a limit set later with threadpoolctl
# (post_fork) holds only in the thread that sets it, not in the request threads.
for _variable in THREAD_POOL_VARIABLES:
    os.environ[_variable] = str(worker_threads(workers))

# Threads let a worker parse the next requests while one is predicting, and keep slow clients
# from blocking a whole worker.
worker_class = "gthread"
threads = 16

# Load the app (and the model) in the master before forking: workers share the model's memory,
# and a bad artifact stops start-up before the port is opened.
preload_app = True

# A worker silent for this long is stuck; restart it rather than let requests queue behind it.
timeout = 30

# On SIGTERM, finish in-flight requests for up to this long; below Docker's and Kubernetes'
# default 10 s grace so the server exits on its own before SIGKILL.
graceful_timeout = 8

# On SIGTERM, first drain for this long (skserve.drain): /ready and /v2/health/ready answer 503 while
# every request is still answered, so a load balancer checking readiness every second (twice
# failed: out) stops sending before gunicorn closes its socket, then the graceful stop above
# begins. A platform's stop grace period should cover drain plus graceful_timeout (deploy/swarm
# gives 15 s; Docker's default 10 s cuts off only requests still running 7 s into the stop).
# 0 turns draining off.
DRAIN_SECONDS = float(os.environ.get("SKSERVE_DRAIN_SECONDS", "3"))

# Load balancers reuse connections; keep them open a little longer than a typical client pause.
keepalive = 5

# gunicorn's runtime control socket is unused here, and it would write under $HOME, which a
# read-only container does not have.
control_socket_disable = True


class _Logger(glogging.Logger):  # type: ignore[misc]  # gunicorn is untyped
    """gunicorn's logger minus its access log, which skserve.request_log's line per request replaces."""

    def access(self, resp: Any, req: Any, environ: Any, request_time: float) -> None:
        pass


# Any logconfig_dict turns gunicorn's access log on, and it then builds an access record per request
# (about 45 us of a worker's CPU, measured) even when no handler prints it: this logger skips that.
logger_class = _Logger

# Every log line, gunicorn's own included, goes to stdout as one JSON object in the same format,
# so one stream in one format carries all the server's logs; LineHandler writes each line with one
# system call and no lock. Loggers that exist already (skserve's) stay enabled, and gunicorn.error
# keeps the level of --log-level.
logconfig_dict: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "skserve.request_log.JsonFormatter"}},
    "handlers": {"stdout": {"class": "skserve.request_log.LineHandler", "formatter": "json"}},
    "root": {"level": "INFO", "handlers": ["stdout"]},
    "loggers": {
        "gunicorn.error": {"handlers": [], "propagate": True},
    },
}

# Python warnings (scikit-learn's, say) become log records too, so they also come out as JSON lines.
logging.captureWarnings(True)


def on_starting(server: Any) -> None:
    """In the master: SIGTERM drains for DRAIN_SECONDS before gunicorn's graceful stop."""
    drain.defer_term(server, DRAIN_SECONDS)


def child_exit(server: Any, worker: Any) -> None:
    """A worker exited (or was killed): drop its files for live gauges, as prometheus_client asks.

    Its counters' and histograms' files stay, so /metrics still adds in what it counted.
    """
    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]  # untyped upstream


def pre_fork(server: Any, worker: Any) -> None:
    """Move everything the master loaded (the model, the libraries) out of the garbage collector's
    reach before forking: collections in a worker then never write to those pages, which stay shared.
    Measured with two workers (pipeline model, after load): 160 MiB PSS without this, 132 MiB with."""
    gc.freeze()


# How long a thread may hold the GIL while others wait for it: 0.1 ms, not Python's 5 ms. A worker
# runs 16 request threads, the batching thread and gunicorn's dispatching main thread on one core;
# with 5 ms turns, some connections waited several turns and p99 reached 5x p50. Measured side by
# side (pipeline, 16 connections, one core): p99/p50 5.5 -> 2.3, and 1,277 -> 1,622 req/s.
SWITCH_INTERVAL_S = 0.0001


def post_fork(server: Any, worker: Any) -> None:
    """In each worker: hand the GIL round in short turns (SWITCH_INTERVAL_S), and size the thread pools."""
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    # BLAS pools are process-wide, so this also holds them to the share of the real worker count
    # (a --workers in GUNICORN_CMD_ARGS) and covers libraries loaded before this module was read.
    threadpoolctl.threadpool_limits(limits=worker_threads(server.cfg.workers), user_api="blas")
    _log_thread_pools()


def _log_thread_pools() -> None:
    """Log the pool sizes a request thread gets, read from a new thread as gunicorn's are."""
    pools: list[dict[str, Any]] = []
    reader = threading.Thread(target=lambda: pools.extend(threadpoolctl.threadpool_info()))
    reader.start()
    reader.join()
    sizes = [
        {"api": pool["user_api"], "library": pool["prefix"], "threads": pool["num_threads"]} for pool in pools
    ]
    log.info(
        "thread pools: %s",
        ", ".join(f"{pool['library']} {pool['threads']}" for pool in sizes),
        extra={"fields": {"thread_pools": sizes, "cpus": available_cpus()}},
    )


def worker_exit(server: Any, worker: Any) -> None:
    """A worker is stopping: answer the requests still queued for a batch (skserve.batching)."""
    # Imported here, not at the top: the app's modules are the app's to import, once it is loaded.
    from skserve.web import close_batcher  # noqa: PLC0415

    close_batcher(worker.wsgi)
