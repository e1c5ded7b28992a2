"""Another real V2 client, KServe's Python SDK (InferenceRESTClient, protocol v2), against the real server.

Its defaults send binary tensor data (with Content-Type application/octet-stream) and name the model
in the body as well as the path; both its binary and its JSON ways are tested. The SDK needs pandas<3,
so it runs in its own venv, tests/.peers/kserve (created once, from tests/requirements-kserve.txt), and
drives the server from tests/kserve_driver.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.live_server import REPO, LiveServer, running
from tests.test_v2 import FEATURES

pytestmark = pytest.mark.e2e

VENV = REPO / "tests" / ".peers" / "kserve"
REQUIREMENTS = REPO / "tests" / "requirements-kserve.txt"
STAMP = VENV / ".installed"
DRIVER = REPO / "tests" / "kserve_driver.py"
INSTALL_TIMEOUT_S = 900

NAME = "iris-logistic-regression"
ROWS = np.random.default_rng(11).uniform(0, 8, size=(20, 4))


@pytest.fixture(scope="session")
def kserve_python() -> Path:
    """The Python of a venv holding the pinned SDK, created unless it is already up to date."""
    if not (STAMP.exists() and STAMP.read_text() == REQUIREMENTS.read_text()):
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True, timeout=120)
        subprocess.run(
            [str(VENV / "bin" / "pip"), "install", "--quiet", "-r", str(REQUIREMENTS)],
            check=True,
            timeout=INSTALL_TIMEOUT_S,
        )
        STAMP.write_text(REQUIREMENTS.read_text())
    return VENV / "bin" / "python"


@pytest.fixture(scope="module")
def server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    log = tmp_path_factory.mktemp("v2-kserve-log") / "server.log"
    with running(model_dir, log, workers=1) as live:
        yield live


class Driver:
    """The SDK in a process of its venv (importing it takes seconds), given one job at a time."""

    def __init__(self, python: Path) -> None:
        self.process = subprocess.Popen(
            [str(python), "-W", "error", str(DRIVER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def infer(
        self, server: LiveServer, model: str, inputs: list[dict[str, Any]], binary: bool
    ) -> dict[str, Any]:
        """One inference by the SDK: its answer, or the status and message of the error it raised."""
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        job = {"url": server.url, "model": model, "id": "k-1", "binary": binary, "inputs": inputs}
        self.process.stdin.write(json.dumps(job) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        assert line, f"the KServe driver exited with {self.process.wait(timeout=10)}"
        answer: dict[str, Any] = json.loads(line)
        return answer

    def close(self) -> None:
        """Close its stdin, which ends it; wait for that (by its own PID) with a bound."""
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        assert self.process.stdout is not None
        self.process.stdout.close()


@pytest.fixture(scope="module")
def kserve(kserve_python: Path) -> Iterator[Driver]:
    driver = Driver(kserve_python)
    yield driver
    driver.close()


def matrix(rows: np.ndarray) -> list[dict[str, Any]]:
    return [{"name": "input-0", "shape": list(rows.shape), "datatype": "FP64", "data": rows.ravel().tolist()}]


def predicted(server: LiveServer, rows: list[Any]) -> Any:
    response = server.request("POST", "/predict", {"instances": rows})
    assert response.status == 200
    return response.json()


@pytest.mark.parametrize("binary", [True, False], ids=["default binary data", "binary_data=False"])
def test_infer_gives_what_predict_gives(kserve: Driver, server: LiveServer, binary: bool) -> None:
    answer = kserve.infer(server, NAME, matrix(ROWS), binary)
    expected = predicted(server, ROWS.tolist())
    assert (answer["status"], answer["id"], answer["model_name"]) == (200, "k-1", NAME)
    assert answer["outputs"]["predict"] == expected["predictions"]
    assert answer["outputs"]["predict_proba"] == [list(row.values()) for row in expected["probabilities"]]


def test_one_tensor_per_feature_as_from_a_dataframe(kserve: Driver, server: LiveServer) -> None:
    columns = [
        {"name": name, "shape": [len(ROWS)], "datatype": "FP64", "data": ROWS[:, index].tolist()}
        for index, name in enumerate(FEATURES)
    ]
    answer = kserve.infer(server, NAME, columns, binary=True)
    assert answer["outputs"]["predict"] == predicted(server, ROWS.tolist())["predictions"]


def test_a_bad_tensor_raises_with_the_server_message(kserve: Driver, server: LiveServer) -> None:
    answer = kserve.infer(server, NAME, matrix(ROWS[:, :3]), binary=True)
    assert answer["status"] == 400
    assert '"shape" must be [n, 4]' in answer["message"]
