"""Drain on SIGTERM: readiness fails at once, requests are still answered, then gunicorn stops with 0."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from skserve import drain
from tests.live_server import LiveServer, running

DRAIN_S = 3.0
ROW = [5.9, 3.0, 5.1, 1.8]


def test_readiness_fails_with_503_while_draining_and_other_routes_still_answer(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert client.get("/ready").status_code == 200
    assert client.get("/v2/health/ready").get_json() == {"ready": True}
    monkeypatch.setattr(drain, "draining", lambda: True)
    ready = client.get("/ready")
    assert ready.status_code == 503
    assert ready.get_json()["status"] == "draining"
    v2_ready = client.get("/v2/health/ready")
    assert (v2_ready.status_code, v2_ready.get_json()) == (503, {"ready": False})
    assert client.get("/health").status_code == 200  # alive: the process must not be restarted
    assert client.post("/predict", json={"instances": [ROW]}).status_code == 200


def status_of(server: LiveServer, method: str, path: str) -> int:
    body = {"instances": [ROW]} if method == "POST" else None
    return server.request(method, path, body).status


@pytest.mark.e2e
def test_sigterm_fails_readiness_keeps_answering_for_the_drain_then_exits_0(
    model_dir: Path, tmp_path: Path
) -> None:
    with running(model_dir, tmp_path / "server.log", workers=2, SKSERVE_DRAIN_SECONDS=str(DRAIN_S)) as live:
        live.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        seen: list[tuple[float, int, int, int]] = []  # (seconds after SIGTERM, /ready, v2 ready, /predict)
        while time.monotonic() - signalled < DRAIN_S - 0.5 and len(seen) < 200:
            seen.append(
                (
                    time.monotonic() - signalled,
                    status_of(live, "GET", "/ready"),
                    status_of(live, "GET", "/v2/health/ready"),
                    status_of(live, "POST", "/predict"),
                )
            )
            time.sleep(0.05)
        exit_status = live.process.wait(timeout=DRAIN_S + 10)
        stopped_after = time.monotonic() - signalled
        log = live.log()

    assert exit_status == 0, log
    assert len(seen) >= 5
    # Both workers (requests go to either) see the master's flag within a moment of the signal.
    assert all(statuses[1:] == (503, 503, 200) for statuses in seen if statuses[0] > 0.2), seen
    assert all(statuses[3] == 200 for statuses in seen)
    assert DRAIN_S <= stopped_after < DRAIN_S + 5, log
    assert f"Draining for {DRAIN_S} s" in log


@pytest.mark.e2e
@pytest.mark.parametrize("second", [signal.SIGINT, signal.SIGTERM])
def test_sigint_or_a_second_sigterm_during_the_drain_stops_at_once(
    model_dir: Path, tmp_path: Path, second: signal.Signals
) -> None:
    with running(model_dir, tmp_path / "server.log", SKSERVE_DRAIN_SECONDS="30") as live:
        live.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while status_of(live, "GET", "/ready") != 503:
            assert time.monotonic() < deadline, live.log()
            time.sleep(0.05)
        live.process.send_signal(second)
        signalled = time.monotonic()
        exit_status = live.process.wait(timeout=20)
        assert exit_status == 0, live.log()
        assert time.monotonic() - signalled < 10  # the 30 s drain was cut short
