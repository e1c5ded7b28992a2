"""Another real V2 client, KServe's Python SDK (InferenceRESTClient, protocol v2), against the real server.

Its defaults send binary tensor data (with Content-Type application/octet-stream) and name the model
in the body as well as the path; both its binary and its JSON ways are tested.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
from kserve.protocol.infer_type import InferResponse

import train
from tests.live_server import LiveServer, running

pytestmark = pytest.mark.e2e

NAME = "iris-logistic-regression"
ROWS = np.random.default_rng(11).uniform(0, 8, size=(20, 4))


@pytest.fixture(scope="module")
def server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    log = tmp_path_factory.mktemp("v2-kserve-log") / "server.log"
    with running(model_dir, log, workers=1) as live:
        yield live


def infer(server: LiveServer, inputs: list[InferInput], **request: Any) -> InferResponse:
    """One inference with a fresh client, as the SDK's documentation writes it."""

    async def call() -> InferResponse:
        client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=10))
        try:
            response: InferResponse = await client.infer(
                server.url, InferRequest(model_name=NAME, infer_inputs=inputs, **request), model_name=NAME
            )
            return response
        finally:
            await client.close()

    return asyncio.run(call())


def matrix_input(rows: np.ndarray, **binary_data: bool) -> InferInput:
    tensor = InferInput("input-0", list(rows.shape), "FP64")
    tensor.set_data_from_numpy(rows, **binary_data)
    return tensor


def outputs(response: InferResponse) -> dict[str, list[Any]]:
    """Each output's values by name, BYTES as text."""
    return {
        output.name: [
            value.decode() if isinstance(value, bytes) else value for value in output.as_numpy().tolist()
        ]
        for output in response.outputs
    }


def predicted(server: LiveServer, rows: np.ndarray) -> Any:
    response = server.request("POST", "/predict", {"instances": rows.tolist()})
    assert response.status == 200
    return response.json()


@pytest.mark.parametrize("binary", [True, False], ids=["default binary data", "binary_data=False"])
def test_infer_gives_what_predict_gives(server: LiveServer, binary: bool) -> None:
    response = infer(server, [matrix_input(ROWS, binary_data=binary)], request_id="k-1")
    expected = predicted(server, ROWS)
    assert (response.model_name, response.id) == (NAME, "k-1")
    values = outputs(response)
    assert values["predict"] == expected["predictions"]
    assert values["predict_proba"] == [list(row.values()) for row in expected["probabilities"]]


def test_one_tensor_per_feature_as_from_a_dataframe(server: LiveServer) -> None:
    tensors = []
    for index, name in enumerate(train.load_bundled().features):
        tensor = InferInput(name, [len(ROWS)], "FP64")
        tensor.set_data_from_numpy(np.ascontiguousarray(ROWS[:, index]))
        tensors.append(tensor)
    assert outputs(infer(server, tensors))["predict"] == predicted(server, ROWS)["predictions"]


def test_a_bad_tensor_raises_with_the_server_message(server: LiveServer) -> None:
    with pytest.raises(httpx.HTTPStatusError) as caught:
        infer(server, [matrix_input(ROWS[:, :3])])
    assert caught.value.response.status_code == 400
    assert '"shape" must be [n, 4]' in str(caught.value)
