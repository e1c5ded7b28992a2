"""GET /openapi.json: a valid OpenAPI 3.1 document of every route, generated from the loaded model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

import train
from skserve import create_app, openapi
from skserve.artifact import read_card, write_artifact
from skserve.errors import InvalidInput, PayloadTooLarge
from skserve.features import Feature, features_from_card
from skserve.openapi import openapi_path
from skserve.schema import rows_to_matrix
from skserve.web import loaded_model
from tests.typed_models import PENGUIN_COLUMNS, save_frame_model

FEATURES = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]
IRIS = tuple(map(Feature, FEATURES))
CLASSES = ["setosa", "versicolor", "virginica"]
MAX_ROWS = 3  # small, so generated payloads cross the limit


@pytest.fixture(scope="module")
def small_app(model_dir: Path) -> Flask:
    return create_app({"TESTING": True, "MODEL_DIR": str(model_dir), "MAX_ROWS": MAX_ROWS})


@pytest.fixture(scope="module")
def document(small_app: Flask) -> dict[str, Any]:
    response = small_app.test_client().get("/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    body: dict[str, Any] = response.get_json()
    return body


def validator(document: dict[str, Any], schema: str) -> Draft202012Validator:
    """A JSON Schema validator for one of the document's component schemas, with its $refs."""
    return Draft202012Validator(
        {"$ref": f"#/components/schemas/{schema}", "components": document["components"]}
    )


def response_validator(document: dict[str, Any], path: str, method: str, status: int) -> Any:
    response = document["paths"][path][method]["responses"][str(status)]
    if "$ref" in response:
        response = document["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
    schema = response["content"]["application/json"]["schema"]
    return Draft202012Validator({**schema, "components": document["components"]})


def test_is_a_valid_openapi_3_1_document(document: dict[str, Any]) -> None:
    validate(document)
    assert document["openapi"] == "3.1.0"


def test_documents_every_route_and_method_the_app_serves_and_no_other(small_app: Flask) -> None:
    document = small_app.test_client().get("/openapi.json").get_json()
    served = {
        (openapi_path(rule.rule), method.lower())
        for rule in small_app.url_map.iter_rules()
        for method in rule.methods or ()
        if method not in {"HEAD", "OPTIONS"}
    }
    documented = {(path, method) for path, item in document["paths"].items() for method in item}
    assert documented == served
    assert {"/predict", "/health", "/ready", "/model", "/openapi.json", "/", "/docs"} <= set(
        document["paths"]
    )


def test_every_response_declares_the_request_id_header(document: dict[str, Any]) -> None:
    responses = [
        response
        for item in document["paths"].values()
        for operation in item.values()
        for response in operation["responses"].values()
        if "$ref" not in response
    ]
    responses += document["components"]["responses"].values()
    assert all("X-Request-ID" in response["headers"] for response in responses)


def test_the_predict_schemas_are_generated_from_the_model(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    instances = schemas["PredictRequest"]["properties"]["instances"]
    assert (instances["minItems"], instances["maxItems"]) == (1, MAX_ROWS)
    row_array = schemas["RowArray"]
    assert [item["title"] for item in row_array["prefixItems"]] == FEATURES
    assert (row_array["minItems"], row_array["items"]) == (4, False)
    assert schemas["RowObject"]["required"] == FEATURES
    assert schemas["RowObject"]["additionalProperties"] is False
    response = schemas["PredictResponse"]["properties"]
    assert response["predictions"]["items"] == {"enum": CLASSES}
    assert response["probabilities"]["items"]["required"] == CLASSES


def test_a_model_with_other_features_and_integer_classes_gets_its_own_schemas(tmp_path: Path) -> None:
    csv = tmp_path / "data.csv"
    lines = ['"<b>x</b>",y & z,label'] + [f"{i % 7},{i % 5},{i % 2}" for i in range(40)]
    csv.write_text("\n".join(lines) + "\n")
    estimator, card = train.train(train.load_csv(csv, "label"), "random_forest", 0)
    write_artifact(tmp_path / "model", estimator, card)
    client = create_app({"TESTING": True, "MODEL_DIR": str(tmp_path / "model")}).test_client()
    document = client.get("/openapi.json").get_json()
    validate(document)
    schemas = document["components"]["schemas"]
    assert schemas["RowObject"]["required"] == ["<b>x</b>", "y & z"]
    assert schemas["PredictResponse"]["properties"]["predictions"]["items"] == {"enum": [0, 1]}
    body = client.post("/predict", json={"instances": [{"<b>x</b>": 1, "y & z": 2}]}).get_json()
    assert not list(validator(document, "PredictResponse").iter_errors(body))


def test_real_responses_match_their_schemas(small_app: Flask, document: dict[str, Any]) -> None:
    client = small_app.test_client()
    name = document["paths"]["/v2/models/{name}"]["get"]["parameters"][0]["schema"]["enum"][0]
    tensor = {"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": [5.1, 3.5, 1.4, 0.2]}
    named_row = dict(zip(FEATURES, [6, 3, 4, 1], strict=True))
    exchanges = [
        (
            "post",
            "/predict",
            {"instances": [[5.1, 3.5, 1.4, 0.2], named_row]},
            200,
        ),
        ("post", "/predict", {"instances": [[1, 2]]}, 400),
        ("post", "/predict", {"instances": [[1, 2, 3, 4]] * (MAX_ROWS + 1)}, 413),
        ("get", "/health", None, 200),
        ("get", "/ready", None, 200),
        ("get", "/model", None, 200),
        ("get", "/v2", None, 200),
        ("get", "/v2/health/live", None, 200),
        ("get", "/v2/health/ready", None, 200),
        ("get", "/v2/models/{name}", None, 200),
        ("get", "/v2/models/{name}/ready", None, 200),
        ("post", "/v2/models/{name}/infer", {"inputs": [tensor], "id": "a"}, 200),
        ("post", "/v2/models/{name}/infer", {"inputs": [{**tensor, "shape": [2, 4]}]}, 400),
    ]
    for method, path, body, status in exchanges:
        response = client.open(path.replace("{name}", name), method=method, json=body)
        assert response.status_code == status, (path, response.get_json())
        errors = list(response_validator(document, path, method, status).iter_errors(response.get_json()))
        assert not errors, (path, status, errors)
        assert response.headers["X-Request-ID"], path
    unsupported = client.post("/predict", data="x", content_type="text/plain")
    assert unsupported.status_code == 415
    assert response_validator(document, "/predict", "post", 415).is_valid(unsupported.get_json())
    unknown = client.get("/v2/models/nope")
    assert unknown.status_code == 404
    assert response_validator(document, "/v2/models/{name}", "get", 404).is_valid(unknown.get_json())


# Payloads near the schema's edges: right and wrong row lengths, keys, value types and row counts.
values = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.sampled_from([None, True, False, "1", [], {}]),
)
list_rows = st.lists(values, min_size=3, max_size=5)
object_rows = st.dictionaries(st.sampled_from([*FEATURES, "petal", ""]), values, min_size=3, max_size=5)
rows = st.one_of(list_rows, object_rows, values)
payloads = st.one_of(
    st.fixed_dictionaries({"instances": st.lists(rows, max_size=MAX_ROWS + 1)}),
    st.fixed_dictionaries({"instances": st.lists(rows, max_size=2), "extra": values}),
    st.fixed_dictionaries({"instances": values}),
    values,
)


@settings(max_examples=400, derandomize=True)
@given(payload=payloads)
def test_the_request_schema_accepts_exactly_what_the_server_accepts(
    document: dict[str, Any], payload: Any
) -> None:
    """The document neither promises more than /predict takes nor forbids what it takes."""
    schema_says = validator(document, "PredictRequest").is_valid(payload)
    try:
        rows_to_matrix(payload, IRIS, MAX_ROWS)
    except (InvalidInput, PayloadTooLarge):
        server_says = False
    else:
        server_says = True
    assert schema_says == server_says, json.dumps(payload)


def test_values_beyond_float64_are_outside_the_schema_and_refused(document: dict[str, Any]) -> None:
    payload = {"instances": [[10**309, 1, 2, 3]]}
    assert not validator(document, "PredictRequest").is_valid(payload)
    with pytest.raises(InvalidInput):
        rows_to_matrix(payload, IRIS, MAX_ROWS)
    largest = {"instances": [[float(np.finfo(np.float64).max), 1, 2, 3]]}
    assert validator(document, "PredictRequest").is_valid(largest)


def test_is_served_as_json_with_the_loaded_model_version(client: FlaskClient, app: Flask) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.get_json()["info"]["version"] == loaded_model(app).version


@pytest.fixture(scope="module")
def mixed_app(mixed_classifier_dir: Path) -> Flask:
    return create_app({"TESTING": True, "MODEL_DIR": str(mixed_classifier_dir), "MAX_ROWS": MAX_ROWS})


@pytest.fixture(scope="module")
def mixed_document(mixed_app: Flask) -> dict[str, Any]:
    body: dict[str, Any] = mixed_app.test_client().get("/openapi.json").get_json()
    return body


def test_typed_features_give_types_enums_of_categories_and_nullable(mixed_document: dict[str, Any]) -> None:
    validate(mixed_document)
    schemas = mixed_document["components"]["schemas"]
    island, bill_length = schemas["RowArray"]["prefixItems"][:2]
    assert (island["title"], island["type"]) == ("island", ["string", "null"])
    assert island["enum"] == ["Biscoe", "Dream", "Torgersen", None]
    assert (bill_length["title"], bill_length["type"]) == ("bill_length_mm", ["number", "null"])
    assert "enum" not in bill_length
    assert schemas["RowObject"]["properties"]["island"] == island


def test_number_categories_and_integer_dtypes_get_their_json_types(tmp_path: Path) -> None:
    """A packaged model's features (train.py makes neither): numbers as categories, an int64 column."""
    card = read_card(save_frame_model(tmp_path))
    card["features"] += [
        {"name": "grade", "kind": "category", "nullable": False, "categories": [1, 2], "dtype": "int64"},
    ]
    schemas = {
        feature["name"]: openapi._value(feature_object)
        for feature, feature_object in zip(card["features"], features_from_card(card), strict=True)
    }
    assert schemas["count"]["type"] == "integer"
    assert (schemas["grade"]["type"], schemas["grade"]["enum"]) == ("number", [1, 2])


def test_a_regressors_document_has_numbers_and_no_probabilities(mixed_regressor_dir: Path) -> None:
    client = create_app({"TESTING": True, "MODEL_DIR": str(mixed_regressor_dir)}).test_client()
    document = client.get("/openapi.json").get_json()
    validate(document)
    assert document["paths"]["/predict"]["post"]["summary"] == "Predict the value of each row"
    response = document["components"]["schemas"]["PredictResponse"]
    assert response["required"] == ["predictions", "model_version"]
    assert response["properties"]["predictions"]["items"] == {"type": "number"}
    example = document["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["example"]
    answer = client.post("/predict", json=example)
    assert answer.status_code == 200
    assert not list(response_validator(document, "/predict", "post", 200).iter_errors(answer.get_json()))


PENGUIN_NAMES = PENGUIN_COLUMNS[1:]  # the classifier's features: all but species
typed_values = st.one_of(values, st.sampled_from(["Biscoe", "Dream", "male", "Atlantis", 2007, 2007.5]))
typed_rows = st.one_of(
    st.lists(typed_values, min_size=6, max_size=8),
    st.fixed_dictionaries(
        dict.fromkeys(PENGUIN_NAMES[:6], typed_values), optional={"year": typed_values, "x": values}
    ),
)


@settings(max_examples=300, derandomize=True)
@given(instances=st.lists(typed_rows, min_size=1, max_size=MAX_ROWS + 1))
def test_the_typed_request_schema_accepts_exactly_what_the_server_accepts(
    mixed_document: dict[str, Any], mixed_classifier_dir: Path, instances: list[Any]
) -> None:
    payload = {"instances": instances}
    schema_says = validator(mixed_document, "PredictRequest").is_valid(payload)
    try:
        rows_to_matrix(payload, features_from_card(read_card(mixed_classifier_dir)), MAX_ROWS)
    except (InvalidInput, PayloadTooLarge):
        server_says = False
    else:
        server_says = True
    assert schema_says == server_says, json.dumps(payload)
