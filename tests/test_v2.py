"""The Open Inference Protocol (V2) routes through Flask's test client: metadata, inference, errors."""

from __future__ import annotations

import gzip
import io
import json
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import deserialize_bytes_tensor

import train
from skserve import create_app, v2_protocol
from skserve.artifact import read_card, write_artifact
from tests.conftest import SECRET_FAILURE
from tests.live_server import REPO

NAME = "iris-logistic-regression"  # what train.py names the fixture's model
INFER = f"/v2/models/{NAME}/infer"
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3], [7.7, 3.0, 6.1, 2.3]]
CLASSES = ["setosa", "versicolor", "virginica"]
FEATURES = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]


def tensor(rows: Any = ROWS, **overrides: Any) -> dict[str, Any]:
    """The input tensor for `rows`, flat in row-major order, with any key replaced or added."""
    return {
        "name": "input-0",
        "shape": [len(rows), 4],
        "datatype": "FP64",
        "data": [value for row in rows for value in row],
        **overrides,
    }


def columns(rows: Any = ROWS, datatype: str = "FP64") -> list[dict[str, Any]]:
    """One [n] tensor per feature, named by it, holding that feature's column of `rows`."""
    return [
        {"name": name, "shape": [len(rows)], "datatype": datatype, "data": [row[index] for row in rows]}
        for index, name in enumerate(FEATURES)
    ]


def replaced(tensors: list[dict[str, Any]], index: int, **overrides: Any) -> list[dict[str, Any]]:
    return [{**tensor, **overrides} if place == index else tensor for place, tensor in enumerate(tensors)]


def infer(client: FlaskClient, body: Any, path: str = INFER, **kwargs: Any) -> Any:
    return client.post(path, data=json.dumps(body), content_type="application/json", **kwargs)


def assert_v2_error(response: Any, status: int, message: str = "") -> None:
    assert response.status_code == status
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"error"}
    assert isinstance(body["error"], str)
    assert message in body["error"]


@pytest.fixture
def version(model_dir: Path) -> str:
    return str(read_card(model_dir)["version"])


@pytest.mark.parametrize("path", ["/v2", "/v2/"])
def test_server_metadata_names_the_server(client: FlaskClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert response.get_json() == {
        "name": "skserve",
        "version": "0.1.0",
        "extensions": ["binary_tensor_data"],
    }


def test_server_is_live_and_ready(client: FlaskClient) -> None:
    assert client.get("/v2/health/live").get_json() == {"live": True}
    assert client.get("/v2/health/ready").get_json() == {"ready": True}


def test_model_metadata_lists_the_input_and_both_outputs(client: FlaskClient, version: str) -> None:
    expected = {
        "name": NAME,
        "versions": [version],
        "platform": "sklearn_joblib",
        "inputs": [{"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}],
        "outputs": [
            {"name": "predict", "datatype": "BYTES", "shape": [-1]},
            {"name": "predict_proba", "datatype": "FP64", "shape": [-1, 3]},
        ],
    }
    assert client.get(f"/v2/models/{NAME}").get_json() == expected
    assert client.get(f"/v2/models/{NAME}/versions/{version}").get_json() == expected


def test_model_is_ready_with_or_without_its_version(client: FlaskClient, version: str) -> None:
    for path in (f"/v2/models/{NAME}/ready", f"/v2/models/{NAME}/versions/{version}/ready"):
        response = client.get(path)
        assert response.status_code == 200
        assert response.get_json() == {"name": NAME, "ready": True}


@pytest.mark.parametrize("suffix", ["", "/ready", "/infer"])
def test_unknown_model_is_404(client: FlaskClient, suffix: str) -> None:
    response = client.open(f"/v2/models/nope{suffix}", method="POST" if suffix == "/infer" else "GET")
    assert_v2_error(response, 404, f"unknown model 'nope'; this server serves '{NAME}'")


@pytest.mark.parametrize("suffix", ["", "/ready", "/infer"])
def test_unknown_version_is_404(client: FlaskClient, suffix: str, version: str) -> None:
    response = client.open(
        f"/v2/models/{NAME}/versions/0{suffix}", method="POST" if suffix == "/infer" else "GET"
    )
    assert_v2_error(response, 404, f"model '{NAME}' has no version '0'; its version is '{version}'")


def test_infer_returns_both_outputs_by_default(client: FlaskClient, version: str) -> None:
    response = infer(client, {"inputs": [tensor()]})
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert body["model_name"] == NAME
    assert body["model_version"] == version
    assert "id" not in body
    labels, probabilities = body["outputs"]
    assert labels == {"name": "predict", "datatype": "BYTES", "shape": [3], "data": CLASSES}
    assert probabilities["name"] == "predict_proba"
    assert probabilities["datatype"] == "FP64"
    assert probabilities["shape"] == [3, 3]
    assert len(probabilities["data"]) == 9


def test_infer_gives_what_predict_gives_for_the_same_rows(client: FlaskClient) -> None:
    rows = np.random.default_rng(5).uniform(0, 8, size=(40, 4)).tolist()
    predicted = client.post("/predict", json={"instances": rows}).get_json()
    labels, probabilities = infer(client, {"inputs": [tensor(rows)]}).get_json()["outputs"]
    assert labels["data"] == predicted["predictions"]
    expected = [value for row in predicted["probabilities"] for value in row.values()]
    assert probabilities["data"] == expected


def test_nested_data_gives_the_same_answer_as_flat(client: FlaskClient) -> None:
    nested = infer(client, {"inputs": [tensor(data=ROWS)]}).get_json()
    assert nested == infer(client, {"inputs": [tensor()]}).get_json()


@pytest.mark.parametrize(
    ("requested", "names"),
    [
        ([{"name": "predict"}], ["predict"]),
        ([{"name": "predict_proba", "parameters": {"binary_data": False}}], ["predict_proba"]),
        ([{"name": "predict_proba"}, {"name": "predict"}], ["predict_proba", "predict"]),
        ([], ["predict", "predict_proba"]),
    ],
)
def test_infer_returns_the_outputs_asked_for_in_order(
    client: FlaskClient, requested: list[Any], names: list[str]
) -> None:
    body = infer(client, {"inputs": [tensor()], "outputs": requested}).get_json()
    assert [output["name"] for output in body["outputs"]] == names


def test_infer_echoes_the_request_id_and_ignores_parameters(client: FlaskClient) -> None:
    body = {"id": "req-42", "parameters": {"priority": 1}, "inputs": [tensor(parameters={"x": 1})]}
    assert infer(client, body).get_json()["id"] == "req-42"


def test_the_model_named_in_the_body_is_accepted_when_it_agrees_with_the_path(
    client: FlaskClient, version: str
) -> None:
    """KServe's SDK sends "model_name" (and may send "model_version") in the body as well as the path."""
    body = {"model_name": NAME, "model_version": version, "inputs": [tensor()]}
    assert infer(client, body).get_json()["outputs"][0]["data"] == CLASSES


def test_one_tensor_per_feature_gives_the_same_answer_as_the_matrix(client: FlaskClient) -> None:
    expected = infer(client, {"inputs": [tensor()]}).get_json()
    assert infer(client, {"inputs": columns()}).get_json() == expected
    assert infer(client, {"inputs": columns()[::-1]}).get_json() == expected  # matched by name, not place


def test_infer_at_the_version_path(client: FlaskClient, version: str) -> None:
    response = infer(client, {"inputs": [tensor()]}, path=f"/v2/models/{NAME}/versions/{version}/infer")
    assert response.status_code == 200


def test_infer_accepts_a_body_without_content_type_as_tritonclient_sends_it(client: FlaskClient) -> None:
    response = client.post(INFER, data=json.dumps({"inputs": [tensor()]}))
    assert response.status_code == 200
    assert response.get_json()["outputs"][0]["data"] == CLASSES


def test_integer_labels_are_int64(tmp_path: Path) -> None:
    iris = train.load_bundled()
    codes = np.unique(iris.y, return_inverse=True)[1]
    data = train.Dataset("codes", iris.features, iris.X, codes, iris.sha256)
    estimator, card = train.train(data, "logistic_regression", 0)
    write_artifact(tmp_path, estimator, card)
    client = create_app({"TESTING": True, "MODEL_DIR": str(tmp_path)}).test_client()
    path = "/v2/models/codes-logistic-regression"
    assert client.get(path).get_json()["outputs"][0] == {
        "name": "predict",
        "datatype": "INT64",
        "shape": [-1],
    }
    labels = infer(client, {"inputs": [tensor()]}, path=f"{path}/infer").get_json()["outputs"][0]
    assert labels == {"name": "predict", "datatype": "INT64", "shape": [3], "data": [0, 1, 2]}
    binary = {"inputs": [tensor()], "outputs": [{"name": "predict", "parameters": {"binary_data": True}}]}
    response = infer(client, binary, path=f"{path}/infer")
    length = int(response.headers["Inference-Header-Content-Length"])
    assert np.frombuffer(response.data[length:], "<i8").tolist() == [0, 1, 2]


def test_model_name_setting_renames_the_model_everywhere(model_dir: Path) -> None:
    client = create_app({"TESTING": True, "MODEL_DIR": str(model_dir), "MODEL_NAME": "flowers"}).test_client()
    assert client.get("/model").get_json()["name"] == "flowers"
    assert client.get("/v2/models/flowers").get_json()["name"] == "flowers"
    body = infer(client, {"inputs": [tensor()]}, path="/v2/models/flowers/infer").get_json()
    assert body["model_name"] == "flowers"
    assert_v2_error(client.get(f"/v2/models/{NAME}"), 404, "this server serves 'flowers'")


@pytest.mark.parametrize(("value", "name"), [("flowers", "flowers"), ("2024", "2024"), ("", NAME)])
def test_model_name_comes_from_skserve_model_name(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch, value: str, name: str
) -> None:
    monkeypatch.setenv("MODEL_DIR", str(model_dir))
    monkeypatch.setenv("SKSERVE_MODEL_NAME", value)
    client = create_app().test_client()
    assert client.get("/model").get_json()["name"] == name
    assert client.get(f"/v2/models/{name}/ready").status_code == 200


BAD_REQUESTS: list[tuple[Any, str]] = [
    ([tensor()], "expected an inference request object"),
    ({"inputs": [tensor()], "output": []}, "the inference request has unexpected keys ['output']"),
    ({"id": 42, "inputs": [tensor()]}, '"id" must be a string, got a number'),
    ({"parameters": [1], "inputs": [tensor()]}, '"parameters" must be an object, got an array'),
    (
        {"model_name": "iris", "inputs": [tensor()]},
        "\"model_name\" is 'iris' but this server serves " + repr(NAME),
    ),
    ({"model_name": None, "inputs": [tensor()]}, '"model_name" is null but this server serves'),
    ({"model_version": "0", "inputs": [tensor()]}, "\"model_version\" is '0' but this server serves"),
    ({"parameters": {"binary_data_output": 1}, "inputs": [tensor()]}, '"binary_data_output" must be true or'),
    ({}, '"inputs" must be a non-empty array of input tensors, got null'),
    ({"inputs": []}, "got an empty array"),
    ({"inputs": tensor()}, "got an object"),
    ({"inputs": [tensor(), tensor()]}, "inputs[0] ('input-0'): unknown input; the model's inputs are its"),
    ({"inputs": [[1, 2, 3, 4]]}, "inputs[0] must be a tensor object, got an array"),
    ({"inputs": [tensor(content_type="np")]}, "inputs[0] has unexpected keys ['content_type']"),
    ({"inputs": [{"name": "input-0", "datatype": "FP64", "shape": [1, 4]}]}, "inputs[0] ('input-0') lacks"),
    ({"inputs": [tensor(name="x")]}, "inputs[0] ('x'): unknown input; the model's inputs are its features"),
    ({"inputs": [tensor(name="x")]}, "or one 'input-0' tensor"),
    ({"inputs": [tensor(name=None)]}, 'inputs[0] must have a string "name", got null'),
    ({"inputs": [tensor(datatype="FP32")]}, "inputs[0] ('input-0'): expected datatype FP64, got 'FP32'"),
    ({"inputs": [tensor(datatype="fp64")]}, "got 'fp64'"),
    ({"inputs": [tensor(datatype=["FP64"])]}, 'must have a string "datatype", got an array'),
    ({"inputs": [tensor(parameters="x")]}, "inputs[0].parameters must be an object, got a string"),
    ({"inputs": [tensor(parameters={"binary_data_size": 96})]}, 'has both "data" and parameters.binary_'),
    ({"inputs": [tensor(parameters={"shared_memory_region": "r"})]}, "shared memory (shared_memory_region)"),
    ({"inputs": [tensor(shape=[12])]}, "inputs[0] ('input-0'): \"shape\" must be [n, 4]"),
    ({"inputs": [tensor(shape=[3, 4, 1])]}, "got [3, 4, 1]"),
    ({"inputs": [tensor(shape=[4, 3])]}, "got [4, 3]"),
    ({"inputs": [tensor(shape=[3, "4"])]}, "must be an array of non-negative integers"),
    ({"inputs": [tensor(shape=[-3, 4])]}, "must be an array of non-negative integers"),
    ({"inputs": [tensor(shape=[0, 4], data=[])]}, "has no rows"),
    ({"inputs": [tensor(shape=[2, 4])]}, '"data" holds 12 values; shape [2, 4] needs 8'),
    ({"inputs": [tensor(shape=[4, 4])]}, '"data" holds 12 values; shape [4, 4] needs 16'),
    ({"inputs": [tensor(data=ROWS[:2])]}, '"data" holds 2 rows; shape [3, 4] needs 3'),
    ({"inputs": [tensor(data=[[1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]])]}, "row 0: expected 4 values"),
    ({"inputs": [tensor(data="1,2,3,4")]}, '"data" must be an array, got a string'),
    (
        {"inputs": [tensor([[1, 2, 3, "4"]])]},
        "row 0, feature 'petal width (cm)': expected a number, got a string",
    ),
    ({"inputs": [tensor([[1, 2, None, 4]])]}, "feature 'petal length (cm)': expected a number, got null"),
    ({"inputs": [tensor([[1, 2, 3, True]])]}, "expected a number, got a boolean"),
    ({"inputs": [tensor([[1, 2, 3, {"v": 4}]])]}, "expected a number, got an object"),
    ({"inputs": [tensor(data=[[[1, 2, 3, 4]], [1], [2]])]}, "row 0: expected 4 values"),
    (
        {"inputs": columns()[:3]},
        "inputs lack the features ['petal width (cm)']: send one [n] tensor for each",
    ),
    (
        {"inputs": [*columns(), columns()[1]]},
        "inputs[4] ('sepal width (cm)'): input 'sepal width (cm)' is given",
    ),
    (
        {"inputs": replaced(columns(), 2, shape=[3, 1])},
        "('petal length (cm)'): \"shape\" must be [n] (n rows",
    ),
    ({"inputs": replaced(columns(), 0, shape=[0], data=[])}, '"shape" must be [n] (n rows, at least one)'),
    ({"inputs": replaced(columns(), 3, shape=[2], data=[1, 2])}, '"shape" is [2] but inputs[0] (\'sepal le'),
    ({"inputs": replaced(columns(), 1, data=[1, 2])}, '"data" must be an array of 3 values, got 2 values'),
    ({"inputs": replaced(columns(), 1, data="1,2,3")}, '"data" must be an array of 3 values, got a string'),
    ({"inputs": replaced(columns(), 1, datatype="FP32")}, "(cm)'): expected datatype FP64, got 'FP32'"),
    (
        {"inputs": columns(datatype="BYTES")},
        "inputs[0] ('sepal length (cm)'): expected datatype FP64, got 'BY",
    ),
    (
        {"inputs": replaced(columns(), 3, data=[1, "2", 3])},
        "row 1, feature 'petal width (cm)': expected a num",
    ),
    ({"inputs": [tensor()], "outputs": {"name": "predict"}}, '"outputs" must be an array'),
    ({"inputs": [tensor()], "outputs": ["predict"]}, "outputs[0] must be an object"),
    ({"inputs": [tensor()], "outputs": [{"name": "label"}]}, "outputs[0]: unknown output 'label'"),
    ({"inputs": [tensor()], "outputs": [{"name": 1}]}, "unknown output a number"),
    ({"inputs": [tensor()], "outputs": [{}]}, "unknown output null"),
    ({"inputs": [tensor()], "outputs": [{"name": "predict"}, {"name": "predict"}]}, "requested twice"),
    ({"inputs": [tensor()], "outputs": [{"name": "predict", "x": 1}]}, "outputs[0] has unexpected keys"),
    ({"inputs": [tensor()], "outputs": [{"name": "predict", "parameters": 1}]}, "must be an object"),
    (
        {"inputs": [tensor()], "outputs": [{"name": "predict", "parameters": {"binary_data": "yes"}}]},
        'outputs[0].parameters: "binary_data" must be true or false, got a string',
    ),
]


@pytest.mark.parametrize(("body", "message"), BAD_REQUESTS)
def test_bad_requests_are_400_naming_the_problem(client: FlaskClient, body: Any, message: str) -> None:
    assert_v2_error(infer(client, body), 400, message)


RAW_TENSOR = b'{"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": [%s]}]}'


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"{", "not valid JSON"),
        (b"\xff", "not UTF-8"),
        (RAW_TENSOR % b"NaN, 1, 2, 3", "contains NaN"),
        (RAW_TENSOR % b"1, 2, 3, -Infinity", "contains -Infinity"),
        (RAW_TENSOR % b"1e999, 1, 2, 3", "row 0, feature 'sepal length (cm)': value is too large"),
    ],
)
def test_malformed_and_non_finite_bodies_are_400(client: FlaskClient, data: bytes, message: str) -> None:
    assert_v2_error(client.post(INFER, data=data, content_type="application/json"), 400, message)


def test_finite_values_the_model_overflows_on_are_400_as_on_predict(client: FlaskClient) -> None:
    rows = [[1e308, 1e308, -1e308, 1e308]]
    assert_v2_error(infer(client, {"inputs": [tensor(rows)]}), 400, "values too large for the model")
    assert client.post("/predict", json={"instances": rows}).status_code == 400


def test_extreme_names_are_not_echoed_whole(client: FlaskClient) -> None:
    long = "x" * 10_000
    response = infer(client, {"inputs": [tensor(name=long)], long: 1})
    assert_v2_error(response, 400)
    assert len(response.get_json()["error"]) < 400


def test_too_many_rows_is_413(model_dir: Path) -> None:
    client = create_app({"TESTING": True, "MODEL_DIR": str(model_dir), "MAX_ROWS": 2}).test_client()
    assert_v2_error(infer(client, {"inputs": [tensor()]}), 413, "3 rows sent; at most 2")


def test_too_large_a_body_is_413(model_dir: Path) -> None:
    client = create_app({"TESTING": True, "MODEL_DIR": str(model_dir), "MAX_BODY_BYTES": 100}).test_client()
    assert_v2_error(infer(client, {"inputs": [tensor()]}), 413, "the limit is 100")
    chunked = client.post(
        INFER,
        input_stream=io.BytesIO(json.dumps({"inputs": [tensor()]}).encode()),
        headers={"Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},  # what gunicorn sets for a chunked body
    )
    assert_v2_error(chunked, 413, "exceeds the limit of 100 bytes")


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({"Content-Type": "text/plain"}, "expected Content-Type application/json, got text/plain"),
        ({"Content-Type": "application/octet-stream"}, "got application/octet-stream"),
        ({"Content-Encoding": "gzip"}, "not decompressed; got Content-Encoding gzip"),
        (
            {"Inference-Header-Content-Length": "120", "Content-Type": "application/json"},
            "a body with binary tensor data (Inference-Header-Content-Length) must have Content-Type "
            "application/octet-stream or none, got application/json",
        ),
    ],
)
def test_bodies_it_cannot_read_are_415(client: FlaskClient, headers: dict[str, str], message: str) -> None:
    body = json.dumps({"inputs": [tensor()]}).encode()
    if headers.get("Content-Encoding") == "gzip":
        body = gzip.compress(body)
    assert_v2_error(client.post(INFER, data=body, headers=headers), 415, message)


FP64_ROWS = np.asarray(ROWS, dtype="<f8").tobytes()  # the binary data of tensor(): 96 bytes


def binary_tensor(size: int = len(FP64_ROWS), **overrides: Any) -> dict[str, Any]:
    """tensor() with its data sent as `size` bytes of binary data instead of JSON."""
    header = {**tensor(), "parameters": {"binary_data_size": size}, **overrides}
    del header["data"]
    return header


def infer_binary(
    client: FlaskClient, body: Any, raw: bytes, header_length: str | None = None, **headers: str
) -> Any:
    """POST the JSON header `body` followed by `raw`, as tritonclient does (no Content-Type)."""
    encoded = json.dumps(body).encode()
    all_headers = {"Inference-Header-Content-Length": header_length or str(len(encoded)), **headers}
    return client.post(INFER, data=encoded + raw, headers=all_headers)


def split_binary(response: Any) -> tuple[dict[str, Any], dict[str, bytes]]:
    """A binary response's JSON header and each binary output's bytes, by name."""
    assert response.status_code == 200, response.data
    assert response.mimetype == "application/octet-stream"
    length = int(response.headers["Inference-Header-Content-Length"])
    header = json.loads(response.data[:length])
    raw: dict[str, bytes] = {}
    offset = length
    for output in header["outputs"]:
        size = output.get("parameters", {}).get("binary_data_size")
        if size is not None:
            assert "data" not in output
            raw[output["name"]] = response.data[offset : offset + size]
            offset += size
    assert offset == len(response.data)
    return header, raw


def test_binary_input_gives_the_same_answer_as_json(client: FlaskClient) -> None:
    expected = infer(client, {"inputs": [tensor()]}).get_json()
    assert infer_binary(client, {"inputs": [binary_tensor()]}, FP64_ROWS).get_json() == expected
    kserve_style = infer_binary(
        client, {"inputs": [binary_tensor()]}, FP64_ROWS, **{"Content-Type": "application/octet-stream"}
    )
    assert kserve_style.get_json() == expected


def test_binary_columns_and_json_columns_can_be_mixed(client: FlaskClient) -> None:
    tensors = columns()
    tensors[1] = {**tensors[1], "parameters": {"binary_data_size": 24}}
    tensors[3] = {**tensors[3], "parameters": {"binary_data_size": 24}}
    raw = np.asarray(tensors[1].pop("data") + tensors[3].pop("data"), dtype="<f8").tobytes()
    expected = infer(client, {"inputs": [tensor()]}).get_json()
    assert infer_binary(client, {"inputs": tensors}, raw).get_json() == expected


def test_binary_data_output_sends_every_output_as_binary(client: FlaskClient) -> None:
    expected = infer(client, {"inputs": [tensor()]}).get_json()
    body = {"id": "b", "parameters": {"binary_data_output": True}, "inputs": [tensor()]}
    header, raw = split_binary(infer(client, body))
    labels, probabilities = expected["outputs"]
    assert header["id"] == "b"
    assert header["outputs"] == [  # predict: three 4-byte lengths and 25 bytes of text
        {"name": "predict", "datatype": "BYTES", "shape": [3], "parameters": {"binary_data_size": 37}},
        {
            "name": "predict_proba",
            "datatype": "FP64",
            "shape": [3, 3],
            "parameters": {"binary_data_size": 72},
        },
    ]
    assert deserialize_bytes_tensor(raw["predict"]).tolist() == [label.encode() for label in labels["data"]]
    assert np.frombuffer(raw["predict_proba"], "<f8").tolist() == probabilities["data"]


@pytest.mark.parametrize(
    ("parameters", "outputs", "binary"),
    [
        (
            {},
            [{"name": "predict_proba", "parameters": {"binary_data": True}}, {"name": "predict"}],
            ["predict_proba"],
        ),
        (
            {"binary_data_output": True},
            [{"name": "predict"}, {"name": "predict_proba"}],
            ["predict", "predict_proba"],
        ),
        ({"binary_data_output": True}, [{"name": "predict", "parameters": {"binary_data": False}}], []),
    ],
)
def test_an_outputs_binary_data_parameter_overrides_the_requests(
    client: FlaskClient, parameters: dict[str, Any], outputs: list[Any], binary: list[str]
) -> None:
    response = infer(client, {"parameters": parameters, "inputs": [tensor()], "outputs": outputs})
    if not binary:
        assert response.mimetype == "application/json"
        assert "Inference-Header-Content-Length" not in response.headers
        assert response.get_json()["outputs"][0]["data"] == CLASSES
        return
    header, raw = split_binary(response)
    assert [output["name"] for output in header["outputs"]] == [output["name"] for output in outputs]
    assert list(raw) == binary


BAD_BINARY: list[tuple[Any, bytes, str | None, str]] = [
    (
        {"inputs": [binary_tensor()]},
        FP64_ROWS,
        "abc",
        "Inference-Header-Content-Length must be a positive byte",
    ),
    ({"inputs": [binary_tensor()]}, FP64_ROWS, "-5", "positive byte count, got '-5'"),
    ({"inputs": [binary_tensor()]}, FP64_ROWS, "+96", "positive byte count, got '+96'"),
    ({"inputs": [binary_tensor()]}, FP64_ROWS, "9" * 5000, "positive byte count, got '999999"),
    ({"inputs": [binary_tensor()]}, FP64_ROWS, "0", "Inference-Header-Content-Length is 0 but the body has"),
    (
        {"inputs": [binary_tensor()]},
        FP64_ROWS,
        "9999",
        "Inference-Header-Content-Length is 9999 but the body has",
    ),
    ({"inputs": [binary_tensor()]}, FP64_ROWS, "10", "request body is not valid JSON"),
    (
        {"inputs": [binary_tensor()]},
        FP64_ROWS + b"x",
        None,
        "97 bytes follow the JSON header but the inputs' binar",
    ),
    (
        {"inputs": [binary_tensor(104)]},
        FP64_ROWS,
        None,
        "binary_data_size 104 runs past the end of the binary da",
    ),
    ({"inputs": [binary_tensor()]}, b"", None, "(0 bytes left after the JSON header)"),
    (
        {"inputs": [binary_tensor(88)]},
        FP64_ROWS[:88],
        None,
        "binary_data_size is 88 bytes; 12 FP64 values take 96",
    ),
    (
        {"inputs": [binary_tensor(parameters={"binary_data_size": "96"})]},
        FP64_ROWS,
        None,
        "a byte count, got a s",
    ),
    (
        {"inputs": [binary_tensor(parameters={"binary_data_size": True})]},
        FP64_ROWS,
        None,
        "byte count, got a boo",
    ),
    ({"inputs": [binary_tensor(datatype="FP32")]}, FP64_ROWS, None, "expected datatype FP64, got 'FP32'"),
    (
        {"inputs": [binary_tensor(shape=[4, 3])]},
        FP64_ROWS,
        None,
        '"shape" must be [n, 4] (n rows of the model',
    ),
    (
        {"inputs": [binary_tensor()]},
        np.asarray([[np.nan, 1, 2, 3]] * 3, dtype="<f8").tobytes(),
        None,
        "row 0, feature 'sepal length (cm)': expected a number, got null",
    ),
]


@pytest.mark.parametrize(("body", "raw", "header_length", "message"), BAD_BINARY)
def test_inconsistent_binary_data_is_400_naming_the_problem(
    client: FlaskClient, body: Any, raw: bytes, header_length: str | None, message: str
) -> None:
    assert_v2_error(infer_binary(client, body, raw, header_length), 400, message)


def test_a_binary_body_past_the_size_limit_is_413(model_dir: Path) -> None:
    client = create_app({"TESTING": True, "MODEL_DIR": str(model_dir), "MAX_BODY_BYTES": 150}).test_client()
    assert_v2_error(infer_binary(client, {"inputs": [binary_tensor()]}, FP64_ROWS), 413, "the limit is 150")


@pytest.mark.parametrize(
    "path", ["/v2/models", "/v2/models/x/config", f"/v2/models/{NAME}/stats", "/v2/repository"]
)
def test_unknown_v2_paths_are_404_in_the_v2_shape(client: FlaskClient, path: str) -> None:
    assert_v2_error(client.get(path), 404, "not found")


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/v2/health/live"), ("DELETE", f"/v2/models/{NAME}"), ("GET", INFER), ("PUT", "/v2")],
)
def test_wrong_method_is_405_in_the_v2_shape_with_allow_header(
    client: FlaskClient, method: str, path: str
) -> None:
    response = client.open(path, method=method)
    assert_v2_error(response, 405, "not allowed")
    assert response.headers["Allow"]


def test_paths_outside_v2_keep_the_api_error_shape(client: FlaskClient) -> None:
    assert client.get("/v2x").get_json()["error"]["code"] == "not_found"
    assert client.delete("/predict").get_json()["error"]["code"] == "method_not_allowed"


def test_inference_and_its_errors_are_counted_in_metrics(client: FlaskClient) -> None:
    def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = client.get("/metrics").get_data(as_text=True)
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    before = scrape()
    infer(client, {"inputs": [tensor(ROWS + ROWS[:1])]})
    infer(client, {"inputs": [tensor(datatype="FP32")]})
    client.get("/v2/models/nope")
    client.delete("/v2")
    after = scrape()

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0) - before.get(key, 0)

    assert delta("skserve_rows_predicted_total") == 4
    assert [delta("skserve_predictions_total", **{"class": name}) for name in CLASSES] == [2, 1, 1]
    assert delta("skserve_errors_total", code="invalid_input") == 1
    assert delta("skserve_errors_total", code="not_found") == 1
    assert delta("skserve_errors_total", code="method_not_allowed") == 1


def test_the_server_version_is_the_projects_version() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["version"] == v2_protocol.SERVER_VERSION


def test_an_unexpected_failure_is_a_generic_500_in_the_v2_shape(failing_app: Flask) -> None:
    response = infer(failing_app.test_client(), {"inputs": [tensor()]})
    assert_v2_error(response, 500, "internal error")
    assert SECRET_FAILURE.encode() not in response.data
    assert b"input-0" not in response.data


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=30,
)
TENSOR_KEYS = st.sampled_from(["name", "shape", "datatype", "data", "parameters"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.one_of(
        JSON_VALUES,
        st.fixed_dictionaries({"inputs": st.lists(st.dictionaries(TENSOR_KEYS, JSON_VALUES), max_size=2)}),
        st.builds(
            lambda shape, data, outputs: {"inputs": [tensor(shape=shape, data=data)], "outputs": outputs},
            st.lists(st.integers(-1, 5), max_size=3),
            st.lists(st.floats(allow_nan=False) | st.integers(), max_size=12),
            st.lists(st.fixed_dictionaries({"name": st.sampled_from(["predict", "predict_proba", "x"])})),
        ),
        # Well-formed tensors of any finite floats, however large or small.
        st.lists(
            st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=4, max_size=4), min_size=1
        ).map(lambda rows: {"inputs": [tensor(rows)]}),
    )
)
def test_no_request_body_gets_a_5xx(client: FlaskClient, body: Any) -> None:
    response = infer(client, body)
    assert response.status_code in (200, 400, 413), response.get_data(as_text=True)
    if response.status_code != 200:
        assert isinstance(response.get_json()["error"], str)


@st.composite
def binary_bodies(draw: st.DrawFn) -> tuple[bytes, str]:
    """Any mix of binary inputs, sizes, datatypes and shapes, with bytes that may not fit them."""
    shape = draw(st.lists(st.integers(0, 6), max_size=3))
    datatype = draw(st.sampled_from(["FP64", "BYTES", "FP32"]))
    sizes = draw(st.lists(st.integers(0, 120) | JSON_VALUES, min_size=1, max_size=5))
    names = draw(st.lists(st.sampled_from(["input-0", *FEATURES]), min_size=len(sizes), max_size=len(sizes)))
    inputs = [
        {"name": name, "shape": shape, "datatype": datatype, "parameters": {"binary_data_size": size}}
        for name, size in zip(names, sizes, strict=True)
    ]
    header = json.dumps({"inputs": inputs, "parameters": {"binary_data_output": True}}).encode()
    length = max(len(header) + draw(st.integers(-3, 3)), 0)
    return header + draw(st.binary(max_size=200)), str(length)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=binary_bodies())
def test_no_binary_body_gets_a_5xx(client: FlaskClient, body: tuple[bytes, str]) -> None:
    data, length = body
    response = client.post(INFER, data=data, headers={"Inference-Header-Content-Length": length})
    assert response.status_code in (200, 400, 413), response.get_data(as_text=True)
    if response.status_code != 200:
        assert isinstance(response.get_json()["error"], str)
