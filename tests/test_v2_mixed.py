"""V2 for models with text and missing values, and for regressors: inputs per feature, outputs by task."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flask.testing import FlaskClient
from tritonclient.utils import serialize_byte_tensor

from skserve import create_app
from skserve.features import CATEGORY, Feature
from skserve.model import LoadedModel
from tests.test_v2 import assert_v2_error, infer, split_binary


def served(model_dir: Path) -> tuple[FlaskClient, LoadedModel]:
    model = LoadedModel.load(model_dir)
    return create_app({"TESTING": True, "MODEL_DIR": str(model_dir)}).test_client(), model


def sample_rows(
    features: tuple[Feature, ...], n_rows: int = 6, seed: int = 3, missing: bool = True
) -> list[list[Any]]:
    """Rows the model takes: numbers, its own categories, and (if `missing`) None wherever allowed."""
    rng = np.random.default_rng(seed)
    rows = []
    for index in range(n_rows):
        row: list[Any] = []
        for feature in features:
            if missing and feature.nullable and index % 3 == 1:
                row.append(None)
            elif feature.kind == CATEGORY:
                row.append(feature.categories[int(rng.integers(len(feature.categories)))])
            else:
                row.append(round(float(rng.uniform(10, 200)), 1))
        rows.append(row)
    return rows


def column_array(rows: list[list[Any]], index: int, datatype: str) -> np.ndarray:
    """One feature's values as a client's numpy column: text (empty if missing) or floats (NaN if missing)."""
    column = [row[index] for row in rows]
    if datatype == "BYTES":
        return np.array(["" if value is None else value for value in column], dtype=np.object_)
    return np.array([np.nan if value is None else value for value in column], dtype=np.float64)


def datatype(feature: Feature) -> str:
    return "BYTES" if feature.kind == CATEGORY and not feature.numeric_categories else "FP64"


def feature_tensors(features: tuple[Feature, ...], rows: list[list[Any]]) -> list[dict[str, Any]]:
    return [
        {"name": f.name, "shape": [len(rows)], "datatype": datatype(f), "data": [row[i] for row in rows]}
        for i, f in enumerate(features)
    ]


def binary_feature_tensors(
    features: tuple[Feature, ...], rows: list[list[Any]]
) -> tuple[list[dict[str, Any]], bytes]:
    """The same tensors with binary data: FP64 (NaN where missing), BYTES as tritonclient writes them."""
    tensors, chunks = [], []
    for tensor in feature_tensors(features, rows):
        values = tensor.pop("data")
        if tensor["datatype"] == "BYTES":
            encoded = [b"" if v is None else str(v).encode() for v in values]  # empty: missing
            raw = serialize_byte_tensor(np.array(encoded, dtype=np.object_)).item()
        else:
            raw = np.array([np.nan if v is None else v for v in values], dtype="<f8").tobytes()
        tensors.append({**tensor, "parameters": {"binary_data_size": len(raw)}})
        chunks.append(raw)
    return tensors, b"".join(chunks)


def test_a_mixed_model_lists_one_input_per_feature(mixed_classifier_dir: Path) -> None:
    client, model = served(mixed_classifier_dir)
    metadata = client.get(f"/v2/models/{model.name}").get_json()
    assert metadata["inputs"] == [
        {"name": feature.name, "datatype": datatype(feature), "shape": [-1]} for feature in model.features
    ]
    assert {entry["datatype"] for entry in metadata["inputs"]} == {"FP64", "BYTES"}
    assert metadata["outputs"] == [
        {"name": "predict", "datatype": "BYTES", "shape": [-1]},
        {"name": "predict_proba", "datatype": "FP64", "shape": [-1, len(model.classes or [])]},
    ]


@pytest.mark.parametrize("fixture", ["regressor_dir", "mixed_regressor_dir"])
def test_a_regressor_gives_its_predicted_values_only(fixture: str, request: pytest.FixtureRequest) -> None:
    client, model = served(request.getfixturevalue(fixture))
    assert client.get(f"/v2/models/{model.name}").get_json()["outputs"] == [
        {"name": "predict", "datatype": "FP64", "shape": [-1]}
    ]
    rows = sample_rows(model.features)
    body = infer(
        client, {"inputs": feature_tensors(model.features, rows)}, path=f"/v2/models/{model.name}/infer"
    )
    expected = client.post("/predict", json={"instances": rows}).get_json()["predictions"]
    assert body.get_json()["outputs"] == [
        {"name": "predict", "datatype": "FP64", "shape": [6], "data": expected}
    ]
    asked = {"inputs": feature_tensors(model.features, rows), "outputs": [{"name": "predict_proba"}]}
    response = infer(client, asked, path=f"/v2/models/{model.name}/infer")
    assert_v2_error(
        response, 400, "outputs[0]: unknown output 'predict_proba'; the model's outputs are ['predict']"
    )


@pytest.mark.parametrize("fixture", ["mixed_classifier_dir", "mixed_regressor_dir"])
def test_json_and_binary_feature_tensors_give_what_predict_gives(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    client, model = served(request.getfixturevalue(fixture))
    rows = sample_rows(model.features)
    path = f"/v2/models/{model.name}/infer"
    expected = client.post("/predict", json={"instances": rows}).get_json()
    assert expected["predictions"], expected
    as_json = infer(client, {"inputs": feature_tensors(model.features, rows)}, path=path).get_json()
    assert as_json["outputs"][0]["data"] == expected["predictions"]
    if "probabilities" in expected and expected["probabilities"] is not None:
        probabilities = [value for row in expected["probabilities"] for value in row.values()]
        assert as_json["outputs"][1]["data"] == probabilities
    tensors, raw = binary_feature_tensors(model.features, rows)
    header = json.dumps({"inputs": tensors, "parameters": {"binary_data_output": True}}).encode()
    response = client.post(
        path, data=header + raw, headers={"Inference-Header-Content-Length": str(len(header))}
    )
    outputs, binary = split_binary(response)
    assert [output["name"] for output in outputs["outputs"]] == [
        output["name"] for output in as_json["outputs"]
    ]
    if model.task == "regression":
        assert np.frombuffer(binary["predict"], "<f8").tolist() == expected["predictions"]


def test_feature_tensors_are_checked_against_the_typed_features(mixed_classifier_dir: Path) -> None:
    client, model = served(mixed_classifier_dir)
    path = f"/v2/models/{model.name}/infer"
    rows = sample_rows(model.features)
    text = next(index for index, feature in enumerate(model.features) if datatype(feature) == "BYTES")
    name = model.features[text].name
    single = {"name": "input-0", "shape": [6, len(model.features)], "datatype": "FP64", "data": rows}
    assert_v2_error(
        infer(client, {"inputs": [single]}, path=path), 400, "this model takes one [n] tensor per feature"
    )
    wrong = feature_tensors(model.features, rows)
    wrong[text]["datatype"] = "FP64"
    assert_v2_error(
        infer(client, {"inputs": wrong}, path=path),
        400,
        f"inputs[{text}] ('{name}'): expected datatype BYTES",
    )
    unknown = feature_tensors(model.features, rows)
    unknown[text]["data"][0] = "Atlantis"
    response = infer(client, {"inputs": unknown}, path=path)
    assert_v2_error(response, 400, name)
    tensors, raw = binary_feature_tensors(model.features, rows[:1])
    offset = sum(tensor["parameters"]["binary_data_size"] for tensor in tensors[:text])
    broken = raw[: offset + 4] + b"\xff" + raw[offset + 5 :]
    header = json.dumps({"inputs": tensors}).encode()
    response = client.post(
        path, data=header + broken, headers={"Inference-Header-Content-Length": str(len(header))}
    )
    assert_v2_error(response, 400, f"inputs[{text}] ('{name}'): element 0 is not UTF-8 text")
