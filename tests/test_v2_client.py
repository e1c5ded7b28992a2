"""A real V2 client, tritonclient's HTTP InferenceServerClient, against the real server (gunicorn).

tritonclient sends and asks for binary tensor data unless told otherwise; both ways are tested.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from skserve.artifact import read_card
from tests.live_server import LiveServer, running
from tests.test_v2 import FEATURES

pytestmark = pytest.mark.e2e

NAME = "iris"  # set with SKSERVE_MODEL_NAME, so the environment path is exercised too
ROWS = np.random.default_rng(7).uniform(0, 8, size=(25, 4))


@pytest.fixture(scope="module")
def server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    log = tmp_path_factory.mktemp("v2-log") / "server.log"
    with running(model_dir, log, workers=1, SKSERVE_MODEL_NAME=NAME) as live:
        yield live


@pytest.fixture(scope="module")
def client(server: LiveServer) -> Iterator[triton.InferenceServerClient]:
    connection = triton.InferenceServerClient(
        server.url.removeprefix("http://"), connection_timeout=10.0, network_timeout=10.0
    )
    yield connection
    connection.close()


@pytest.fixture(scope="module")
def version(model_dir: Path) -> str:
    return str(read_card(model_dir)["version"])


def matrix_input(rows: np.ndarray, datatype: str = "FP64", **binary_data: bool) -> triton.InferInput:
    """The rows as the one "input-0" tensor; binary data unless `binary_data=False` is given."""
    tensor = triton.InferInput("input-0", list(rows.shape), datatype)
    tensor.set_data_from_numpy(rows, **binary_data)
    return tensor


def labels(result: triton.InferResult) -> list[Any]:
    """The predict output as text: tritonclient gives BYTES as bytes when they came binary."""
    return [label.decode() if isinstance(label, bytes) else label for label in result.as_numpy("predict")]


def predicted(server: LiveServer, rows: np.ndarray) -> Any:
    """What POST /predict answers for the same rows."""
    response = server.request("POST", "/predict", {"instances": rows.tolist()})
    assert response.status == 200
    return response.json()


def test_server_is_live_and_ready_with_metadata(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.get_server_metadata() == {
        "name": "skserve",
        "version": "0.1.0",
        "extensions": ["binary_tensor_data"],
    }


def test_model_is_ready_by_name_and_version(client: triton.InferenceServerClient, version: str) -> None:
    assert client.is_model_ready(NAME)
    assert client.is_model_ready(NAME, version)
    assert not client.is_model_ready("iris-logistic-regression")  # the card's name, overridden by the env
    assert not client.is_model_ready(NAME, "0")


def test_model_metadata(client: triton.InferenceServerClient, server: LiveServer, version: str) -> None:
    metadata = client.get_model_metadata(NAME, version)
    assert metadata["name"] == NAME
    assert metadata["versions"] == [version]
    assert metadata["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}]
    assert metadata["outputs"] == [
        {"name": "predict", "datatype": "BYTES", "shape": [-1]},
        {"name": "predict_proba", "datatype": "FP64", "shape": [-1, 3]},
    ]
    assert server.request("GET", "/model").json()["name"] == NAME


def test_infer_with_the_defaults_gives_both_outputs_equal_to_predict(
    client: triton.InferenceServerClient, server: LiveServer, version: str
) -> None:
    """tritonclient's defaults: binary input data, and binary_data_output for every output."""
    tensor = triton.InferInput("input-0", list(ROWS.shape), "FP64")
    tensor.set_data_from_numpy(ROWS)
    result = client.infer(NAME, [tensor], request_id="batch-1")
    expected = predicted(server, ROWS)
    response = result.get_response()
    assert (response["model_name"], response["model_version"], response["id"]) == (NAME, version, "batch-1")
    assert all("binary_data_size" in output["parameters"] for output in response["outputs"])
    assert labels(result) == expected["predictions"]
    probabilities = result.as_numpy("predict_proba")
    assert probabilities.dtype == np.float64
    assert probabilities.tolist() == [list(row.values()) for row in expected["probabilities"]]


@pytest.mark.parametrize("binary_input", [True, False])
@pytest.mark.parametrize("binary_output", [True, False])
def test_infer_with_json_or_binary_data_each_way_gives_the_same_answer(
    client: triton.InferenceServerClient, server: LiveServer, binary_input: bool, binary_output: bool
) -> None:
    wanted = [
        triton.InferRequestedOutput(name, binary_data=binary_output) for name in ("predict_proba", "predict")
    ]
    result = client.infer(NAME, [matrix_input(ROWS, binary_data=binary_input)], outputs=wanted)
    outputs = result.get_response()["outputs"]
    assert [output["name"] for output in outputs] == ["predict_proba", "predict"]
    assert all(("data" in output) is not binary_output for output in outputs)
    expected = predicted(server, ROWS)
    assert labels(result) == expected["predictions"]
    assert result.as_numpy("predict_proba").tolist() == [
        list(row.values()) for row in expected["probabilities"]
    ]


def test_one_tensor_per_feature_gives_the_same_answer(
    client: triton.InferenceServerClient, server: LiveServer
) -> None:
    tensors = [triton.InferInput(name, [len(ROWS)], "FP64") for name in FEATURES]
    for index, tensor in enumerate(tensors):
        tensor.set_data_from_numpy(np.ascontiguousarray(ROWS[:, index]))
    assert labels(client.infer(NAME, tensors)) == predicted(server, ROWS)["predictions"]


def test_infer_returns_only_the_output_asked_for(
    client: triton.InferenceServerClient, server: LiveServer, version: str
) -> None:
    wanted = [triton.InferRequestedOutput("predict")]
    result = client.infer(NAME, [matrix_input(ROWS[:3])], model_version=version, outputs=wanted)
    assert result.as_numpy("predict_proba") is None
    assert labels(result) == predicted(server, ROWS[:3])["predictions"]


def test_unknown_model_raises_404(client: triton.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as caught:
        client.infer("nope", [matrix_input(ROWS)])
    assert caught.value.status() == "404"
    assert caught.value.message() == f"unknown model 'nope'; this server serves '{NAME}'"
    with pytest.raises(InferenceServerException, match="has no version '0'"):
        client.get_model_metadata(NAME, "0")


@pytest.mark.parametrize(
    ("tensor", "status", "message"),
    [
        (lambda: matrix_input(ROWS[:, :3]), "400", '"shape" must be [n, 4]'),
        (lambda: matrix_input(ROWS[:, :3], binary_data=False), "400", '"shape" must be [n, 4]'),
        (lambda: matrix_input(ROWS.astype(np.float32), "FP32"), "400", "expected datatype FP64, got 'FP32'"),
        (lambda: matrix_input(ROWS * np.inf), "400", "value is too large for a 64-bit float"),
    ],
)
def test_bad_input_raises_with_the_server_message(
    client: triton.InferenceServerClient, tensor: Any, status: str, message: str
) -> None:
    with pytest.raises(InferenceServerException) as caught:
        client.infer(NAME, [tensor()])
    assert caught.value.status() == status
    assert message in caught.value.message()


def test_the_server_still_serves_after_the_errors(client: triton.InferenceServerClient) -> None:
    assert client.infer(NAME, [matrix_input(ROWS[:1])]).as_numpy("predict").shape == (1,)


def test_concurrent_v2_and_predict_requests_each_get_their_own_rows(server: LiveServer) -> None:
    """With /predict and /v2 sharing the micro-batcher, each answer must hold its own rows' results."""
    batches = [np.random.default_rng(seed).uniform(0, 8, size=(1 + seed % 5, 4)) for seed in range(40)]
    expected = [predicted(server, rows)["predictions"] for rows in batches]

    def send(index: int) -> list[Any]:
        rows = batches[index]
        if index % 2:
            return list(predicted(server, rows)["predictions"])
        body = {
            "inputs": [
                {"name": "input-0", "shape": list(rows.shape), "datatype": "FP64", "data": rows.tolist()}
            ]
        }
        response = server.request("POST", f"/v2/models/{NAME}/infer", body)
        assert response.status == 200
        return list(response.json()["outputs"][0]["data"])

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert list(pool.map(send, range(len(batches)))) == expected
