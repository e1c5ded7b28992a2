"""The Open Inference Protocol (V2) as this server speaks it: shared by its views and the OpenAPI document."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from skserve.features import CATEGORY, CLASSIFICATION, Feature
from skserve.model import LoadedModel

SERVER_NAME = "skserve"
SERVER_VERSION = "0.1.0"  # pyproject.toml's version (a test keeps the two in step)
EXTENSIONS = ["binary_tensor_data"]
PLATFORM = "sklearn_joblib"  # the protocol names platforms "<project>_<format>"
FP64 = "FP64"
INT64 = "INT64"
BYTES = "BYTES"
# Models whose features are all FP64 also take the rows as one [n, k] tensor of this name.
INPUT_NAME = "input-0"
INPUT_DATATYPE = FP64
PREDICT = "predict"
PREDICT_PROBA = "predict_proba"
OUTPUTS = (PREDICT, PREDICT_PROBA)

# Input parameters of protocol extensions this server does not implement: each means "data" is elsewhere.
UNSUPPORTED_INPUT_PARAMETERS = {"shared_memory_region": "shared memory"}
# The binary tensor data extension's parameter: the tensor's data is this many bytes after the JSON.
BINARY_SIZE = "binary_data_size"


def input_metadata(model: LoadedModel) -> list[dict[str, Any]]:
    """The inputs the model metadata lists: the one [n, k] FP64 tensor when it fits, else one per feature."""
    if takes_one_tensor(model):
        return [{"name": INPUT_NAME, "datatype": FP64, "shape": [-1, len(model.features)]}]
    return [
        {"name": feature.name, "datatype": feature_datatype(feature), "shape": [-1]}
        for feature in model.features
    ]


def output_metadata(model: LoadedModel) -> list[dict[str, Any]]:
    return [{"name": name, **output_type(name, model)} for name in model_outputs(model)]


def feature_datatype(feature: Feature) -> str:
    """FP64 for numbers (and categories that are numbers), BYTES for text, as pandas codecs expect."""
    return BYTES if feature.kind == CATEGORY and not feature.numeric_categories else FP64


def takes_one_tensor(model: LoadedModel) -> bool:
    """Whether the rows fit one [n, k] FP64 tensor: every feature is FP64. Per-feature tensors always work."""
    return all(feature_datatype(feature) == FP64 for feature in model.features)


def model_outputs(model: LoadedModel) -> tuple[str, ...]:
    """A classifier gives labels and probabilities, a regressor its predicted values."""
    return OUTPUTS if model.task == CLASSIFICATION else (PREDICT,)


def output_type(name: str, model: LoadedModel) -> dict[str, Any]:
    """The datatype and shape (-1 for any number of rows) of an output."""
    if name == PREDICT_PROBA:
        return {"datatype": FP64, "shape": [-1, len(classes(model))]}
    datatype = label_datatype(classes(model)) if model.task == CLASSIFICATION else FP64
    return {"datatype": datatype, "shape": [-1]}


def classes(model: LoadedModel) -> list[Any]:
    """The class labels in the order of predict_proba's columns."""
    labels: list[Any] = model.estimator.classes_.tolist()
    return labels


def label_datatype(labels: Iterable[Any]) -> str:
    """INT64 when every class label is an integer, BYTES (labels as strings) otherwise."""
    return INT64 if all(type(label) is int for label in labels) else BYTES
