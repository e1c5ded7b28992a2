"""Start the real server (gunicorn with the project's gunicorn.conf.py) on a free 127.0.0.1 port."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
GUNICORN = Path(sys.executable).parent / "gunicorn"
START_TIMEOUT_S = 30.0


@dataclass
class LiveServer:
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> Response:
        """One HTTP request; `body` is sent as JSON unless it is already bytes."""
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        all_headers = {"Content-Type": "application/json"} if data is not None else {}
        all_headers.update(headers or {})
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=all_headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as reply:
                return Response(reply.status, dict(reply.headers), reply.read())
        except urllib.error.HTTPError as error:
            return Response(error.code, dict(error.headers), error.read())

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM (a graceful stop), then the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


SERVE = (str(GUNICORN), "-c", "gunicorn.conf.py")  # what `make serve` runs


def spawn(
    model_dir: Path,
    log_path: Path,
    workers: int = 1,
    command: Sequence[str] = SERVE,
    cwd: Path = REPO,
    **env: str,
) -> LiveServer:
    """Start gunicorn with `command` (as `make serve` does), bound to 127.0.0.1, without waiting for it."""
    port = free_port()
    environment = {
        **os.environ,
        "MODEL_DIR": str(model_dir),
        "WEB_CONCURRENCY": str(workers),
        "GUNICORN_CMD_ARGS": f"--bind 127.0.0.1:{port}",
        **env,
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen(list(command), cwd=cwd, env=environment, stdout=log, stderr=log)
    return LiveServer(process, f"http://127.0.0.1:{port}", log_path)


def failed_start(model_dir: Path, log_path: Path, **env: str) -> tuple[int, str]:
    """Start a server that is expected to refuse to start: its exit status and its log."""
    server = spawn(model_dir, log_path, **env)
    try:
        exit_status = server.process.wait(START_TIMEOUT_S)
    finally:
        server.stop()
    return exit_status, server.log()


def wait_ready(server: LiveServer, timeout: float = START_TIMEOUT_S) -> float:
    """Poll /ready until it answers 200; return the seconds it took. Raises if the server dies."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited with {server.process.returncode}:\n{server.log()}")
        try:
            if server.request("GET", "/ready").status == 200:
                return time.monotonic() - started
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"server not ready after {timeout} s:\n{server.log()}")


@contextmanager
def running(
    model_dir: Path,
    log_path: Path,
    workers: int = 1,
    command: Sequence[str] = SERVE,
    cwd: Path = REPO,
    **env: str,
) -> Iterator[LiveServer]:
    """A ready server for the duration of the block, stopped (by its own PID) afterwards."""
    server = spawn(model_dir, log_path, workers, command, cwd, **env)
    try:
        wait_ready(server)
        yield server
    finally:
        server.stop()
