"""The Open Inference Protocol (KServe V2) over REST: health, metadata and inference for the one model."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Flask, Response, current_app, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.wrappers import Response as WerkzeugResponse

from skserve import metrics, web
from skserve.errors import APIError, InvalidInput, UnsupportedMediaType
from skserve.model import LoadedModel, Prediction
from skserve.schema import json_type, parse_json, rows_of_values, tensor_rows
from skserve.v2_protocol import (
    INPUT_DATATYPE,
    INPUT_NAME,
    OUTPUTS,
    PLATFORM,
    PREDICT,
    PREDICT_PROBA,
    SERVER_NAME,
    SERVER_VERSION,
    UNSUPPORTED_INPUT_PARAMETERS,
    classes,
    label_datatype,
)

bp = Blueprint("v2", __name__, url_prefix="/v2")

REQUEST_KEYS = {"id", "parameters", "inputs", "outputs"}
INPUT_KEYS = {"name", "shape", "datatype", "parameters", "data"}
OUTPUT_KEYS = {"name", "parameters"}
# The tensor extension's header: the body is a JSON header followed by raw tensor bytes.
BINARY_HEADER = "Inference-Header-Content-Length"
SEND_JSON = "send tensor data as JSON (tritonclient: set_data_from_numpy(..., binary_data=False))"


@dataclass(frozen=True)
class InferenceRequest:
    """A checked inference request: the rows still hold raw JSON values for `rows_of_values`."""

    id: str | None
    rows: list[Any]
    outputs: list[str]


@bp.get("")
@bp.get("/")
def server_metadata() -> Response:
    return web.json_response({"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": []})


@bp.get("/health/live")
def server_live() -> Response:
    return web.json_response({"live": True})


@bp.get("/health/ready")
def server_ready() -> Response:
    # The factory refuses to build an app without a verified model, so an app that answers is ready.
    return web.json_response({"ready": True})


@bp.get("/models/<name>")
@bp.get("/models/<name>/versions/<version>")
def model_metadata(name: str, version: str | None = None) -> Response:
    return web.json_response(metadata(served_model(name, version)))


@bp.get("/models/<name>/ready")
@bp.get("/models/<name>/versions/<version>/ready")
def model_ready(name: str, version: str | None = None) -> Response:
    model = served_model(name, version)
    return web.json_response({"name": model.name, "ready": True})


@bp.post("/models/<name>/infer")
@bp.post("/models/<name>/versions/<version>/infer")
def infer(name: str, version: str | None = None) -> Response:
    model = served_model(name, version)
    inference = parse_inference_request(read_inference_body(), len(model.feature_names))
    rows = rows_of_values(inference.rows, model.features, current_app.config["MAX_ROWS"])
    prediction = web.predict_rows(rows)  # the /predict view's path, micro-batching included
    metrics.observe_predictions(prediction.labels)
    body: dict[str, Any] = {"model_name": model.name, "model_version": model.version}
    if inference.id is not None:
        body["id"] = inference.id
    body["outputs"] = [encode_output(output, prediction, model) for output in inference.outputs]
    return web.json_response(body)


def served_model(name: str, version: str | None) -> LoadedModel:
    """The loaded model if the URL names it (and its version, when given); 404 otherwise."""
    model = web.loaded_model()
    if name != model.name:
        raise NotFound(f"unknown model {shorten(name)}; this server serves {model.name!r}")
    if version is not None and version != model.version:
        raise NotFound(
            f"model {model.name!r} has no version {shorten(version)}; its version is {model.version!r}"
        )
    return model


def metadata(model: LoadedModel) -> dict[str, Any]:
    """The model metadata response: one FP64 input of shape [-1, n_features] and both outputs."""
    return {
        "name": model.name,
        "versions": [model.version],
        "platform": PLATFORM,
        "inputs": [{"name": INPUT_NAME, "datatype": INPUT_DATATYPE, "shape": [-1, len(model.feature_names)]}],
        "outputs": [
            {"name": PREDICT, "datatype": label_datatype(classes(model)), "shape": [-1]},
            {"name": PREDICT_PROBA, "datatype": "FP64", "shape": [-1, len(classes(model))]},
        ],
    }


def read_inference_body() -> Any:
    """The parsed JSON body. Unlike /predict a missing Content-Type is accepted: tritonclient sends none."""
    if request.mimetype not in ("", "application/json"):
        raise UnsupportedMediaType(f"expected Content-Type application/json, got {request.mimetype}")
    if request.content_encoding not in (None, "identity"):
        raise UnsupportedMediaType(
            f"request bodies are not decompressed; got Content-Encoding {request.content_encoding}"
        )
    if BINARY_HEADER in request.headers:
        raise UnsupportedMediaType(f"the binary tensor data extension is not supported; {SEND_JSON}")
    return parse_json(web.read_body())


def parse_inference_request(payload: Any, n_features: int) -> InferenceRequest:
    """Check an inference request's structure; the input tensor must be FP64 of shape [n, n_features]."""
    if not isinstance(payload, dict):
        raise InvalidInput(
            f'expected an inference request object {{"inputs": [...]}}, got {json_type(payload)}'
        )
    refuse_unknown_keys(payload, REQUEST_KEYS, "the inference request")
    request_id = payload.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInput(f'"id" must be a string, got {json_type(request_id)}')
    check_parameters(payload.get("parameters"), '"parameters"')
    inputs = payload.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1:
        got = f"{len(inputs)} inputs" if isinstance(inputs, list) else json_type(inputs)
        raise InvalidInput(
            f'"inputs" must be an array holding the one input tensor {INPUT_NAME!r}, got {got}'
        )
    rows = input_rows(inputs[0], n_features)
    return InferenceRequest(request_id, rows, requested_outputs(payload.get("outputs")))


def input_rows(tensor: Any, n_features: int) -> list[Any]:
    where = "inputs[0]"
    if not isinstance(tensor, dict):
        raise InvalidInput(f"{where} must be a tensor object, got {json_type(tensor)}")
    refuse_unknown_keys(tensor, INPUT_KEYS, where)
    parameters = check_parameters(tensor.get("parameters"), f"{where}.parameters")
    for parameter, extension in UNSUPPORTED_INPUT_PARAMETERS.items():
        if parameter in parameters:
            raise InvalidInput(f"{where}: {extension} ({parameter}) is not supported; {SEND_JSON}")
    missing = sorted(INPUT_KEYS - {"parameters"} - set(tensor))
    if missing:
        raise InvalidInput(f"{where} lacks {missing}")
    name, datatype = tensor["name"], tensor["datatype"]
    if name != INPUT_NAME:
        shown = shorten(name) if isinstance(name, str) else json_type(name)
        raise InvalidInput(f"{where}: the model's input is named {INPUT_NAME!r}, got {shown}")
    if datatype != INPUT_DATATYPE:
        shown = shorten(datatype) if isinstance(datatype, str) else json_type(datatype)
        raise InvalidInput(f"{where}: expected datatype {INPUT_DATATYPE}, got {shown}")
    try:
        return tensor_rows(tensor["data"], tensor["shape"], n_features)
    except InvalidInput as error:
        raise InvalidInput(f"{where}: {error.message}") from None


def requested_outputs(outputs: Any) -> list[str]:
    """The names of the outputs to return, in the order asked; all of them when none are named."""
    if outputs is None:
        return list(OUTPUTS)
    if not isinstance(outputs, list):
        raise InvalidInput(f'"outputs" must be an array of {{"name": ...}} objects, got {json_type(outputs)}')
    names: list[str] = []
    for index, output in enumerate(outputs):
        where = f"outputs[{index}]"
        if not isinstance(output, dict):
            raise InvalidInput(f'{where} must be an object {{"name": ...}}, got {json_type(output)}')
        refuse_unknown_keys(output, OUTPUT_KEYS, where)
        check_parameters(output.get("parameters"), f"{where}.parameters")
        name = output.get("name")
        if name not in OUTPUTS:
            shown = shorten(name) if isinstance(name, str) else json_type(name)
            raise InvalidInput(f"{where}: unknown output {shown}; the model's outputs are {list(OUTPUTS)}")
        if name in names:
            raise InvalidInput(f"{where}: output {name!r} is requested twice")
        names.append(name)
    return names or list(OUTPUTS)


def check_parameters(parameters: Any, where: str) -> dict[str, Any]:
    """Parameters are optional objects; the values this server does not use are accepted and ignored."""
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise InvalidInput(f"{where} must be an object, got {json_type(parameters)}")
    return parameters


def refuse_unknown_keys(obj: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = set(obj) - allowed
    if unknown:
        raise InvalidInput(
            f"{where} has unexpected keys {shorten_all(unknown)}; allowed are {sorted(allowed)}"
        )


def encode_output(name: str, prediction: Prediction, model: LoadedModel) -> dict[str, Any]:
    """One response tensor; data is flat in row-major order, as the protocol's examples give it."""
    n_rows = len(prediction.labels)
    if name == PREDICT:
        datatype = label_datatype(classes(model))
        labels = prediction.labels if datatype == "INT64" else [str(label) for label in prediction.labels]
        return {"name": PREDICT, "datatype": datatype, "shape": [n_rows], "data": labels}
    if prediction.probabilities is None:  # a regressor's prediction
        raise InvalidInput(f"output {PREDICT_PROBA!r} is for classifiers; this model is a regressor")
    data = prediction.probabilities.ravel().tolist()
    return {"name": PREDICT_PROBA, "datatype": "FP64", "shape": [n_rows, len(classes(model))], "data": data}


def shorten(text: str) -> str:
    """A client-supplied string, quoted and cut short, so a message never echoes a whole body."""
    return repr(text[:40] + "..." if len(text) > 40 else text)


def shorten_all(names: Iterable[str]) -> str:
    listed = sorted(names)
    more = f" and {len(listed) - 5} more" if len(listed) > 5 else ""
    return f"[{', '.join(shorten(name) for name in listed[:5])}]{more}"


def error_response(error: HTTPException | APIError) -> WerkzeugResponse:
    """The protocol's error shape, {"error": message}, with the status (and headers) the error carries."""
    if isinstance(error, APIError):
        metrics.observe_error(error.code)
        return web.json_response({"error": error.message}, error.status)
    metrics.observe_error(web.http_error_code(error))  # the code /predict's errors carry
    return web.http_error_response(error, {"error": error.description or error.name})


def handle_routing_error(error: HTTPException) -> WerkzeugResponse:
    """Unknown paths and wrong methods are found before any view runs, so blueprint handlers never
    see them (Flask's documented limit); under /v2 they get the protocol's shape too."""
    if request.path == bp.url_prefix or request.path.startswith(f"{bp.url_prefix}/"):
        return error_response(error)
    return web.handle_http_exception(error)


bp.register_error_handler(APIError, error_response)
bp.register_error_handler(HTTPException, error_response)


def register_error_handlers(app: Flask) -> None:
    """Call after web.register_error_handlers: these are more specific, so they win for 404 and 405."""
    app.register_error_handler(NotFound, handle_routing_error)
    app.register_error_handler(MethodNotAllowed, handle_routing_error)
