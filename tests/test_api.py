"""The HTTP contract of /predict, /health, /ready and /model, through Flask's test client."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import orjson
import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import given, settings
from hypothesis import strategies as st

from skserve import create_app
from skserve.api import probability_objects
from skserve.artifact import MODEL_FILE, read_card
from skserve.features import CATEGORY, Feature, features_from_card
from tests.conftest import SECRET_FAILURE
from tests.typed_models import PENGUIN_COLUMNS, presented

ROWS = [[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3], [7.7, 3.0, 6.1, 2.3]]
FEATURES = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]


def post(client: FlaskClient, body: Any, **kwargs: Any) -> Any:
    return client.post("/predict", json=body, **kwargs)


def assert_error(response: Any, status: int, code: str, message: str = "") -> None:
    assert response.status_code == status
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "request_id"}
    assert body["error"]["code"] == code
    assert body["error"]["request_id"] == response.headers["X-Request-ID"]
    assert message in body["error"]["message"]


@pytest.mark.parametrize(
    "class_names",
    [("setosa", "versicolor", "virginica"), ("0", "1"), ("100%", '%s "quoted"', "naïve\\", "")],
)
def test_probability_objects_are_the_bytes_of_a_dict_per_row(class_names: tuple[str, ...]) -> None:
    """The template-built objects equal orjson's encoding of {class: probability} dicts, for any
    class names (a % or a quote in one included) and probabilities of any size."""
    rng = np.random.default_rng(0)
    for n_rows in (1, 2, 100):
        # Powers spread the values from about 1 down to subnormal numbers, so exponents appear too.
        probabilities = rng.random((n_rows, len(class_names))) ** rng.integers(1, 600, size=(n_rows, 1))
        expected = [dict(zip(class_names, row, strict=True)) for row in probabilities.tolist()]
        assert orjson.dumps(probability_objects(probabilities, class_names)) == orjson.dumps(expected)


def test_predicts_rows_given_as_lists(client: FlaskClient, model_dir: Path) -> None:
    response = post(client, {"instances": ROWS})
    assert response.status_code == 200
    body = response.get_json()
    assert body["predictions"] == ["setosa", "versicolor", "virginica"]
    assert body["model_version"] == read_card(model_dir)["version"]
    expected = joblib.load(model_dir / MODEL_FILE).predict_proba(np.array(ROWS))
    assert [list(p.values()) for p in body["probabilities"]] == expected.tolist()
    assert [list(p) for p in body["probabilities"]] == [["setosa", "versicolor", "virginica"]] * 3


def test_rows_as_objects_give_the_same_answer_as_lists(client: FlaskClient) -> None:
    named = [dict(zip(reversed(FEATURES), reversed(row), strict=True)) for row in ROWS]
    assert post(client, {"instances": named}).get_json() == post(client, {"instances": ROWS}).get_json()


def test_predictions_equal_the_saved_model_in_process(client: FlaskClient, model_dir: Path) -> None:
    rows = np.random.default_rng(1).uniform(0, 8, size=(200, 4))
    body = post(client, {"instances": rows.tolist()}).get_json()
    assert body["predictions"] == joblib.load(model_dir / MODEL_FILE).predict(rows).tolist()


@pytest.mark.parametrize(
    ("data", "status", "code", "message"),
    [
        (b"{", 400, "invalid_input", "not valid JSON"),
        (b"\xff\xfe", 400, "invalid_input", "not UTF-8"),
        (b"[" * 50_000 + b"]" * 50_000, 400, "invalid_input", "nests JSON too deeply"),
        (b'{"instances": [[NaN, 1, 2, 3]]}', 400, "invalid_input", "contains NaN"),
        (b'{"instances": [[1e999, 1, 2, 3]]}', 400, "invalid_input", "row 0, feature 'sepal length (cm)'"),
        (b"[]", 400, "invalid_input", "got an array"),
        (b"{}", 400, "invalid_input", 'missing key "instances"'),
        (b'{"instances": []}', 400, "invalid_input", "is empty"),
        (b'{"instances": [[1, 2, 3]]}', 400, "invalid_input", "row 0: expected 4 values in the order"),
        (b'{"instances": [[1, 2, 3, false]]}', 400, "invalid_input", "got a boolean"),
        (b'{"instances": [[1, 2, 3, null]]}', 400, "invalid_input", "got null"),
        (b'{"instances": [{"petal": 1}]}', 400, "invalid_input", "unknown features ['petal']"),
    ],
)
def test_bad_bodies_get_a_4xx_naming_the_problem(
    client: FlaskClient, data: bytes, status: int, code: str, message: str
) -> None:
    response = client.post("/predict", data=data, content_type="application/json")
    assert_error(response, status, code, message)


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_wrong_content_type_is_415(client: FlaskClient, content_type: str | None) -> None:
    response = client.post("/predict", data=json.dumps({"instances": ROWS}), content_type=content_type)
    assert_error(response, 415, "unsupported_media_type", "expected Content-Type application/json")


def test_json_with_a_charset_parameter_is_accepted(client: FlaskClient) -> None:
    response = client.post(
        "/predict", data=json.dumps({"instances": ROWS}), content_type="application/json; charset=utf-8"
    )
    assert response.status_code == 200


def test_too_many_rows_is_413(model_dir: Path) -> None:
    client = create_app({"TESTING": True, "MODEL_DIR": str(model_dir), "MAX_ROWS": 2}).test_client()
    assert_error(post(client, {"instances": ROWS}), 413, "payload_too_large", "3 rows sent; at most 2")


def test_too_large_a_body_is_413_whether_or_not_its_length_is_declared(model_dir: Path) -> None:
    client = create_app({"TESTING": True, "MODEL_DIR": str(model_dir), "MAX_BODY_BYTES": 100}).test_client()
    body = json.dumps({"instances": ROWS * 10}).encode()
    assert_error(
        client.post("/predict", data=body, content_type="application/json"),
        413,
        "payload_too_large",
        f"request body is {len(body)} bytes; the limit is 100",
    )
    chunked = client.post(
        "/predict",
        input_stream=io.BytesIO(body),
        content_type="application/json",
        headers={"Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},  # what gunicorn sets for a chunked body
    )
    assert_error(chunked, 413, "payload_too_large", "exceeds the limit of 100 bytes")


def test_unknown_path_is_404_json(client: FlaskClient) -> None:
    assert_error(client.get("/nope"), 404, "not_found", "not found")


@pytest.mark.parametrize(("method", "path"), [("GET", "/predict"), ("POST", "/health"), ("DELETE", "/model")])
def test_wrong_method_is_405_json_with_allow_header(client: FlaskClient, method: str, path: str) -> None:
    response = client.open(path, method=method)
    assert_error(response, 405, "method_not_allowed")
    assert response.headers["Allow"]


def test_an_unexpected_failure_is_a_generic_500_that_echoes_nothing(failing_app: Flask) -> None:
    response = post(failing_app.test_client(), {"instances": [[1.5, 2.5, 3.5, 4.5]]})
    assert_error(response, 500, "internal_server_error")
    assert SECRET_FAILURE.encode() not in response.data
    assert b"Traceback" not in response.data
    assert b"1.5" not in response.data


def test_health_is_ok(client: FlaskClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_ready_names_the_loaded_model_version(client: FlaskClient, model_dir: Path) -> None:
    response = client.get("/ready")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ready", "model_version": read_card(model_dir)["version"]}


def test_model_returns_the_card_without_file_system_paths(client: FlaskClient, model_dir: Path) -> None:
    response = client.get("/model")
    assert response.status_code == 200
    assert response.get_json() == read_card(model_dir)
    assert str(model_dir) not in response.get_data(as_text=True)


def test_the_app_is_built_from_environment_settings(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_DIR", str(model_dir))
    monkeypatch.setenv("SKSERVE_MAX_ROWS", "1")
    app: Flask = create_app()
    assert app.config["MODEL_DIR"] == str(model_dir)
    response = post(app.test_client(), {"instances": ROWS[:2]})
    assert_error(response, 413, "payload_too_large", "at most 1 rows")


def client_for(model_dir: Path) -> FlaskClient:
    return create_app({"TESTING": True, "MODEL_DIR": str(model_dir)}).test_client()


def features_of(model_dir: Path) -> tuple[Feature, ...]:
    return features_from_card(read_card(model_dir))


# Penguins, for conftest's mixed models (rows of several kinds, some values missing).
PENGUIN_VALUES: list[dict[str, Any]] = [
    dict(zip(PENGUIN_COLUMNS, values, strict=True))
    for values in [
        ("Adelie", "Torgersen", 39.1, 18.7, 181, 3750, "male", 2007),
        (None, None, None, 17.4, 186, None, None, 2008),
        ("Gentoo", "Biscoe", 50.0, 15.2, 218, 5700, "female", None),
    ]
]


def penguins_for(model_dir: Path) -> list[Any]:
    """PENGUIN_VALUES with the model's features: rows 0 and 2 as lists in feature order, row 1 an object."""
    names = [feature.name for feature in features_of(model_dir)]
    rows: list[Any] = [[values[name] for name in names] for values in PENGUIN_VALUES]
    rows[1] = {name: PENGUIN_VALUES[1][name] for name in reversed(names)}
    return rows


def test_typed_rows_get_the_saved_pipelines_own_answers(mixed_classifier_dir: Path) -> None:
    penguins = penguins_for(mixed_classifier_dir)
    body = post(client_for(mixed_classifier_dir), {"instances": penguins}).get_json()
    pipeline = joblib.load(mixed_classifier_dir / MODEL_FILE)
    rows = presented(penguins, features_of(mixed_classifier_dir))
    assert body["predictions"] == pipeline.predict(rows).tolist()
    assert [list(p.values()) for p in body["probabilities"]] == pipeline.predict_proba(rows).tolist()
    assert [list(p) for p in body["probabilities"]] == [pipeline.classes_.tolist()] * len(penguins)


@pytest.mark.parametrize("fixture", ["regressor_dir", "mixed_regressor_dir"])
def test_a_regressor_answers_numbers_without_probabilities(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    model_dir: Path = request.getfixturevalue(fixture)
    features = features_of(model_dir)
    instances = penguins_for(model_dir) if fixture == "mixed_regressor_dir" else [[0.01] * len(features)] * 3
    response = post(client_for(model_dir), {"instances": instances})
    assert response.status_code == 200
    body = response.get_json()
    assert list(body) == ["predictions", "model_version"]
    expected = joblib.load(model_dir / MODEL_FILE).predict(presented(instances, features))
    assert body["predictions"] == expected.tolist()
    assert body["model_version"] == read_card(model_dir)["version"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"bill_depth_mm": "17"}, "row 1, feature 'bill_depth_mm': expected a number or null, got a string"),
        ({"island": 5}, "row 1, feature 'island': expected a category as text or null, got a number"),
        ({"sex": True}, "row 1, feature 'sex': expected a category as text or null, got a boolean"),
        (
            {"island": "Atlantis"},
            "row 1, feature 'island': expected one of its categories ['Biscoe', 'Dream', 'Torgersen'], "
            "got 'Atlantis'",
        ),
        ({"year": [2007]}, "row 1, feature 'year': expected a number or null, got an array"),
    ],
)
@pytest.mark.parametrize("fixture", ["mixed_classifier_dir", "mixed_regressor_dir"])
def test_each_wrong_typed_value_is_a_400_naming_row_feature_expected_and_got(
    fixture: str, change: dict[str, Any], message: str, request: pytest.FixtureRequest
) -> None:
    model_dir: Path = request.getfixturevalue(fixture)
    good = penguins_for(model_dir)[1]
    response = post(client_for(model_dir), {"instances": [good, {**good, **change}]})
    assert_error(response, 400, "invalid_input")
    assert response.get_json()["error"]["message"] == message


def test_a_missing_value_where_the_model_cannot_take_one_is_a_400(client: FlaskClient) -> None:
    response = post(client, {"instances": [ROWS[0], [5.1, None, 1.4, 0.2]]})
    assert_error(response, 400, "invalid_input")
    assert response.get_json()["error"]["message"] == (
        "row 1, feature 'sepal width (cm)': expected a number, got null"
    )


def valid_value(feature: Feature) -> st.SearchStrategy[Any]:
    present = st.sampled_from(feature.categories) if feature.kind == CATEGORY else st.floats(-1e4, 1e4)
    return st.none() | present if feature.nullable else present


@pytest.fixture(scope="module")
def penguin_client(mixed_classifier_dir: Path) -> FlaskClient:
    return client_for(mixed_classifier_dir)


@settings(max_examples=25, derandomize=True, deadline=None)
@given(data=st.data())
def test_any_valid_typed_rows_get_the_pipelines_own_answers(
    penguin_client: FlaskClient, mixed_classifier_dir: Path, data: st.DataObject
) -> None:
    features = features_of(mixed_classifier_dir)
    row = st.tuples(*map(valid_value, features)).map(list)
    rows = data.draw(st.lists(row, min_size=1, max_size=20))
    body = post(penguin_client, {"instances": rows}).get_json()
    pipeline = joblib.load(mixed_classifier_dir / MODEL_FILE)
    matrix = presented(rows, features)
    assert body["predictions"] == pipeline.predict(matrix).tolist()
    probabilities = [list(p.values()) for p in body["probabilities"]]
    # The bits the pipeline gives the rows in a multi-row call, a lone row's too: BLAS's one-row
    # kernel may differ in the last bits (it does on AMD EPYC), and skserve gives a row the same
    # answer alone and in any batch (LoadedModel.outputs).
    assert probabilities == pipeline.predict_proba(np.repeat(matrix, 2, axis=0))[::2].tolist()
    np.testing.assert_allclose(probabilities, pipeline.predict_proba(matrix), rtol=1e-12, atol=0)
