"""Request IDs, one JSON log line per request, and the JSON log format every server log line uses."""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import time
from time import perf_counter
from typing import Any

import orjson
from flask import Flask, has_request_context, request
from werkzeug.wrappers import Response

from skserve import metrics

REQUEST_ID_HEADER = "X-Request-ID"
# A client's ID is kept only if it is this safe (nothing to escape in a header or a log) and short.
REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,128}")
# Paths beyond this are cut in log lines, so one line stays one atomic write to a pipe.
MAX_LOGGED_PATH = 1024

# A request's own state lives in its WSGI environ: one plain dict, where each use of a Flask proxy
# (g, request) would cost about a microsecond.
_HEADER_KEY = "HTTP_X_REQUEST_ID"
_STARTED_KEY = "skserve.started"
_ID_KEY = "skserve.request_id"

access_log = logging.getLogger("skserve.access")


def init_app(app: Flask, model_version: str) -> None:
    """Time, count and log every request, and give each an ID echoed in `X-Request-ID`."""

    def start() -> None:
        environ = request.environ
        environ[_STARTED_KEY] = perf_counter()
        environ[_ID_KEY] = _request_id_from(environ.get(_HEADER_KEY))

    def finish(response: Response) -> Response:
        environ = request.environ
        started = environ.get(_STARTED_KEY)
        seconds = perf_counter() - started if started is not None else 0.0
        rule = request.url_rule
        status = response.status_code
        metrics.observe_request(rule.rule if rule is not None else metrics.UNMATCHED, status, seconds)
        identifier = request_id()
        response.headers[REQUEST_ID_HEADER] = identifier
        method, path = environ["REQUEST_METHOD"], request.path[:MAX_LOGGED_PATH]
        fields = {
            "request_id": identifier,
            "method": method,
            "path": path,
            "status": status,
            "duration_ms": round(seconds * 1000, 3),
            "rows": environ.get(metrics.ROWS_KEY, 0),
            "model_version": model_version,
        }
        error_code = environ.get(metrics.ERROR_KEY)
        if error_code is not None:
            fields["error"] = error_code
        access_log.info("%s %s %s", method, path, status, extra={"fields": fields})
        return response

    app.before_request(start)
    app.after_request(finish)


def request_id() -> str:
    """The current request's ID: the client's `X-Request-ID` if it is safe, else a new random one."""
    environ = request.environ
    identifier: str | None = environ.get(_ID_KEY)
    if identifier is None:  # asked before the before_request hook ran
        identifier = environ[_ID_KEY] = _request_id_from(environ.get(_HEADER_KEY))
    return identifier


def _request_id_from(header: str | None) -> str:
    if header is not None and REQUEST_ID_PATTERN.fullmatch(header):
        return header
    return secrets.token_hex(16)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC), level, logger, message, pid, then the record's `fields`
    (passed as `extra={"fields": {...}}`) or, for a record logged while serving a request, its ID."""

    def __init__(self) -> None:
        super().__init__()
        self._second = (-1, "")  # the last whole second formatted, and its text: one tuple, thread-safe

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": self._utc(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        fields = record.__dict__.get("fields")
        if fields is not None:
            line.update(fields)
        elif has_request_context():
            line["request_id"] = request_id()
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        try:
            return orjson.dumps(line, default=str).decode()  # about a tenth of json.dumps' time
        except orjson.JSONEncodeError:  # what orjson refuses (an int past 64 bits): the stdlib writes
            return json.dumps(line, default=str)

    def _utc(self, created: float) -> str:
        """ISO 8601 with milliseconds, e.g. 2026-11-28T14:29:03.120Z."""
        second = int(created)
        cached_second, text = self._second
        if second != cached_second:
            text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = (second, text)
        return f"{text}.{int((created - second) * 1000):03d}Z"


class LineHandler(logging.Handler):
    """Writes each formatted record and a newline to a file descriptor (default stdout) in one
    `os.write`, and takes no lock: a StreamHandler holds one around every record, and with 16
    request threads logging a line each, waiting for it cost more than writing (measured).

    One write per line keeps lines whole: POSIX makes a pipe write of up to PIPE_BUF (4096) bytes
    atomic, and Linux serialises writes to a regular file. Access lines stay far below that
    (paths are cut at MAX_LOGGED_PATH); a longer line, such as a traceback, written while the
    reader lags, could interleave with another thread's, as it could with another worker's.
    """

    def __init__(self, fd: int | None = None) -> None:
        super().__init__()
        self.fd = 1 if fd is None else fd

    def createLock(self) -> None:  # noqa: N802 (logging's name)
        self.lock = None  # logging.Handler.acquire/release do nothing without one

    def emit(self, record: logging.LogRecord) -> None:
        try:
            data = (self.format(record) + "\n").encode()
            while data:
                data = data[os.write(self.fd, data) :]
        except Exception:  # logging's contract: report through handleError, never raise
            self.handleError(record)
