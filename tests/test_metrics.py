"""GET /metrics: what is counted, with bounded labels, and correct across gunicorn's workers."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from skserve import create_app, metrics
from skserve.artifact import read_card
from tests.live_server import LiveServer, running

ROWS = [[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3], [7.7, 3.0, 6.1, 2.3]]
CLASSES = ["setosa", "versicolor", "virginica"]

Samples = list[tuple[str, dict[str, str], float]]


def parse(text: str) -> Samples:
    return [
        (sample.name, sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    return sum(
        value
        for sample, sample_labels, value in samples
        if sample == name and labels.items() <= sample_labels.items()
    )


def scrape(client: FlaskClient) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200
    return parse(response.get_data(as_text=True))


class Delta:
    """Counters are per process and the tests share one: compare scrapes before and after."""

    def __init__(self, client: FlaskClient) -> None:
        self.client = client
        self.before = scrape(client)

    def __call__(self, name: str, **labels: str) -> float:
        return total(scrape(self.client), name, **labels) - total(self.before, name, **labels)


def test_metrics_is_prometheus_text(client: FlaskClient) -> None:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    names = {family.name for family in text_string_to_metric_families(response.get_data(as_text=True))}
    assert {
        "skserve_requests",
        "skserve_request_duration_seconds",
        "skserve_rows_predicted",
        "skserve_predictions",
        "skserve_batch_size",
        "skserve_errors",
        "skserve_model_info",
    } <= names


def test_model_info_names_version_sha256_and_estimator(client: FlaskClient, model_dir: Path) -> None:
    card = read_card(model_dir)
    info = [(labels, value) for name, labels, value in scrape(client) if name == "skserve_model_info"]
    assert info == [
        ({"version": card["version"], "sha256": card["sha256"], "estimator": "logistic_regression"}, 1.0)
    ]


def test_counts_requests_by_route_rule_and_status(client: FlaskClient) -> None:
    delta = Delta(client)
    for _ in range(3):
        client.post("/predict", json={"instances": ROWS})
    client.post("/predict", json={"instances": [[1, 2]]})
    client.get("/health")
    assert delta("skserve_requests_total", endpoint="/predict", status="200") == 3
    assert delta("skserve_requests_total", endpoint="/predict", status="400") == 1
    assert delta("skserve_requests_total", endpoint="/health", status="200") == 1
    assert delta("skserve_request_duration_seconds_count", endpoint="/predict") == 4
    assert delta("skserve_request_duration_seconds_bucket", endpoint="/predict", le="+Inf") == 4


def test_requests_that_match_no_route_share_one_label(client: FlaskClient) -> None:
    delta = Delta(client)
    for index in range(5):
        client.get(f"/no/such/path/{index}")
    client.get("/predict")  # a route, but not for GET: 405
    assert delta("skserve_requests_total", endpoint="unmatched", status="404") == 5
    assert delta("skserve_requests_total", endpoint="unmatched", status="405") == 1
    endpoints = {labels["endpoint"] for name, labels, _ in scrape(client) if name == "skserve_requests_total"}
    assert not any(endpoint.startswith("/no/") for endpoint in endpoints)


def test_counts_rows_and_predictions_by_class(client: FlaskClient) -> None:
    delta = Delta(client)
    client.post("/predict", json={"instances": ROWS})
    client.post("/predict", json={"instances": ROWS[:1] * 4})
    assert delta("skserve_rows_predicted_total") == 7
    assert [delta("skserve_predictions_total", **{"class": name}) for name in CLASSES] == [5, 1, 1]


def test_predictions_by_class_has_a_series_for_each_known_class_only(client: FlaskClient) -> None:
    classes = {labels["class"] for name, labels, _ in scrape(client) if name == "skserve_predictions_total"}
    assert classes == set(CLASSES)


def test_a_regressor_has_no_class_series_and_adds_up_its_predicted_values(regressor_dir: Path) -> None:
    client = create_app({"TESTING": True, "MODEL_DIR": str(regressor_dir)}).test_client()
    delta = Delta(client)
    rows = [[0.05] * 10, [-1.0] * 10]  # diabetes' features are scaled to about +-0.1
    answers = [client.post("/predict", json={"instances": rows}).get_json()["predictions"] for _ in range(2)]
    assert delta("skserve_rows_predicted_total") == 4
    assert delta("skserve_predicted_values") == pytest.approx(math.fsum(answers[0] + answers[1]))
    assert min(answers[0]) < 0  # a sum that falls as well as rises
    assert not [name for name, _, _ in scrape(client) if name == "skserve_predictions_total"]


@pytest.mark.parametrize(
    ("send", "code"),
    [
        (lambda c: c.post("/predict", data=b"{", content_type="application/json"), "invalid_input"),
        (lambda c: c.post("/predict", data=b"{}", content_type="text/plain"), "unsupported_media_type"),
        (lambda c: c.get("/nope"), "not_found"),
        (lambda c: c.delete("/metrics"), "method_not_allowed"),
    ],
)
def test_counts_errors_by_code(client: FlaskClient, send: Any, code: str) -> None:
    delta = Delta(client)
    send(client)
    assert delta("skserve_errors_total", code=code) == 1
    assert delta("skserve_errors_total") == 1


def test_batch_sizes_are_observed_through_observe_batch(client: FlaskClient) -> None:
    delta = Delta(client)
    metrics.observe_batch(3)
    metrics.observe_batch(40)
    assert delta("skserve_batch_size_count") == 2
    assert delta("skserve_batch_size_sum") == 43
    assert delta("skserve_batch_size_bucket", le="4.0") == 1


@pytest.mark.parametrize(
    "headers",
    [
        {"Accept": "application/openmetrics-text; version=banana"},
        {"Accept": "text/plain; version=1.0.0; escaping=%%%"},
        {"Accept": "\x00\x01"},
    ],
)
def test_metrics_ignores_what_a_scraper_asks_for(client: FlaskClient, headers: dict[str, str]) -> None:
    response = client.get("/metrics?name[]=x&format=openmetrics", headers=headers)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")


# --- the real server: three gunicorn workers adding up through the multiprocess directory ---


def predict_concurrently(server: LiveServer, count: int) -> None:
    def send(index: int) -> int:
        return server.request("POST", "/predict", {"instances": ROWS[index % 3 : index % 3 + 1]}).status

    with ThreadPoolExecutor(max_workers=6) as pool:
        assert set(pool.map(send, range(count), timeout=60)) == {200}


def live_scrape(server: LiveServer) -> Samples:
    response = server.request("GET", "/metrics")
    assert response.status == 200
    return parse(response.body.decode())


def predict_pids(server: LiveServer) -> list[int]:
    """The workers that served /predict requests, from the access log, busiest first."""
    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    pids = Counter(line["pid"] for line in lines if line.get("path") == "/predict")
    return [pid for pid, _ in pids.most_common()]


def worker_pids(master: int) -> set[int]:
    """gunicorn's workers: the processes whose parent is the master."""
    pids = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:  # the process ended while we looked
            continue
        if int(fields[1]) == master:
            pids.add(int(stat.parent.name))
    return pids


def wait_for_workers(master: int, count: int, gone: int, timeout: float = 30.0) -> set[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = worker_pids(master)
        if len(pids) == count and gone not in pids:
            return pids
        time.sleep(0.1)
    raise AssertionError(f"gunicorn did not replace worker {gone} within {timeout} s")


@pytest.mark.e2e
def test_counts_add_up_across_workers_and_survive_a_worker_restart(model_dir: Path, tmp_path: Path) -> None:
    sent, more = 60, 30
    tmpdir_env = tmp_path / "tmp"  # the server's TMPDIR, to watch its metrics directory come and go
    tmpdir_env.mkdir()
    with running(model_dir, tmp_path / "server.log", workers=3, TMPDIR=str(tmpdir_env)) as server:
        assert [path.name[:16] for path in tmpdir_env.iterdir()] == ["skserve-metrics-"]
        predict_concurrently(server, sent)
        samples = live_scrape(server)
        assert total(samples, "skserve_requests_total", endpoint="/predict") == sent
        assert total(samples, "skserve_rows_predicted_total") == sent
        assert total(samples, "skserve_predictions_total") == sent
        assert total(samples, "skserve_request_duration_seconds_count", endpoint="/predict") == sent

        served_by = predict_pids(server)
        assert len(served_by) >= 2, "the requests should have been spread over several workers"

        # SIGKILL: the worker cannot tidy up; what it counted must stay counted, and once.
        master = server.process.pid
        victim = served_by[0]
        os.kill(victim, signal.SIGKILL)
        wait_for_workers(master, 3, gone=victim)
        predict_concurrently(server, more)
        samples = live_scrape(server)
        assert total(samples, "skserve_requests_total", endpoint="/predict") == sent + more
        assert total(samples, "skserve_rows_predicted_total") == sent + more
        assert total(samples, "skserve_model_info") == 1
    assert server.process.returncode == 0
    assert list(tmpdir_env.iterdir()) == []  # the metrics directory went with the server


@pytest.mark.e2e
def test_a_given_metrics_dir_is_emptied_at_start_and_exit_and_kept(model_dir: Path, tmp_path: Path) -> None:
    given = tmp_path / "metrics"
    stash = tmp_path / "stash"
    with running(model_dir, tmp_path / "first.log", PROMETHEUS_MULTIPROC_DIR=str(given)) as server:
        predict_concurrently(server, 5)
        assert total(live_scrape(server), "skserve_requests_total", endpoint="/predict") == 5
        shutil.copytree(given, stash)  # what a killed server would leave behind
    assert given.is_dir()
    assert list(given.iterdir()) == []
    shutil.copytree(stash, given, dirs_exist_ok=True)
    with running(model_dir, tmp_path / "second.log", PROMETHEUS_MULTIPROC_DIR=str(given)) as server:
        assert total(live_scrape(server), "skserve_requests_total", endpoint="/predict") == 0
