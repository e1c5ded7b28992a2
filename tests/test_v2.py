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

import train
from skserve import create_app, v2_protocol
from skserve.artifact import read_card, write_artifact
from tests.conftest import SECRET_FAILURE
from tests.live_server import REPO

NAME = "iris-logistic-regression"  # what train.py names the fixture's model
INFER = f"/v2/models/{NAME}/infer"
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3], [7.7, 3.0, 6.1, 2.3]]
CLASSES = ["setosa", "versicolor", "virginica"]


def tensor(rows: Any = ROWS, **overrides: Any) -> dict[str, Any]:
    """The input tensor for `rows`, flat in row-major order, with any key replaced or added."""
    return {
        "name": "input-0",
        "shape": [len(rows), 4],
        "datatype": "FP64",
        "data": [value for row in rows for value in row],
        **overrides,
    }


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
    assert response.get_json() == {"name": "skserve", "version": "0.1.0", "extensions": []}


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
    body = {"id": "req-42", "parameters": {"binary_data_output": True}, "inputs": [tensor()]}
    assert infer(client, body).get_json()["id"] == "req-42"


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
    ({}, '"inputs" must be an array holding the one input tensor'),
    ({"inputs": []}, "got 0 inputs"),
    ({"inputs": [tensor(), tensor()]}, "got 2 inputs"),
    ({"inputs": tensor()}, "got an object"),
    ({"inputs": [[1, 2, 3, 4]]}, "inputs[0] must be a tensor object, got an array"),
    ({"inputs": [tensor(content_type="np")]}, "inputs[0] has unexpected keys ['content_type']"),
    ({"inputs": [{"name": "input-0", "datatype": "FP64", "shape": [1, 4]}]}, "inputs[0] lacks ['data']"),
    ({"inputs": [tensor(name="x")]}, "the model's input is named 'input-0', got 'x'"),
    ({"inputs": [tensor(name=None)]}, "got null"),
    ({"inputs": [tensor(datatype="FP32")]}, "inputs[0]: expected datatype FP64, got 'FP32'"),
    ({"inputs": [tensor(datatype="fp64")]}, "got 'fp64'"),
    ({"inputs": [tensor(datatype=["FP64"])]}, "expected datatype FP64, got an array"),
    ({"inputs": [tensor(parameters="x")]}, "inputs[0].parameters must be an object, got a string"),
    ({"inputs": [tensor(parameters={"binary_data_size": 96})]}, "binary tensor data (binary_data_size)"),
    ({"inputs": [tensor(parameters={"shared_memory_region": "r"})]}, "shared memory (shared_memory_region)"),
    ({"inputs": [tensor(shape=[12])]}, 'inputs[0]: "shape" must be [n, 4]'),
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
    ({"inputs": [tensor()], "outputs": {"name": "predict"}}, '"outputs" must be an array'),
    ({"inputs": [tensor()], "outputs": ["predict"]}, "outputs[0] must be an object"),
    ({"inputs": [tensor()], "outputs": [{"name": "label"}]}, "outputs[0]: unknown output 'label'"),
    ({"inputs": [tensor()], "outputs": [{"name": 1}]}, "unknown output a number"),
    ({"inputs": [tensor()], "outputs": [{}]}, "unknown output null"),
    ({"inputs": [tensor()], "outputs": [{"name": "predict"}, {"name": "predict"}]}, "requested twice"),
    ({"inputs": [tensor()], "outputs": [{"name": "predict", "x": 1}]}, "outputs[0] has unexpected keys"),
    ({"inputs": [tensor()], "outputs": [{"name": "predict", "parameters": 1}]}, "must be an object"),
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
        ({"Inference-Header-Content-Length": "120"}, "binary tensor data extension is not supported"),
    ],
)
def test_bodies_it_cannot_read_are_415(client: FlaskClient, headers: dict[str, str], message: str) -> None:
    body = json.dumps({"inputs": [tensor()]}).encode()
    if headers.get("Content-Encoding") == "gzip":
        body = gzip.compress(body)
    assert_v2_error(client.post(INFER, data=body, headers=headers), 415, message)


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
