"""Headless Chromium driven over the DevTools protocol on a pipe: no driver, no port, no extra package."""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

CHROMIUM = shutil.which("chromium")
TIMEOUT_S = 30.0

# Puppeteer's defaults, less what concerns a visible browser: no background network traffic, no
# first-run screens, no extensions. The dead proxy and the resolver rules stop any request that is
# not to a loopback address, so a page that referred to a CDN would fail here as it would offline.
FLAGS = [
    "--headless",
    "--remote-debugging-pipe",
    "--disable-gpu",
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox cannot start; the page is our own
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-sync",
    "--disable-breakpad",
    "--disable-dev-shm-usage",
    "--metrics-recording-only",
    "--password-store=basic",
    "--use-mock-keychain",
    "--force-color-profile=srgb",
    "--hide-scrollbars",
    "--proxy-server=http://127.0.0.1:9",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]


class BrowserError(RuntimeError):
    pass


class Browser:
    """One Chromium process; `call` sends a DevTools command and returns its result."""

    def __init__(self, process: subprocess.Popen[bytes], to_browser: int, from_browser: int) -> None:
        self.process = process
        self._to_browser = to_browser
        self._from_browser = from_browser
        self._buffer = b""
        self._last_id = 0
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> Any:
        self._last_id += 1
        message: dict[str, Any] = {"id": self._last_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            reply = self._next_message(deadline)
            if reply.get("id") != self._last_id:
                self.events.append(reply)
            elif "error" in reply:
                raise BrowserError(f"{method}: {reply['error']}")
            else:
                return reply["result"]

    def wait_for_event(self, method: str, since: int = 0, timeout: float = TIMEOUT_S) -> dict[str, Any]:
        """The first event of that kind from `events[since]` on, waiting for it if need be."""
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events[since:]:
                if event.get("method") == method:
                    return event
            self.events.append(self._next_message(deadline))

    def _next_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrowserError(f"Chromium did not answer within {TIMEOUT_S} s")
            readable, _, _ = select.select([self._from_browser], [], [], remaining)
            if readable:
                chunk = os.read(self._from_browser, 1 << 16)
                if not chunk:
                    raise BrowserError(f"Chromium exited with {self.process.wait()}")
                self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        parsed: dict[str, Any] = json.loads(message)
        return parsed


@contextmanager
def chromium(profile_dir: Path, log_path: Path) -> Iterator[Browser]:
    """A headless Chromium for the block, closed (and, if need be, killed by its PID) afterwards."""
    if CHROMIUM is None:
        raise BrowserError("chromium is not installed (apt-get install chromium)")
    commands_read, commands_write = os.pipe()
    replies_read, replies_write = os.pipe()
    # Chromium reads commands on fd 3 and writes replies on fd 4: the shell moves the pipes there.
    script = 'exec "$@" 3<&0 4>&1 </dev/null >&2'
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            ["sh", "-c", script, "sh", CHROMIUM, *FLAGS, f"--user-data-dir={profile_dir}", "about:blank"],
            stdin=commands_read,
            stdout=replies_write,
            stderr=log,
        )
    os.close(commands_read)
    os.close(replies_write)
    browser = Browser(process, commands_write, replies_read)
    try:
        yield browser
    finally:
        with suppress(BrowserError):
            browser.call("Browser.close")
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        os.close(commands_write)
        os.close(replies_read)
