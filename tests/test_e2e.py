"""The real thing: train with the command line, serve with gunicorn, predict over HTTP."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest

from skserve.artifact import MODEL_FILE, read_card
from skserve.features import features_from_card
from tests.live_server import REPO, LiveServer, failed_start, running
from tests.typed_models import presented

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("e2e-model")
    subprocess.run([sys.executable, "train.py", "--output", str(directory)], cwd=REPO, check=True)
    return directory


@pytest.fixture(scope="module")
def server(trained_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with running(trained_dir, tmp_path_factory.mktemp("log") / "server.log", workers=2) as live:
        yield live


def test_serves_the_trained_model_over_http(server: LiveServer, trained_dir: Path) -> None:
    rows = np.random.default_rng(2).uniform(0, 8, size=(50, 4))
    response = server.request("POST", "/predict", {"instances": rows.tolist()})
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    model = joblib.load(trained_dir / MODEL_FILE)
    assert body["predictions"] == model.predict(rows).tolist()
    assert [list(p.values()) for p in body["probabilities"]] == model.predict_proba(rows).tolist()
    assert body["model_version"] == read_card(trained_dir)["version"]


def test_health_ready_and_model_card(server: LiveServer, trained_dir: Path) -> None:
    assert server.request("GET", "/health").json() == {"status": "ok"}
    assert server.request("GET", "/ready").status == 200
    assert server.request("GET", "/model").json() == read_card(trained_dir)


def mixed_request(index: int) -> tuple[Any, int]:
    """Request `index` of a mixed stream of good and bad bodies, with the status each must get."""
    bad_bodies: list[tuple[Any, int]] = [
        (b"{not json", 400),
        ({"instances": [[1, 2]]}, 400),
        ({"instances": [[1, 2, 3, None]]}, 400),
        ({"rows": []}, 400),
        ({"instances": [[1.0, 2.0, 3.0, 4.0]] * 2000}, 413),
    ]
    if index % 3 == 0:
        return bad_bodies[index // 3 % len(bad_bodies)]
    row = [4.0 + index % 40 / 10, 3.0, 1.0 + index % 50 / 10, 0.1 + index % 25 / 10]
    return {"instances": [row]}, 200


def test_stays_correct_and_healthy_under_concurrent_mixed_requests(
    server: LiveServer, trained_dir: Path
) -> None:
    model = joblib.load(trained_dir / MODEL_FILE)
    requests = [mixed_request(index) for index in range(600)]

    def send(item: tuple[Any, int]) -> tuple[int, Any]:
        response = server.request("POST", "/predict", item[0])
        return response.status, response.json()

    with ThreadPoolExecutor(max_workers=12) as pool:
        results = list(pool.map(send, requests, timeout=120))
    for (body, expected_status), (status, answer) in zip(requests, results, strict=True):
        assert status == expected_status, answer
        if status == 200:
            assert answer["predictions"] == model.predict(np.array(body["instances"])).tolist()
        else:
            assert set(answer["error"]) == {"code", "message", "request_id"}
    assert server.request("GET", "/health").status == 200


def test_sigterm_stops_the_server_cleanly(trained_dir: Path, tmp_path: Path) -> None:
    with running(trained_dir, tmp_path / "server.log") as live:
        assert live.request("GET", "/ready").status == 200
        assert live.stop() == 0


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("corrupt", "does not match its card: sha256 is"),
        ("missing", "no model card at"),
    ],
)
def test_a_bad_artifact_stops_start_up_before_the_port_opens(
    trained_dir: Path, tmp_path: Path, damage: str, message: str
) -> None:
    model_dir = tmp_path / "model"
    if damage == "corrupt":
        model_dir.mkdir()
        for path in trained_dir.iterdir():
            (model_dir / path.name).write_bytes(path.read_bytes())
        with (model_dir / MODEL_FILE).open("ab") as stream:
            stream.write(b"\0")
    exit_status, log = failed_start(model_dir, tmp_path / "server.log")
    assert exit_status != 0
    assert message in log
    assert "Traceback" not in log
    assert "Listening at" not in log


def test_serves_a_regressor_with_text_and_missing_values_over_http(
    mixed_regressor_dir: Path, tmp_path: Path
) -> None:
    features = features_from_card(read_card(mixed_regressor_dir))
    rows = [
        ["Adelie", "Torgersen", 39.1, 18.7, 181, "male", 2007],
        {
            "species": None,
            "island": "Dream",
            "bill_length_mm": None,
            "bill_depth_mm": 17.4,
            "flipper_length_mm": None,
            "sex": None,
            "year": 2008,
        },
    ]
    with running(mixed_regressor_dir, tmp_path / "server.log", workers=2) as server:
        response = server.request("POST", "/predict", {"instances": rows})
        refused = server.request(
            "POST", "/predict", {"instances": [[*rows[0][:1], "Atlantis", *rows[0][2:]]]}
        )
    assert response.status == 200
    body = response.json()
    assert list(body) == ["predictions", "model_version"]
    expected = joblib.load(mixed_regressor_dir / MODEL_FILE).predict(presented(rows, features))
    assert body["predictions"] == expected.tolist()
    assert refused.status == 400
    assert refused.json()["error"]["message"] == (
        "row 0, feature 'island': expected one of its categories ['Biscoe', 'Dream', 'Torgersen'], "
        "got 'Atlantis'"
    )
