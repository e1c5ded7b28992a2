"""Request IDs and the JSON log: one line per request, the same format for every log line."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from skserve.artifact import read_card
from skserve.request_log import JsonFormatter, LineHandler
from tests.conftest import SECRET_FAILURE
from tests.live_server import LiveServer, running

ROWS = [[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3], [7.7, 3.0, 6.1, 2.3]]
GENERATED_ID = re.compile(r"[0-9a-f]{32}")
ACCESS_FIELDS = {"time", "level", "logger", "message", "pid"} | {
    "request_id",
    "method",
    "path",
    "status",
    "duration_ms",
    "rows",
    "model_version",
}
SECRET = "do-not-log-me"  # noqa: S105 (a marker, not a password)


class JsonLog:
    """What the server's root handler would print during the test: JSON lines, parsed back."""

    def __init__(self) -> None:
        self.stream = io.StringIO()

    def text(self) -> str:
        return self.stream.getvalue()

    def lines(self, logger: str | None = None) -> list[dict[str, Any]]:
        parsed = [json.loads(line) for line in self.text().splitlines()]
        return [line for line in parsed if logger is None or line["logger"] == logger]

    def access(self) -> list[dict[str, Any]]:
        return self.lines("skserve.access")


@pytest.fixture
def json_log() -> Iterator[JsonLog]:
    """Log INFO and up through JsonFormatter into memory, as gunicorn.conf.py's logconfig_dict does."""
    log = JsonLog()
    handler = logging.StreamHandler(log.stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield log
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def test_each_request_logs_one_line_with_the_required_fields(
    client: FlaskClient, model_dir: Path, json_log: JsonLog
) -> None:
    response = client.post("/predict", json={"instances": ROWS})
    client.get("/health")
    predict_line, health_line = json_log.access()
    assert set(predict_line) == ACCESS_FIELDS
    assert (predict_line["level"], predict_line["message"]) == ("INFO", "POST /predict 200")
    assert predict_line["request_id"] == response.headers["X-Request-ID"]
    assert (predict_line["method"], predict_line["path"], predict_line["status"]) == ("POST", "/predict", 200)
    assert predict_line["rows"] == 3
    assert predict_line["model_version"] == read_card(model_dir)["version"]
    assert isinstance(predict_line["duration_ms"], float)
    assert predict_line["duration_ms"] >= 0
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", predict_line["time"])
    assert (health_line["path"], health_line["rows"]) == ("/health", 0)


def test_a_failed_request_names_its_error_code(client: FlaskClient, json_log: JsonLog) -> None:
    response = client.post("/predict", json={"instances": [[1, 2]]})
    (line,) = json_log.access()
    assert (line["status"], line["error"], line["rows"]) == (400, "invalid_input", 0)
    assert line["request_id"] == response.get_json()["error"]["request_id"]


def test_log_lines_never_carry_the_request_body(client: FlaskClient, json_log: JsonLog) -> None:
    for body in ({"instances": [[SECRET, 1, 2, 3]]}, {"instances": [{SECRET: 1}]}, {SECRET: []}):
        client.post("/predict", json=body)
        client.post("/predict", data=json.dumps(body), content_type="text/plain")
        client.post("/predict", data=json.dumps(body)[:-1], content_type="application/json")
    assert len(json_log.access()) == 9
    assert SECRET not in json_log.text()


def test_a_long_path_is_cut_in_the_log(client: FlaskClient, json_log: JsonLog) -> None:
    client.get("/" + "x" * 5000)
    (line,) = json_log.access()
    assert len(line["path"]) == 1024
    assert line["status"] == 404


def test_a_safe_client_request_id_is_echoed_in_header_error_body_and_log(
    client: FlaskClient, json_log: JsonLog
) -> None:
    identifier = "Trace-42.a_b"
    ok = client.get("/health", headers={"X-Request-ID": identifier})
    failed = client.get("/nope", headers={"X-Request-ID": identifier})
    assert ok.headers["X-Request-ID"] == identifier
    assert failed.headers["X-Request-ID"] == identifier
    assert failed.get_json()["error"]["request_id"] == identifier
    assert [line["request_id"] for line in json_log.access()] == [identifier, identifier]


@pytest.mark.parametrize(
    "unsafe",
    ["", "has space", "a" * 129, "<script>", "semi;colon", 'quote"d', "caf\u00e9", "new\u2028line", "a/b"],
)
def test_an_unsafe_client_request_id_is_replaced_by_a_generated_one(client: FlaskClient, unsafe: str) -> None:
    response = client.get("/nope", headers={"X-Request-ID": unsafe})
    identifier = response.headers["X-Request-ID"]
    assert GENERATED_ID.fullmatch(identifier)
    assert response.get_json()["error"]["request_id"] == identifier


def test_the_longest_safe_request_id_is_kept(client: FlaskClient) -> None:
    identifier = "a" * 128
    assert client.get("/health", headers={"X-Request-ID": identifier}).headers["X-Request-ID"] == identifier


def test_each_request_without_an_id_gets_a_new_one(client: FlaskClient) -> None:
    identifiers = {client.get("/health").headers["X-Request-ID"] for _ in range(20)}
    assert len(identifiers) == 20
    assert all(GENERATED_ID.fullmatch(identifier) for identifier in identifiers)


def test_an_unexpected_failure_is_logged_once_with_its_request_id_and_traceback(
    failing_app: Flask, json_log: JsonLog
) -> None:
    response = failing_app.test_client().post(
        "/predict", json={"instances": ROWS}, headers={"X-Request-ID": "boom-1"}
    )
    assert response.status_code == 500
    assert response.get_json()["error"]["request_id"] == "boom-1"
    (failure,) = [line for line in json_log.lines() if line["level"] == "ERROR"]
    assert failure["request_id"] == "boom-1"
    assert f"RuntimeError: {SECRET_FAILURE}" in failure["exception"]
    (access,) = json_log.access()
    assert (access["status"], access["error"], access["request_id"]) == (
        500,
        "internal_server_error",
        "boom-1",
    )


def test_the_formatter_writes_one_json_object_per_line() -> None:
    formatter = JsonFormatter()
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        record = logging.LogRecord("app", logging.WARNING, __file__, 1, "got %s", ("x",), sys.exc_info())
    record.fields = {"status": 200, "path": Path("/p")}
    text = formatter.format(record)
    assert "\n" not in text
    line = json.loads(text)
    assert line["message"] == "got x"
    assert (line["level"], line["logger"]) == ("WARNING", "app")
    assert (line["status"], line["path"]) == (200, "/p")  # anything else JSON lacks is written as text
    assert "ValueError: bad\nthing" in line["exception"]
    assert "request_id" not in line  # logged outside any request


def test_the_formatter_writes_utc_times_with_milliseconds() -> None:
    formatter = JsonFormatter()
    record = logging.LogRecord("app", logging.INFO, __file__, 1, "m", (), None)
    for created, expected in [
        (0.0, "1970-01-01T00:00:00.000Z"),
        (1_800_000_000.9996, "2027-01-15T08:00:00.999Z"),
        (1_800_000_001.25, "2027-01-15T08:00:01.250Z"),
    ]:
        record.created = created
        assert json.loads(formatter.format(record))["time"] == expected


def line_logger(name: str, fd: int) -> logging.Logger:
    """A logger of its own that writes JSON lines through a LineHandler to `fd`."""
    handler = LineHandler(fd)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger(name)
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger


def test_the_line_handler_keeps_every_line_whole_when_many_threads_log_at_once() -> None:
    read_end, write_end = os.pipe()
    received: list[bytes] = []

    def drain() -> None:
        while chunk := os.read(read_end, 65536):
            received.append(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    logger = line_logger("test.line_handler", write_end)
    padding = "p" * 1000  # lines of about 1.1 kB: several fill a pipe's buffer, so writers do contend

    def log_lines(thread: int) -> None:
        for line in range(200):
            logger.info("thread %d line %d", thread, line, extra={"fields": {"padding": padding}})

    try:
        with ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(log_lines, range(16)))
    finally:
        os.close(write_end)
        reader.join(30)
        os.close(read_end)
    lines = [json.loads(line) for line in b"".join(received).decode().splitlines()]
    assert sorted(line["message"] for line in lines) == sorted(
        f"thread {thread} line {line}" for thread in range(16) for line in range(200)
    )
    assert all(line["padding"] == padding for line in lines)


def test_a_failed_line_write_is_reported_not_raised(capsys: pytest.CaptureFixture[str]) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody reads stdout any more: the write fails with EPIPE
    try:
        line_logger("test.line_handler_broken", write_end).info("lost")
    finally:
        os.close(write_end)
    assert "BrokenPipeError" in capsys.readouterr().err


# --- the real server: every line gunicorn and the app print is JSON ---


@pytest.fixture(scope="module")
def server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with running(model_dir, tmp_path_factory.mktemp("log") / "server.log", workers=3) as live:
        yield live


def server_lines(server: LiveServer) -> list[dict[str, Any]]:
    """Every line the server printed, parsed; fails on any line that is not a JSON object."""
    lines = [json.loads(line) for line in server.log().splitlines() if line.strip()]
    assert all(isinstance(line, dict) for line in lines)
    return lines


@pytest.mark.e2e
def test_live_every_line_is_json_gunicorn_included(server: LiveServer) -> None:
    server.request("GET", "/health")
    lines = server_lines(server)
    assert all({"time", "level", "logger", "message", "pid"} <= set(line) for line in lines)
    assert any(line["logger"] == "gunicorn.error" and "Booting worker" in line["message"] for line in lines)
    assert not any(line["logger"] == "gunicorn.access" for line in lines)


@pytest.mark.e2e
def test_live_access_lines_carry_ids_and_no_bodies(server: LiveServer, model_dir: Path) -> None:
    sent = {
        "trace-ok": server.request("POST", "/predict", {"instances": ROWS}, {"X-Request-ID": "trace-ok"}),
        "trace-bad": server.request(
            "POST", "/predict", {"instances": [[SECRET, 1, 2, 3]]}, {"X-Request-ID": "trace-bad"}
        ),
    }
    assert sent["trace-ok"].status == 200
    assert sent["trace-bad"].status == 400
    assert sent["trace-bad"].json()["error"]["request_id"] == "trace-bad"
    unsafe = server.request("GET", "/health", headers={"X-Request-ID": "no spaces allowed"})
    generated = unsafe.headers["X-Request-ID"]
    assert GENERATED_ID.fullmatch(generated)
    assert server.request("GET", "/health").headers["X-Request-ID"] != generated

    lines = server_lines(server)
    assert SECRET not in server.log()
    by_id = {line["request_id"]: line for line in lines if line["logger"] == "skserve.access"}
    assert set(by_id["trace-ok"]) == ACCESS_FIELDS
    assert (by_id["trace-ok"]["status"], by_id["trace-ok"]["rows"]) == (200, 3)
    assert by_id["trace-ok"]["model_version"] == read_card(model_dir)["version"]
    assert (by_id["trace-bad"]["status"], by_id["trace-bad"]["error"]) == (400, "invalid_input")
    assert by_id[generated]["path"] == "/health"
