"""Prometheus metrics for GET /metrics, added up across gunicorn's workers (multiprocess mode)."""

from __future__ import annotations

import math
import os
from collections import Counter as Tally
from collections.abc import Sequence
from typing import Any

from flask import Blueprint, Flask, Response, current_app, request
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from skserve.model import LoadedModel

# prometheus_client chose its mode from this variable when first imported; so do we. Under gunicorn,
# skserve.gunicorn_config sets it (before importing the app) and makes the directory.
MULTIPROCESS_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR")

EXTENSION = "skserve.metrics"
UNMATCHED = "unmatched"  # the endpoint label of requests that matched no route (404, 405)
# Where a request's row count and error code wait in its WSGI environ for its log line (request_log).
ROWS_KEY = "skserve.rows"
ERROR_KEY = "skserve.error"

# Where the metrics are defined; in multiprocess mode, /metrics reads every process's files instead.
REGISTRY = CollectorRegistry()

REQUESTS = Counter(
    "skserve_requests", "HTTP requests by route and status", ["endpoint", "status"], registry=REGISTRY
)
REQUEST_SECONDS = Histogram(
    "skserve_request_duration_seconds",
    "Time from the request's arrival in the app to its response, by route",
    ["endpoint"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=REGISTRY,
)
ROWS = Counter("skserve_rows_predicted", "Rows predicted", registry=REGISTRY)
PREDICTIONS = Counter(
    "skserve_predictions", "Rows predicted, by predicted class", ["class"], registry=REGISTRY
)
PREDICTED_VALUES = Gauge(
    "skserve_predicted_values",
    "A regressor's predicted values added up; divided by skserve_rows_predicted_total, their mean",
    # A sum that can fall (values may be negative), kept across worker restarts like a counter.
    multiprocess_mode="sum",
    registry=REGISTRY,
)
BATCH_ROWS = Histogram(
    "skserve_batch_size",
    "Rows per call to the model (a call may answer several requests)",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096),
    registry=REGISTRY,
)
ERRORS = Counter("skserve_errors", "Error responses by error code", ["code"], registry=REGISTRY)
MODEL_INFO = Gauge(
    "skserve_model_info",
    "The model being served; the value is always 1",
    ["version", "sha256", "estimator"],
    # Set once in the process that loads the model (gunicorn's master); the max over processes is 1.
    multiprocess_mode="max",
    registry=REGISTRY,
)

# Label children by key, so a request pays a dict lookup rather than prometheus_client's locked one.
_route_metrics: dict[tuple[str, int], tuple[Any, Any]] = {}

bp = Blueprint("metrics", __name__)


def init_app(app: Flask, model: LoadedModel) -> None:
    """Publish `model` in skserve_model_info and serve GET /metrics."""
    if MULTIPROCESS_DIR is None:
        # A server serves one model; tests build apps around several, and each starts these afresh.
        MODEL_INFO.clear()
        PREDICTIONS.clear()
        PREDICTED_VALUES.set(0)
        exposed = REGISTRY
    else:
        exposed = CollectorRegistry()
        multiprocess.MultiProcessCollector(exposed, MULTIPROCESS_DIR)  # type: ignore[no-untyped-call]
    MODEL_INFO.labels(model.version, model.card["sha256"], estimator_name(model)).set(1)
    # Only the model's own classes get a series, which keeps the label's values bounded; a regressor
    # has none, and its predicted values are added up instead (skserve_predicted_values).
    by_class = {label: PREDICTIONS.labels(str(label)) for label in model.classes or []}
    app.extensions[EXTENSION] = (exposed, by_class)
    app.register_blueprint(bp)


@bp.get("/metrics")
def metrics() -> Response:
    exposed, _ = current_app.extensions[EXTENSION]
    return Response(generate_latest(exposed), content_type=CONTENT_TYPE_PLAIN_0_0_4)


def estimator_name(model: LoadedModel) -> str:
    """The card's estimator name (as train.py's --model), else the estimator's class name."""
    described = model.card.get("estimator")
    if isinstance(described, dict) and isinstance(described.get("name"), str):
        return str(described["name"])
    return type(model.estimator).__name__


def observe_request(endpoint: str, status: int, seconds: float) -> None:
    """Count a finished request and its duration; `endpoint` is its route rule or UNMATCHED."""
    children = _route_metrics.get((endpoint, status))
    if children is None:
        children = (REQUESTS.labels(endpoint, str(status)), REQUEST_SECONDS.labels(endpoint))
        _route_metrics[endpoint, status] = children
    children[0].inc()
    children[1].observe(seconds)


def observe_predictions(labels: Sequence[Any]) -> None:
    """Count one request's predicted rows and their classes (a regressor's: add up its predicted
    values); the row count also goes in its log line."""
    request.environ[ROWS_KEY] = len(labels)
    ROWS.inc(len(labels))
    _, by_class = current_app.extensions[EXTENSION]
    if not by_class:
        PREDICTED_VALUES.inc(math.fsum(labels))
        return
    for label, count in Tally(labels).items():
        counter = by_class.get(label)
        if counter is not None:
            counter.inc(count)


def observe_error(code: str) -> None:
    """Count an error response by its code; the code also goes in the request's log line."""
    request.environ[ERROR_KEY] = code
    ERRORS.labels(code).inc()


def observe_batch(rows: int) -> None:
    """Record the number of rows in one call to the model (for the batcher)."""
    BATCH_ROWS.observe(rows)
