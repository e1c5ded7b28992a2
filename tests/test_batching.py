"""Micro-batching: answers routed exactly, failures isolated, bounds kept, drained on close."""

from __future__ import annotations

import http.client
import json
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from flask import Flask

import train
from skserve import create_app
from skserve.artifact import MODEL_FILE
from skserve.batching import Batcher
from skserve.model import LoadedModel
from skserve.web import BATCHER_EXTENSION
from tests.conftest import PENGUINS_CSV, save_model
from tests.live_server import spawn, wait_ready

DEADLINE_S = 30.0  # bounds every wait in these tests; none of them asserts how long anything took


class Gate:
    """Wraps a score function so the first call blocks until released: what others submit meanwhile
    queues up, which makes the next batch's make-up certain instead of a matter of timing."""

    def __init__(self, score: Callable[[np.ndarray], np.ndarray]) -> None:
        self.score = score
        self.release = threading.Event()
        self.entered = threading.Event()
        self.calls: list[tuple[int, str]] = []  # (rows, thread name) of every call

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        self.calls.append((len(rows), threading.current_thread().name))
        if not self.entered.is_set():
            self.entered.set()
            assert self.release.wait(DEADLINE_S)
        return self.score(rows)


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, "gave up waiting"
        time.sleep(0.001)


@contextmanager
def gated_batch(batcher: Batcher, gate: Gate, batches: list[np.ndarray]) -> Iterator[list[Future[Any]]]:
    """Submit a first matrix (whose call the gate holds), then `batches` while it is held; release the
    gate after the block. Yields the futures of `batches`, queued in their order, whose answers then
    come from the batches that order makes."""
    with ThreadPoolExecutor(max_workers=len(batches) + 1) as pool:
        first = pool.submit(batcher.submit, np.zeros((1, 4)))
        assert gate.entered.wait(DEADLINE_S)
        futures: list[Future[Any]] = []
        for rows in batches:  # one at a time, so the queue holds them in the order given
            futures.append(pool.submit(batcher.submit, rows))
            wait_until(lambda: batcher.queued == len(futures))
        yield futures
        gate.release.set()
        first.exception(DEADLINE_S)  # waits; the first call may fail like the rest


def distinct_requests(count: int, seed: int = 0) -> list[np.ndarray]:
    """`count` requests of 1 to 5 rows each, no row shared between requests."""
    rng = np.random.default_rng(seed)
    return [rng.uniform(0, 8, size=(int(rng.integers(1, 6)), 4)) for _ in range(count)]


@pytest.fixture(scope="module", params=train.MODELS)
def model(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    return LoadedModel.load(save_model(tmp_path_factory.mktemp(request.param), request.param))


def test_concurrent_requests_each_get_exactly_the_answer_for_their_own_rows(model: LoadedModel) -> None:
    gate = Gate(model.outputs)
    batch_rows: list[int] = []
    batcher = Batcher(gate, max_rows=1000, max_wait_s=0.001, on_batch=batch_rows.append)
    requests = distinct_requests(60)
    with gated_batch(batcher, gate, requests) as futures:
        pass
    answers = [future.result(DEADLINE_S) for future in futures]
    assert batch_rows[-1] == sum(len(rows) for rows in requests)  # all 60 shared one call
    for rows, answer in zip(requests, answers, strict=True):
        alone = model.outputs(rows)
        assert answer.tobytes() == alone.tobytes()  # every bit, not approximately
        assert model.prediction_from(answer).labels == model.estimator.predict(rows).tolist()
    batcher.close()


def test_a_regressors_one_dimensional_answers_are_sliced_to_each_request(mixed_regressor_dir: Path) -> None:
    """Predictions of a regressor (1-D, object rows with text and NaN) go back request by request."""
    model = LoadedModel.load(mixed_regressor_dir)
    gate = Gate(model.outputs)
    batch_rows: list[int] = []
    batcher = Batcher(gate, max_rows=1000, max_wait_s=0.001, on_batch=batch_rows.append)
    rows = train.load_csv(PENGUINS_CSV, "body_mass_g").X[:90]
    requests = np.array_split(rows, 30)
    with gated_batch(batcher, gate, requests) as futures:
        pass
    answers = [future.result(DEADLINE_S) for future in futures]
    assert batch_rows[-1] == len(rows)  # all 30 shared one call
    assert np.concatenate(answers).tobytes() == model.outputs(rows).tobytes()
    for request, answer in zip(requests, answers, strict=True):
        assert answer.shape == (len(request),)
        assert model.prediction_from(answer).labels == pytest.approx(
            model.estimator.predict(request).tolist()
        )
    batcher.close()


def test_a_row_scored_alone_gets_the_bits_it_gets_inside_any_batch(model: LoadedModel) -> None:
    """Why a single row is scored as two copies: BLAS gemv (one row) and gemm (more) differ in the
    last bits for linear models, and a request's answer must not depend on its neighbours."""
    rows = np.random.default_rng(3).uniform(0, 8, size=(200, 4))
    together = model.estimator.predict_proba(rows)
    alone = np.vstack([model.outputs(rows[i : i + 1]) for i in range(len(rows))])
    assert alone.tobytes() == together.tobytes()


def test_many_threads_under_real_contention_all_get_their_own_answers(model: LoadedModel) -> None:
    batch_rows: list[int] = []
    batcher = Batcher(model.outputs, max_rows=64, max_wait_s=0.002, on_batch=batch_rows.append)
    requests = distinct_requests(120, seed=1)
    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(batcher.submit, requests, timeout=DEADLINE_S))
    for rows, answer in zip(requests, answers, strict=True):
        assert answer.tobytes() == model.outputs(rows).tobytes()
    assert sum(batch_rows) == sum(len(rows) for rows in requests)
    assert max(batch_rows) <= 64
    batcher.close()


def poisoned(score: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    """A model that fails on any call containing a row of -1s, as a model can on an input it cannot handle."""

    def call(rows: np.ndarray) -> np.ndarray:
        if (rows == -1).all(axis=1).any():
            raise ValueError("cannot handle -1")
        return score(rows)

    return call


def test_a_request_the_model_fails_on_fails_alone_and_its_neighbours_succeed(model: LoadedModel) -> None:
    gate = Gate(poisoned(model.outputs))
    batcher = Batcher(gate, max_rows=1000, max_wait_s=0.001)
    requests = distinct_requests(8)
    requests[3] = np.full((2, 4), -1.0)
    with gated_batch(batcher, gate, requests) as futures:
        pass
    with pytest.raises(ValueError, match="cannot handle -1"):
        futures[3].result(DEADLINE_S)
    for index, (rows, future) in enumerate(zip(requests, futures, strict=True)):
        if index != 3:
            assert future.result(DEADLINE_S).tobytes() == model.outputs(rows).tobytes()
    batcher.close()


def test_when_the_model_fails_every_waiter_gets_the_error_and_none_hangs() -> None:
    def broken(rows: np.ndarray) -> np.ndarray:
        raise RuntimeError("model is broken")

    gate = Gate(broken)
    batcher = Batcher(gate, max_rows=1000, max_wait_s=0.001)
    with gated_batch(batcher, gate, distinct_requests(10)) as futures:
        pass
    for future in futures:
        with pytest.raises(RuntimeError, match="model is broken"):
            future.result(DEADLINE_S)
    batcher.close()


def test_a_batch_never_holds_more_than_max_rows_and_a_larger_request_goes_alone() -> None:
    gate = Gate(lambda rows: rows * 2)
    batch_rows: list[int] = []
    batcher = Batcher(gate, max_rows=10, max_wait_s=0.001, on_batch=batch_rows.append)
    requests = [np.full((3, 4), float(i)) for i in range(8)] + [np.full((25, 4), 99.0)]
    with gated_batch(batcher, gate, requests) as futures:
        pass
    for rows, future in zip(requests, futures, strict=True):
        assert future.result(DEADLINE_S).tolist() == (rows * 2).tolist()
    after_gate = batch_rows[1:]
    assert sorted(after_gate) == [6, 9, 9, 25]  # 3+3+3 rows fit in 10, a fourth would not
    batcher.close()


def test_a_lone_caller_is_scored_at_once_in_its_own_thread_without_waiting() -> None:
    gate = Gate(lambda rows: rows + 1)
    gate.release.set()
    batch_rows: list[int] = []
    # An hour's wait would hang this test if a lone request ever waited for company.
    batcher = Batcher(gate, max_rows=1000, max_wait_s=3600, on_batch=batch_rows.append)
    for value in range(5):
        assert batcher.submit(np.full((1, 4), float(value))).tolist() == [[value + 1.0] * 4]
    assert batch_rows == [1] * 5
    assert {thread for _, thread in gate.calls} == {threading.current_thread().name}
    batcher.close()


def test_after_a_batch_of_several_it_waits_for_that_many_again() -> None:
    gate = Gate(lambda rows: rows)
    batch_rows: list[int] = []
    batcher = Batcher(gate, max_rows=1000, max_wait_s=3600, on_batch=batch_rows.append)
    with gated_batch(batcher, gate, [np.full((1, 4), float(i)) for i in range(4)]):
        pass
    assert batch_rows == [1, 4]
    # The four callers come back one by one; they share one call rather than the first going alone.
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(
            pool.map(batcher.submit, [np.full((1, 4), float(i)) for i in range(4)], timeout=DEADLINE_S)
        )
    assert [answer.tolist() for answer in answers] == [[[float(i)] * 4] for i in range(4)]
    assert batch_rows == [1, 4, 4]
    batcher.close()


def test_when_fewer_callers_come_back_it_stops_waiting_for_them() -> None:
    gate = Gate(lambda rows: rows)
    batch_rows: list[int] = []
    batcher = Batcher(gate, max_rows=1000, max_wait_s=0.01, on_batch=batch_rows.append)
    with gated_batch(batcher, gate, [np.ones((1, 4))] * 4):
        pass
    batcher.submit(np.ones((1, 4)))  # waits out the window once, in vain
    batcher.submit(np.ones((1, 4)))  # then a lone caller is scored at once again, in its own thread
    assert batch_rows == [1, 4, 1, 1]
    assert gate.calls[-1][1] == threading.current_thread().name
    assert gate.calls[-2][1] == "skserve-batcher"
    batcher.close()


def test_close_answers_every_queued_request_and_later_ones_still_get_answers() -> None:
    gate = Gate(lambda rows: rows * 3)
    batcher = Batcher(gate, max_rows=1000, max_wait_s=0.001)
    requests = distinct_requests(6)
    with gated_batch(batcher, gate, requests) as futures:
        closer = threading.Thread(target=batcher.close)
        closer.start()  # closing while requests are queued: they must still be answered
    closer.join(DEADLINE_S)
    assert not closer.is_alive()
    for rows, future in zip(requests, futures, strict=True):
        assert future.result(DEADLINE_S).tolist() == (rows * 3).tolist()
    assert batcher.submit(np.ones((2, 4))).tolist() == [[3.0] * 4] * 2
    assert gate.calls[-1][1] == threading.current_thread().name


def test_rejects_impossible_bounds() -> None:
    with pytest.raises(ValueError, match="max_rows >= 1"):
        Batcher(lambda rows: rows, max_rows=0, max_wait_s=0.001)


# Through the app: the /predict view, its settings, and batching off.

BODIES: list[Any] = [
    {"instances": [[5.1, 3.5, 1.4, 0.2]]},
    {"instances": [[6.2, 2.9, 4.3, 1.3], [7.7, 3.0, 6.1, 2.3]]},
    {"instances": [{"sepal length (cm)": 5.0, "sepal width (cm)": 2.0, "petal length (cm)": 3.5,
                    "petal width (cm)": 1.0}]},
    {"instances": [[1e308, 1e308, -1e308, 1e308]]},  # overflows inside the model: 400
    {"instances": [[1, 2, 3]]},  # refused by validation: 400
]  # fmt: skip


def app_for(model_dir: Path, **config: Any) -> Flask:
    return create_app({"TESTING": True, "MODEL_DIR": str(model_dir), **config})


def without_request_id(body: dict[str, Any]) -> dict[str, Any]:
    if "error" in body:
        return {**body, "error": {**body["error"], "request_id": None}}
    return body


def test_batching_off_answers_exactly_as_batching_on(model_dir: Path) -> None:
    on, off = app_for(model_dir).test_client(), app_for(model_dir, BATCHING=False).test_client()
    assert off.application.extensions.get(BATCHER_EXTENSION) is None
    for body in BODIES:
        answer_on, answer_off = on.post("/predict", json=body), off.post("/predict", json=body)
        assert answer_on.status_code == answer_off.status_code
        assert without_request_id(answer_on.get_json()) == without_request_id(answer_off.get_json())


def test_settings_reach_the_batcher(model_dir: Path) -> None:
    batcher = app_for(model_dir, BATCH_WAIT_MS=7, MAX_BATCH_ROWS=50).extensions[BATCHER_EXTENSION]
    assert (batcher.max_wait_s, batcher.max_rows) == (0.007, 50)


def test_a_bad_request_in_a_batch_of_good_ones_fails_alone(tmp_path: Path) -> None:
    """A forest casts to float32: 3.5e38 passes validation, then fails the model call it shares."""
    model_dir = save_model(tmp_path, "random_forest")
    app = app_for(model_dir)
    batcher: Batcher = app.extensions[BATCHER_EXTENSION]
    gate = Gate(batcher.score)
    batcher.score = gate
    estimator = joblib.load(model_dir / MODEL_FILE)
    requests = [[[4.0 + i / 10, 3.0, 1.0 + i / 5, 0.1 + i / 10]] for i in range(12)]
    requests[5] = [[3.5e38, 1.0, 1.0, 1.0]]

    def post(rows: list[list[float]]) -> Any:
        return app.test_client().post("/predict", json={"instances": rows})

    with ThreadPoolExecutor(max_workers=13) as pool:
        first = pool.submit(post, [[5.0, 3.0, 1.5, 0.2]])
        assert gate.entered.wait(DEADLINE_S)
        futures = [pool.submit(post, rows) for rows in requests]
        wait_until(lambda: batcher.queued == len(requests))
        gate.release.set()
        assert first.result(DEADLINE_S).status_code == 200
        responses = [future.result(DEADLINE_S) for future in futures]
    assert gate.calls[1][0] == len(requests)  # they did share a call, which failed
    for index, (rows, response) in enumerate(zip(requests, responses, strict=True)):
        if index == 5:
            assert response.status_code == 400
            assert "values too large for the model" in response.get_json()["error"]["message"]
        else:
            assert response.status_code == 200
            assert response.get_json()["predictions"] == estimator.predict(np.array(rows)).tolist()


@pytest.mark.e2e
def test_sigterm_while_requests_share_batches_answers_every_one(tmp_path: Path) -> None:
    """Graceful stop with requests in flight on 16 kept-alive connections: every one gets its answer."""
    model_dir = save_model(tmp_path / "model", "random_forest")
    estimator = joblib.load(model_dir / MODEL_FILE)
    requests = distinct_requests(16, seed=7)
    requests = [np.repeat(rows, 40, axis=0) for rows in requests]  # 40-200 rows each: batches take a while
    server = spawn(model_dir, tmp_path / "server.log")
    host, port = server.url.removeprefix("http://").split(":")
    connections = [http.client.HTTPConnection(host, int(port), timeout=DEADLINE_S) for _ in requests]
    try:
        wait_ready(server)
        for connection in connections:  # open and use each connection first: all are accepted
            connection.request("GET", "/health")
            assert connection.getresponse().read() == b'{"status":"ok"}'
        for connection, rows in zip(connections, requests, strict=True):
            body = json.dumps({"instances": rows.tolist()})
            connection.request("POST", "/predict", body, {"Content-Type": "application/json"})
        server.process.send_signal(signal.SIGTERM)
        for connection, rows in zip(connections, requests, strict=True):
            response = connection.getresponse()
            assert response.status == 200
            assert json.loads(response.read())["predictions"] == estimator.predict(rows).tolist()
        assert server.process.wait(DEADLINE_S) == 0
    finally:
        for connection in connections:
            connection.close()
        server.stop()
