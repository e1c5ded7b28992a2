"""The Open Inference Protocol (KServe V2) over REST: health, metadata and inference for the one model."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from math import prod
from typing import Any

import orjson
from flask import Blueprint, Flask, Response, current_app, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.wrappers import Response as WerkzeugResponse

from skserve import binary_tensors, drain, metrics, web
from skserve.errors import APIError, InvalidInput, UnsupportedMediaType
from skserve.model import LoadedModel, Prediction
from skserve.schema import json_type, parse_json, rows_of_values, tensor_rows
from skserve.v2_protocol import (
    BINARY_SIZE,
    BYTES,
    EXTENSIONS,
    FP64,
    INPUT_NAME,
    PLATFORM,
    PREDICT_PROBA,
    SERVER_NAME,
    SERVER_VERSION,
    UNSUPPORTED_INPUT_PARAMETERS,
    classes,
    feature_datatype,
    input_metadata,
    model_outputs,
    output_metadata,
    output_type,
    takes_one_tensor,
)

bp = Blueprint("v2", __name__, url_prefix="/v2")

# Real clients name the model in the body too (KServe's SDK sends "model_name"); accepted when it agrees.
REQUEST_KEYS = {"id", "parameters", "inputs", "outputs", "model_name", "model_version"}
INPUT_KEYS = {"name", "shape", "datatype", "parameters", "data"}
OUTPUT_KEYS = {"name", "parameters"}
# The binary tensor data extension: the body is a JSON header of this many bytes, then raw tensor bytes.
BINARY_HEADER = "Inference-Header-Content-Length"
JSON = "application/json"
OCTET_STREAM = "application/octet-stream"


@dataclass(frozen=True)
class Tensor:
    """An input tensor whose structure is checked: `data` is its JSON "data", or its binary data."""

    where: str
    name: str
    datatype: str
    shape: list[int]
    data: Any

    def values(self) -> Any:
        """The JSON data as sent, or the binary data decoded (flat) once the datatype is checked."""
        if not isinstance(self.data, bytes):
            return self.data
        try:
            return binary_tensors.decode(self.data, self.datatype, prod(self.shape))
        except InvalidInput as error:
            raise InvalidInput(f"{self.where}: {error.message}") from None


@dataclass(frozen=True)
class InferenceRequest:
    """A checked inference request: the rows still hold raw JSON values for `rows_of_values`."""

    id: str | None
    rows: list[Any]
    # The outputs to return, in order, each with whether it goes in binary.
    outputs: list[tuple[str, bool]]


@bp.get("")
@bp.get("/")
def server_metadata() -> Response:
    return web.json_response({"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": EXTENSIONS})


@bp.get("/health/live")
def server_live() -> Response:
    return web.json_response({"live": True})


@bp.get("/health/ready")
def server_ready() -> Response:
    # The factory refuses to build an app without a verified model, so an app that answers is ready
    # until it is told to stop (skserve.drain).
    ready = not drain.draining()
    return web.json_response({"ready": ready}, 200 if ready else 503)


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
    inference = parse_inference_request(*read_inference_body(), model)
    rows = rows_of_values(inference.rows, model.features, current_app.config["MAX_ROWS"])
    prediction = web.predict_rows(rows)  # the /predict view's path, micro-batching included
    metrics.observe_predictions(prediction.labels)
    body: dict[str, Any] = {"model_name": model.name, "model_version": model.version}
    if inference.id is not None:
        body["id"] = inference.id
    body["outputs"] = []
    binary: list[bytes] = []
    for output, as_binary in inference.outputs:
        tensor = output_tensor(output, prediction, model)
        if as_binary:
            raw = binary_tensors.encode(tensor.pop("data"), tensor["datatype"])
            tensor["parameters"] = {BINARY_SIZE: len(raw)}
            binary.append(raw)
        body["outputs"].append(tensor)
    if not binary:
        return web.json_response(body)
    header = orjson.dumps(body)
    response = Response(b"".join([header, *binary]), mimetype=OCTET_STREAM)
    response.headers[BINARY_HEADER] = str(len(header))
    return response


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
    """The model metadata response: the inputs the model takes and the outputs its task gives."""
    return {
        "name": model.name,
        "versions": [model.version],
        "platform": PLATFORM,
        "inputs": input_metadata(model),
        "outputs": output_metadata(model),
    }


def read_inference_body() -> tuple[Any, bytes]:
    """The parsed JSON header and the binary tensor data after it (empty without the extension).

    Unlike /predict a missing Content-Type is accepted: tritonclient sends none.
    """
    if request.content_encoding not in (None, "identity"):
        raise UnsupportedMediaType(
            f"request bodies are not decompressed; got Content-Encoding {request.content_encoding}"
        )
    header_length = request.headers.get(BINARY_HEADER)
    if header_length is None:
        if request.mimetype not in ("", JSON):
            raise UnsupportedMediaType(f"expected Content-Type {JSON}, got {request.mimetype}")
        return parse_json(web.read_body()), b""
    if request.mimetype not in ("", OCTET_STREAM):
        raise UnsupportedMediaType(
            f"a body with binary tensor data ({BINARY_HEADER}) must have Content-Type {OCTET_STREAM} "
            f"or none, got {request.mimetype}"
        )
    body = web.read_body()
    # At most 19 digits: int() of a long run of digits is slow, and past 4300 of them a ValueError.
    if not (header_length.isascii() and header_length.isdigit() and len(header_length) < 20):
        raise InvalidInput(f"{BINARY_HEADER} must be a positive byte count, got {shorten(header_length)}")
    length = int(header_length)
    if length == 0 or length > len(body):
        raise InvalidInput(f"{BINARY_HEADER} is {length} but the body has {len(body)} bytes")
    return parse_json(body[:length]), body[length:]


def parse_inference_request(payload: Any, binary: bytes, model: LoadedModel) -> InferenceRequest:
    """Check an inference request's structure and gather its rows in feature order.

    The inputs are one [n, k] FP64 tensor named "input-0" (models whose features are all numbers),
    or one [n] tensor per feature, named by it; their data is JSON or binary (the extension).
    """
    if not isinstance(payload, dict):
        raise InvalidInput(
            f'expected an inference request object {{"inputs": [...]}}, got {json_type(payload)}'
        )
    refuse_unknown_keys(payload, REQUEST_KEYS, "the inference request")
    request_id = payload.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInput(f'"id" must be a string, got {json_type(request_id)}')
    for key, expected in (("model_name", model.name), ("model_version", model.version)):
        if key in payload and payload[key] != expected:
            got = shorten(payload[key]) if isinstance(payload[key], str) else json_type(payload[key])
            raise InvalidInput(f'"{key}" is {got} but this server serves {expected!r}: leave it out or agree')
    parameters = check_parameters(payload.get("parameters"), '"parameters"')
    inputs = payload.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        got = "an empty array" if isinstance(inputs, list) else json_type(inputs)
        raise InvalidInput(f'"inputs" must be a non-empty array of input tensors, got {got}')
    tensors = input_tensors(inputs, binary)
    if len(tensors) == 1 and tensors[0].name == INPUT_NAME:
        rows = tensor_rows_of(tensors[0], model)
    else:
        rows = feature_rows(tensors, model)
    binary_default = flag(parameters, "binary_data_output", '"parameters"')
    return InferenceRequest(
        request_id, rows, requested_outputs(payload.get("outputs"), model, binary_default)
    )


def input_tensors(inputs: list[Any], binary: bytes) -> list[Tensor]:
    """The input tensors with their data, from JSON or from their share of the binary data, in order."""
    tensors: list[Tensor] = []
    offset = 0
    for index, tensor in enumerate(inputs):
        where, name, datatype, shape, size = tensor_header(tensor, index)
        if size is None:
            data = tensor["data"]
        else:
            if offset + size > len(binary):
                raise InvalidInput(
                    f"{where}: {BINARY_SIZE} {size} runs past the end of the binary data "
                    f"({len(binary) - offset} bytes left after the JSON header)"
                )
            data = binary[offset : offset + size]
            offset += size
        tensors.append(Tensor(where, name, datatype, shape, data))
    if offset != len(binary):
        raise InvalidInput(
            f"{len(binary)} bytes follow the JSON header but the inputs' {BINARY_SIZE} add up to {offset}"
        )
    return tensors


def tensor_header(tensor: Any, index: int) -> tuple[str, str, str, list[int], int | None]:
    """An input tensor's place for messages, name, datatype, shape and binary data size (None: JSON data)."""
    where = f"inputs[{index}]"
    if not isinstance(tensor, dict):
        raise InvalidInput(f"{where} must be a tensor object, got {json_type(tensor)}")
    refuse_unknown_keys(tensor, INPUT_KEYS, where)
    parameters = check_parameters(tensor.get("parameters"), f"{where}.parameters")
    for parameter, extension in UNSUPPORTED_INPUT_PARAMETERS.items():
        if parameter in parameters:
            raise InvalidInput(f"{where}: {extension} ({parameter}) is not supported; send the data")
    name, datatype, shape = tensor.get("name"), tensor.get("datatype"), tensor.get("shape")
    if not isinstance(name, str):
        raise InvalidInput(f'{where} must have a string "name", got {json_type(name)}')
    where = f"inputs[{index}] ({shorten(name)})"
    if not isinstance(datatype, str):
        raise InvalidInput(f'{where} must have a string "datatype", got {json_type(datatype)}')
    if not isinstance(shape, list) or not all(type(size) is int and size >= 0 for size in shape):
        raise InvalidInput(f'{where}: "shape" must be an array of non-negative integers')
    size = parameters.get(BINARY_SIZE)
    if size is None and "data" not in tensor:
        raise InvalidInput(f'{where} lacks "data" (or parameters.{BINARY_SIZE} for binary data)')
    if size is not None and "data" in tensor:
        raise InvalidInput(f'{where} has both "data" and parameters.{BINARY_SIZE}: send one')
    if size is not None and (type(size) is not int or size < 0):
        raise InvalidInput(f"{where}: parameters.{BINARY_SIZE} must be a byte count, got {json_type(size)}")
    return where, name, datatype, shape, size


def tensor_rows_of(tensor: Tensor, model: LoadedModel) -> list[Any]:
    """The rows of the one [n, k] FP64 tensor, for models whose features are all numbers."""
    if not takes_one_tensor(model):
        raise InvalidInput(
            f"{tensor.where}: this model takes one [n] tensor per feature, named by it: {model.feature_names}"
        )
    check_datatype(tensor, FP64)
    try:
        return tensor_rows(tensor.values(), tensor.shape, len(model.features))
    except InvalidInput as error:
        raise InvalidInput(f"{tensor.where}: {error.message}") from None


def feature_rows(tensors: list[Tensor], model: LoadedModel) -> list[list[Any]]:
    """The rows of one [n] tensor per feature, in feature order."""
    by_name: dict[str, Tensor] = {}
    features = {feature.name: feature for feature in model.features}
    for tensor in tensors:
        if tensor.name not in features:
            alternative = f" or one {INPUT_NAME!r} tensor" if takes_one_tensor(model) else ""
            raise InvalidInput(
                f"{tensor.where}: unknown input; the model's inputs are its features "
                f"{model.feature_names}{alternative}"
            )
        if tensor.name in by_name:
            raise InvalidInput(f"{tensor.where}: input {shorten(tensor.name)} is given twice")
        by_name[tensor.name] = tensor
    missing = [name for name in model.feature_names if name not in by_name]
    if missing:
        raise InvalidInput(f"inputs lack the features {missing}: send one [n] tensor for each")
    first = by_name[model.feature_names[0]]
    columns = []
    for feature in model.features:
        tensor = by_name[feature.name]
        check_datatype(tensor, feature_datatype(feature))
        if len(tensor.shape) != 1 or tensor.shape[0] == 0:
            raise InvalidInput(
                f'{tensor.where}: "shape" must be [n] (n rows, at least one), got {tensor.shape}'
            )
        if tensor.shape != first.shape:
            raise InvalidInput(
                f'{tensor.where}: "shape" is {tensor.shape} but {first.where} has {first.shape}'
            )
        values = tensor.values()
        if not isinstance(values, list) or len(values) != tensor.shape[0]:
            got = f"{len(values)} values" if isinstance(values, list) else json_type(values)
            raise InvalidInput(
                f'{tensor.where}: "data" must be an array of {tensor.shape[0]} values, got {got}'
            )
        columns.append(values)
    return [list(row) for row in zip(*columns, strict=True)]


def check_datatype(tensor: Tensor, expected: str) -> None:
    if tensor.datatype != expected:
        raise InvalidInput(f"{tensor.where}: expected datatype {expected}, got {shorten(tensor.datatype)}")


def requested_outputs(outputs: Any, model: LoadedModel, binary_default: bool) -> list[tuple[str, bool]]:
    """The outputs to return, in the order asked (all of them when none are named), each with whether
    it is sent as binary data: its own "binary_data" parameter, else the request's "binary_data_output"."""
    available = model_outputs(model)
    if outputs is None or outputs == []:
        return [(name, binary_default) for name in available]
    if not isinstance(outputs, list):
        raise InvalidInput(f'"outputs" must be an array of {{"name": ...}} objects, got {json_type(outputs)}')
    requested: dict[str, bool] = {}
    for index, output in enumerate(outputs):
        where = f"outputs[{index}]"
        if not isinstance(output, dict):
            raise InvalidInput(f'{where} must be an object {{"name": ...}}, got {json_type(output)}')
        refuse_unknown_keys(output, OUTPUT_KEYS, where)
        parameters = check_parameters(output.get("parameters"), f"{where}.parameters")
        name = output.get("name")
        if name not in available:
            shown = shorten(name) if isinstance(name, str) else json_type(name)
            raise InvalidInput(f"{where}: unknown output {shown}; the model's outputs are {list(available)}")
        if name in requested:
            raise InvalidInput(f"{where}: output {name!r} is requested twice")
        requested[name] = flag(parameters, "binary_data", f"{where}.parameters", binary_default)
    return list(requested.items())


def flag(parameters: dict[str, Any], name: str, where: str, default: bool = False) -> bool:
    value = parameters.get(name, default)
    if type(value) is not bool:
        raise InvalidInput(f'{where}: "{name}" must be true or false, got {json_type(value)}')
    return value


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


def output_tensor(name: str, prediction: Prediction, model: LoadedModel) -> dict[str, Any]:
    """One response tensor; data is flat in row-major order, as the protocol's examples give it."""
    n_rows = len(prediction.labels)
    datatype = output_type(name, model)["datatype"]
    # Only a classifier's prediction has probabilities; requested_outputs offers predict_proba to no other.
    if name == PREDICT_PROBA and prediction.probabilities is not None:
        data = prediction.probabilities.ravel().tolist()
        return {"name": name, "datatype": datatype, "shape": [n_rows, len(classes(model))], "data": data}
    labels = [str(label) for label in prediction.labels] if datatype == BYTES else prediction.labels
    return {"name": name, "datatype": datatype, "shape": [n_rows], "data": labels}


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
