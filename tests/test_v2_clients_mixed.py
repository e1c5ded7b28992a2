"""Both real V2 clients, tritonclient and KServe's SDK, on a model with text and missing values (gunicorn)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import tritonclient.http as triton

from skserve.model import LoadedModel
from tests.live_server import LiveServer, running
from tests.test_v2_client import labels
from tests.test_v2_kserve import Driver, kserve, kserve_python, predicted
from tests.test_v2_mixed import column_array, sample_rows

pytestmark = pytest.mark.e2e
__all__ = ["kserve", "kserve_python"]  # the SDK's fixtures, shared with tests/test_v2_kserve.py


@pytest.fixture(scope="module")
def mixed(
    mixed_classifier_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LiveServer, LoadedModel]]:
    log = tmp_path_factory.mktemp("v2-mixed-log") / "server.log"
    with running(mixed_classifier_dir, log, workers=1) as live:
        yield live, LoadedModel.load(mixed_classifier_dir)


@pytest.mark.parametrize("binary", [True, False], ids=["defaults", "binary_data=False"])
def test_tritonclient_gives_what_predict_gives(mixed: tuple[LiveServer, LoadedModel], binary: bool) -> None:
    """One tensor per feature as the metadata lists them, text as BYTES; in binary data a missing
    value is NaN or empty text (JSON has no NaN, so those rows have none)."""
    server, model = mixed
    client = triton.InferenceServerClient(server.url.removeprefix("http://"), network_timeout=10.0)
    rows = sample_rows(model.features, 12, missing=binary)
    inputs = client.get_model_metadata(model.name)["inputs"]
    assert [tensor["name"] for tensor in inputs] == model.feature_names
    assert {tensor["datatype"] for tensor in inputs} == {"FP64", "BYTES"}
    tensors = []
    for index, tensor in enumerate(inputs):
        infer_input = triton.InferInput(tensor["name"], [len(rows)], tensor["datatype"])
        values = column_array(rows, index, tensor["datatype"])
        if binary:
            infer_input.set_data_from_numpy(values)
        else:
            infer_input.set_data_from_numpy(values, binary_data=False)
        tensors.append(infer_input)
    result = client.infer(model.name, tensors)
    client.close()
    expected = server.request("POST", "/predict", {"instances": rows}).json()
    assert labels(result) == expected["predictions"]
    assert result.as_numpy("predict_proba").tolist() == [
        list(row.values()) for row in expected["probabilities"]
    ]


@pytest.mark.parametrize("binary", [True, False], ids=["default binary data", "binary_data=False"])
def test_kserves_sdk_gives_what_predict_gives(
    kserve: Driver, mixed: tuple[LiveServer, LoadedModel], binary: bool
) -> None:
    """A DataFrame's columns as one tensor each, text as BYTES; in binary data a missing value is NaN
    or empty text (JSON has no empty-text spelling of it, so those rows have none)."""
    server, model = mixed
    rows = sample_rows(model.features, 12, missing=binary)
    inputs = server.request("GET", f"/v2/models/{model.name}").json()["inputs"]
    tensors = [
        {**tensor, "shape": [len(rows)], "data": column_array(rows, index, tensor["datatype"]).tolist()}
        for index, tensor in enumerate(inputs)
    ]
    answer = kserve.infer(server, model.name, tensors, binary)
    expected = predicted(server, rows)
    assert answer["status"] == 200, answer
    assert answer["outputs"]["predict"] == expected["predictions"]
    assert answer["outputs"]["predict_proba"] == [list(row.values()) for row in expected["probabilities"]]
