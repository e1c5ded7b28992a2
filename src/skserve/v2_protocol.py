"""The Open Inference Protocol (V2) as this server speaks it: shared by its views and the OpenAPI document."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from skserve.model import LoadedModel

SERVER_NAME = "skserve"
SERVER_VERSION = "0.1.0"  # pyproject.toml's version (a test keeps the two in step)
PLATFORM = "sklearn_joblib"  # the protocol names platforms "<project>_<format>"
INPUT_NAME = "input-0"
INPUT_DATATYPE = "FP64"
PREDICT = "predict"
PREDICT_PROBA = "predict_proba"
OUTPUTS = (PREDICT, PREDICT_PROBA)

# Input parameters of protocol extensions this server does not implement: each means "data" is elsewhere.
UNSUPPORTED_INPUT_PARAMETERS = {
    "binary_data_size": "binary tensor data",
    "shared_memory_region": "shared memory",
}


def classes(model: LoadedModel) -> list[Any]:
    """The class labels in the order of predict_proba's columns."""
    labels: list[Any] = model.estimator.classes_.tolist()
    return labels


def label_datatype(labels: Iterable[Any]) -> str:
    """INT64 when every class label is an integer, BYTES (labels as strings) otherwise."""
    return "INT64" if all(type(label) is int for label in labels) else "BYTES"
