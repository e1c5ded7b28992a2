"""docker/ready-probe, the image's HEALTHCHECK, against servers that answer what /ready can answer."""

import http.server
import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.live_server import REPO, free_port

PROBE = REPO / "docker" / "ready-probe"


@contextmanager
def answering(status: int) -> Iterator[int]:
    """An HTTP server on 127.0.0.1 that answers every GET with `status`; yields its port."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def probe(port: int) -> int:
    environment = {**os.environ, "PORT": str(port)}
    return subprocess.run([PROBE], check=False, env=environment, capture_output=True, timeout=10).returncode


def test_a_ready_server_passes() -> None:
    with answering(200) as port:
        assert probe(port) == 0


@pytest.mark.parametrize("status", [503, 500, 404])
def test_a_server_that_is_not_ready_fails(status: int) -> None:
    with answering(status) as port:
        assert probe(port) != 0


def test_nothing_listening_fails() -> None:
    assert probe(free_port()) != 0


def test_a_server_that_accepts_but_never_answers_fails_within_its_read_timeout() -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:
        assert probe(silent.getsockname()[1]) != 0
