"""GET /openapi.json: the OpenAPI 3.1 document of the HTTP API, with schemas generated from the model."""

from __future__ import annotations

import re
import sys
from collections.abc import Collection
from typing import Any

from flask import Blueprint, Flask, Response, current_app

from skserve import auth
from skserve.features import CATEGORY, INPUTS, NUMBER, REGRESSION, TASKS, Feature
from skserve.model import LoadedModel
from skserve.schema import takes_integers
from skserve.v2_protocol import INPUT_DATATYPE, INPUT_NAME, OUTPUTS, UNSUPPORTED_INPUT_PARAMETERS
from skserve.web import json_response, loaded_model

bp = Blueprint("openapi", __name__)

OPENAPI_VERSION = "3.1.0"
JSON = "application/json"
# The largest finite float64: the server turns every value into one and refuses what overflows.
FLOAT64_MAX = sys.float_info.max
BEARER = "apiKey"  # the security scheme's name


@bp.get("/openapi.json")
def openapi_document() -> Response:
    app = current_app
    secured = {openapi_path(rule.rule) for rule in app.url_map.iter_rules() if auth.needs_key(rule.endpoint)}
    return json_response(
        build_document(
            loaded_model(),
            max_rows=app.config["MAX_ROWS"],
            served_paths=served_paths(app),
            secured_paths=secured,
        )
    )


def served_paths(app: Flask) -> set[str]:
    """The paths of the app's routes, in OpenAPI form."""
    # Flask routes /static/ for a static folder the package does not have: every request there is a 404.
    return {openapi_path(rule.rule) for rule in app.url_map.iter_rules() if rule.endpoint != "static"}


def openapi_path(rule: str) -> str:
    """A Flask rule in OpenAPI form: "/v2/models/<name>" becomes "/v2/models/{name}"."""
    return re.sub(r"<(?:[^<>:]+:)?([^<>]+)>", r"{\1}", rule)


def build_document(
    model: LoadedModel, *, max_rows: int, served_paths: Collection[str], secured_paths: Collection[str] = ()
) -> dict[str, Any]:
    """The document for an app serving `model`, listing only the paths in `served_paths`.

    Paths are in OpenAPI form ("/v2/models/{name}"). Listing only what the app really routes keeps
    the document honest whichever blueprints are registered; tests check the converse, that every
    route the app serves is documented here. The operations of `secured_paths` need an API key.
    """
    catalogue = {**_core_paths(model), **_v2_paths(model)}
    document = {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": f"skserve: {model.name}",
            # The document changes with the model it describes, so it is versioned by the model.
            "version": model.version,
            "description": (
                f"Predictions from one scikit-learn {_estimator_kind(model)}. The request and response "
                "schemas are generated from the loaded model's card: its features (each a number or "
                "a category, and whether it may be missing) and its classes. Errors are JSON: "
                '`{"error": {"code": ..., "message": ...}}`, and `{"error": "..."}` under `/v2` as '
                "the Open Inference Protocol has it."
            ),
        },
        "paths": {path: item for path, item in catalogue.items() if path in served_paths},
        "components": {
            "schemas": {**_core_schemas(model, max_rows), **_v2_schemas(model, max_rows)},
            "responses": _error_responses(),
            "headers": {
                "X-Request-ID": {
                    "description": (
                        "The request's ID, on every response: the client's own X-Request-ID when it "
                        "is a safe token, else a new one. The access log and error bodies carry it too."
                    ),
                    "schema": {"type": "string"},
                }
            },
        },
    }
    if secured_paths:
        _secure(document, secured_paths)
    return document


def _secure(document: dict[str, Any], secured_paths: Collection[str]) -> None:
    """Declare the bearer scheme, and on each operation of `secured_paths` the key and the 401."""
    document["components"]["securitySchemes"] = {
        BEARER: {"type": "http", "scheme": "bearer", "description": "One of the server's API keys"}
    }
    for path in secured_paths:
        unauthorized = _response_ref("V2Unauthorized" if path.startswith("/v2") else "Unauthorized")
        for operation in document["paths"][path].values():
            operation["security"] = [{BEARER: []}]
            operation["responses"]["401"] = unauthorized


def _core_paths(model: LoadedModel) -> dict[str, Any]:
    return {
        "/predict": {
            "post": {
                "operationId": "predict",
                "summary": (
                    "Predict the value of each row"
                    if model.task == REGRESSION
                    else "Predict the class of each row, with class probabilities"
                ),
                "requestBody": {
                    "required": True,
                    "content": {JSON: {"schema": _ref("PredictRequest"), "example": _example(model)}},
                },
                "responses": {
                    "200": _json("The prediction for each row, in request order", "PredictResponse"),
                    "400": _response_ref("BadRequest"),
                    "413": _response_ref("PayloadTooLarge"),
                    "415": _response_ref("UnsupportedMediaType"),
                },
            }
        },
        "/health": _get("health", "Liveness: the process answers HTTP", _json("Alive", "Health")),
        "/ready": _get(
            "ready",
            "Readiness: the model is loaded and verified, so predictions can be served",
            _json("Ready, with the loaded model's version", "Ready"),
        ),
        "/model": _get(
            "modelCard",
            "The model card: features, classes, metrics, versions, training data",
            _json("The card train.py wrote with the model", "ModelCard"),
        ),
        "/openapi.json": _get(
            "openapi",
            "This document",
            _response(
                "An OpenAPI 3.1 document", {"type": "object", "required": ["openapi", "info", "paths"]}
            ),
        ),
        "/": _get("docsPage", _PAGE, _html()),
        "/docs": _get("docsPageAlias", f"{_PAGE} (the same as /)", _html()),
        "/metrics": _get(
            "metrics",
            "Prometheus metrics of every worker, in the text exposition format",
            _response("Metrics", {"type": "string"}, "text/plain"),
        ),
    }


_REQUEST_ID = {"type": "string", "description": "Names the request in the server's logs"}
_PAGE = "A self-contained HTML page: the model card and a form that sends a prediction"


def _v2_paths(model: LoadedModel) -> dict[str, Any]:
    name = {
        "name": "name",
        "in": "path",
        "required": True,
        "description": "The model's name; this server serves one model (unknown names get 404)",
        "schema": {"type": "string", "enum": [model.name]},
    }
    version = {
        "name": "version",
        "in": "path",
        "required": True,
        "description": "The model's version; it has one (unknown versions get 404)",
        "schema": {"type": "string", "enum": [model.version]},
    }
    metadata = _json("Server metadata", "V2ServerMetadata")
    paths: dict[str, Any] = {
        "/v2": _get("v2ServerMetadata", "Open Inference Protocol: server metadata", metadata),
        "/v2/": _get("v2ServerMetadataSlash", "Server metadata (the same as /v2)", metadata),
        "/v2/health/live": _get("v2ServerLive", "Server liveness", _json("Live", "V2Live")),
        "/v2/health/ready": _get("v2ServerReady", "Server readiness", _json("Ready", "V2Ready")),
    }
    for prefix, parameters, suffix in (
        ("/v2/models/{name}", [name], ""),
        ("/v2/models/{name}/versions/{version}", [name, version], "AtVersion"),
    ):
        not_found = _response_ref("V2NotFound")
        paths[prefix] = _get(
            f"v2ModelMetadata{suffix}",
            "Model metadata: its input tensor and its outputs",
            _json("Model metadata", "V2ModelMetadata"),
            parameters,
            {"404": not_found},
        )
        paths[f"{prefix}/ready"] = _get(
            f"v2ModelReady{suffix}",
            "Model readiness",
            _json("Ready", "V2ModelReady"),
            parameters,
            {"404": not_found},
        )
        paths[f"{prefix}/infer"] = {
            "post": {
                "operationId": f"v2Infer{suffix}",
                "summary": "Open Inference Protocol inference: labels and class probabilities",
                "parameters": parameters,
                "requestBody": {
                    "required": True,
                    "content": {JSON: {"schema": _ref("V2InferenceRequest"), "example": _v2_example(model)}},
                },
                "responses": {
                    "200": _json("The requested outputs", "V2InferenceResponse"),
                    "400": _response_ref("V2BadRequest"),
                    "404": not_found,
                    "413": _response_ref("V2PayloadTooLarge"),
                    "415": _response_ref("V2UnsupportedMediaType"),
                },
            }
        }
    return paths


def _number() -> dict[str, Any]:
    return {
        "type": "number",
        "minimum": -FLOAT64_MAX,
        "maximum": FLOAT64_MAX,
        "description": "A finite number within the 64-bit float range (JSON has no NaN or Infinity)",
    }


def _estimator_kind(model: LoadedModel) -> str:
    return "regressor" if model.task == REGRESSION else "classifier"


def _value(feature: Feature) -> dict[str, Any]:
    """The JSON Schema of one feature's value: a number or a category, or null where it may be missing."""
    if feature.kind == NUMBER:
        schema = _number()
        if takes_integers(feature):
            schema |= {
                "type": "integer",
                "description": f"A whole number (the model was fitted on {feature.dtype})",
            }
    else:
        text = not feature.numeric_categories
        schema = {"type": "string" if text else "number", "description": "A category"}
        if feature.accepts_unknown:
            schema["examples"] = list(feature.categories)
            schema["description"] = "A category: one it was trained on, or another, which the model takes too"
        else:
            schema["enum"] = list(feature.categories)
            schema["description"] = "One of the categories the model was trained on"
    if feature.nullable:
        schema["type"] = [schema["type"], "null"]
        if "enum" in schema:
            schema["enum"] = [*schema["enum"], None]
        schema["description"] += "; null for a missing value"
    return {"title": feature.name, **schema}


def _core_schemas(model: LoadedModel, max_rows: int) -> dict[str, Any]:
    features = model.feature_names
    return {
        "PredictRequest": {
            "type": "object",
            "required": ["instances"],
            "additionalProperties": False,
            "properties": {
                "instances": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": max_rows,
                    "description": f"The rows to predict: at most {max_rows} (more are refused with 413)",
                    "items": {"oneOf": [_ref("RowArray"), _ref("RowObject")]},
                }
            },
        },
        "RowArray": {
            "type": "array",
            "description": f"{len(features)} values in the model's feature order: {features}",
            "prefixItems": [_value(feature) for feature in model.features],
            "items": False,
            "minItems": len(features),
        },
        "RowObject": {
            "type": "object",
            "description": "Every feature name mapped to its value, in any order",
            "properties": {feature.name: _value(feature) for feature in model.features},
            "required": features,
            "additionalProperties": False,
        },
        "PredictResponse": _predict_response(model),
        "Health": _object({"status": {"const": "ok"}}),
        "Ready": _object({"status": {"const": "ready"}, "model_version": {"type": "string"}}),
        "ModelCard": {
            "type": "object",
            "required": ["name", "version", "features", "sha256", "versions"],
            "properties": {
                "name": {"type": "string"},
                "version": {"type": "string"},
                "sha256": {"type": "string"},
                "task": {"enum": list(TASKS)},
                "input": {"enum": list(INPUTS)},
                "features": {
                    "type": "array",
                    "description": "Feature names (card format 1) or typed features (format 2)",
                    "items": {"oneOf": [{"type": "string"}, _card_feature()]},
                },
                "classes": {"type": "array"},
                "metrics": {"type": "object"},
                "versions": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "Error": _object(
            {
                "error": _object(
                    {
                        "code": {"type": "string", "description": "Stable and machine-readable"},
                        "message": {"type": "string", "description": "What was expected, what arrived"},
                    },
                    optional={"request_id": _REQUEST_ID},
                )
            }
        ),
    }


def _predict_response(model: LoadedModel) -> dict[str, Any]:
    version = {"type": "string"}
    if model.classes is None:
        predictions = {
            "type": "array",
            "description": "The predicted value of each row",
            "items": {"type": "number"},
        }
        return _object({"predictions": predictions, "model_version": version})
    probability = {"type": "number", "minimum": 0, "maximum": 1}
    keys = [str(label) for label in model.classes]
    probabilities = {
        "type": "array",
        "items": {
            "type": "object",
            "description": "Each class's probability, keyed by the class as a string",
            "properties": dict.fromkeys(keys, probability),
            "required": keys,
            "additionalProperties": False,
        },
    }
    predictions = {
        "type": "array",
        "description": "The most probable class of each row",
        "items": {"enum": model.classes},
    }
    return _object({"predictions": predictions, "probabilities": probabilities, "model_version": version})


def _card_feature() -> dict[str, Any]:
    return _object(
        {"name": {"type": "string"}, "kind": {"enum": [NUMBER, CATEGORY]}, "nullable": {"type": "boolean"}},
        optional={
            "categories": {"type": "array"},
            "accepts_unknown": {"type": "boolean"},
            "dtype": {"type": "string"},
        },
    )


def _v2_schemas(model: LoadedModel, max_rows: int) -> dict[str, Any]:
    n_features = len(model.feature_names)
    number = _number()
    parameters = {"type": ["object", "null"], "description": "Accepted and ignored"}
    tensor_metadata = _object({"name": {"type": "string"}, "datatype": {"type": "string"}, "shape": _ints()})
    requested_output = _object({"name": {"enum": list(OUTPUTS)}}, optional={"parameters": parameters})
    return {
        "V2ServerMetadata": _object(
            {"name": {"type": "string"}, "version": {"type": "string"}, "extensions": _strings()}
        ),
        "V2Live": _object({"live": {"type": "boolean"}}),
        "V2Ready": _object({"ready": {"type": "boolean"}}),
        "V2ModelReady": _object({"name": {"type": "string"}, "ready": {"type": "boolean"}}),
        "V2ModelMetadata": _object(
            {
                "name": {"type": "string"},
                "versions": _strings(),
                "platform": {"type": "string"},
                "inputs": {"type": "array", "items": tensor_metadata},
                "outputs": {"type": "array", "items": tensor_metadata},
            }
        ),
        "V2InferenceRequest": {
            "type": "object",
            "required": ["inputs"],
            "additionalProperties": False,
            "properties": {
                "id": {"type": ["string", "null"], "description": "Echoed in the response"},
                "parameters": parameters,
                "inputs": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 1,
                    "items": _ref("V2InputTensor"),
                },
                "outputs": {
                    "type": ["array", "null"],
                    "description": "The outputs to return, each at most once; all of them if none",
                    "items": requested_output,
                    "allOf": [
                        {
                            "contains": {"properties": {"name": {"const": output}}},
                            "minContains": 0,
                            "maxContains": 1,
                        }
                        for output in OUTPUTS
                    ],
                },
            },
        },
        "V2InputTensor": {
            "type": "object",
            "description": (
                f'The rows as one {INPUT_DATATYPE} tensor of shape [n, {n_features}]: "data" holds '
                f"n * {n_features} numbers in row-major order, or n rows of {n_features} numbers (the "
                "server refuses with 400 a tensor whose data does not fill its shape)"
            ),
            "required": ["name", "shape", "datatype", "data"],
            "additionalProperties": False,
            "properties": {
                "name": {"const": INPUT_NAME},
                "datatype": {"const": INPUT_DATATYPE},
                "shape": {
                    "type": "array",
                    "prefixItems": [
                        {"type": "integer", "minimum": 1, "maximum": max_rows, "title": "rows"},
                        {"const": n_features, "title": "features"},
                    ],
                    "items": False,
                    "minItems": 2,
                },
                "parameters": {
                    **parameters,
                    "description": "Accepted and ignored, except the binary and shared-memory extensions",
                    "not": {"anyOf": [{"required": [name]} for name in UNSUPPORTED_INPUT_PARAMETERS]},
                },
                "data": {
                    "oneOf": [
                        {"type": "array", "items": number, "minItems": n_features},
                        {
                            "type": "array",
                            "minItems": 1,
                            "items": {
                                "type": "array",
                                "items": number,
                                "minItems": n_features,
                                "maxItems": n_features,
                            },
                        },
                    ]
                },
            },
        },
        "V2InferenceResponse": {
            "type": "object",
            "required": ["model_name", "model_version", "outputs"],
            "additionalProperties": False,
            "properties": {
                "model_name": {"const": model.name},
                "model_version": {"const": model.version},
                "id": {"type": "string"},
                "outputs": {
                    "type": "array",
                    "items": _object(
                        {
                            "name": {"enum": list(OUTPUTS)},
                            "datatype": {"type": "string"},
                            "shape": _ints(),
                            "data": {"type": "array"},
                        }
                    ),
                },
            },
        },
        "V2Error": _object(
            {"error": {"type": "string", "description": "What was expected, what arrived"}},
            optional={"request_id": _REQUEST_ID},
        ),
    }


def _error_responses() -> dict[str, Any]:
    descriptions = {
        "BadRequest": (
            "The body is not valid JSON or does not match the request schema, or the model cannot "
            "score its values"
        ),
        "PayloadTooLarge": "The body exceeds the size limit, or holds more rows than the limit",
        "UnsupportedMediaType": "The body is not sent as Content-Type: application/json",
        "NotFound": "No model of that name, or no such version of it",
        "Unauthorized": "No API key, or not one of the server's (when it is started with API keys)",
    }
    responses = {name: _json(text, "Error") for name, text in descriptions.items() if name != "NotFound"}
    # The V2 routes also take a body without Content-Type, as tritonclient sends it.
    descriptions["UnsupportedMediaType"] = (
        "The body is sent as another Content-Type than JSON, compressed, or with the binary tensor extension"
    )
    responses.update({f"V2{name}": _json(text, "V2Error") for name, text in descriptions.items()})
    return responses


def _get(
    operation_id: str,
    summary: str,
    ok: dict[str, Any],
    parameters: list[dict[str, Any]] | None = None,
    errors: dict[str, Any] | None = None,
) -> dict[str, Any]:
    operation: dict[str, Any] = {"operationId": operation_id, "summary": summary}
    if parameters:
        operation["parameters"] = parameters
    operation["responses"] = {"200": ok, **(errors or {})}
    return {"get": operation}


def _object(required: dict[str, Any], optional: dict[str, Any] | None = None) -> dict[str, Any]:
    """A closed object: the `required` properties, the `optional` ones, and no others."""
    return {
        "type": "object",
        "required": list(required),
        "additionalProperties": False,
        "properties": {**required, **(optional or {})},
    }


def _strings() -> dict[str, Any]:
    return {"type": "array", "items": {"type": "string"}}


def _ints() -> dict[str, Any]:
    return {"type": "array", "items": {"type": "integer"}}


def _example(model: LoadedModel) -> dict[str, Any]:
    """One row: 1 for each number, the first category of each category."""
    return {"instances": [[feature.categories[0] if feature.categories else 1 for feature in model.features]]}


def _v2_example(model: LoadedModel) -> dict[str, Any]:
    n_features = len(model.feature_names)
    tensor = {
        "name": INPUT_NAME,
        "shape": [1, n_features],
        "datatype": INPUT_DATATYPE,
    }
    return {"inputs": [{**tensor, "data": [1.0] * n_features}]}


def _json(description: str, schema: str) -> dict[str, Any]:
    return _response(description, _ref(schema))


def _html() -> dict[str, Any]:
    return _response("HTML", {"type": "string"}, "text/html")


def _response(description: str, schema: dict[str, Any], media_type: str = JSON) -> dict[str, Any]:
    return {
        "description": description,
        "headers": {"X-Request-ID": {"$ref": "#/components/headers/X-Request-ID"}},
        "content": {media_type: {"schema": schema}},
    }


def _response_ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/responses/{name}"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}
