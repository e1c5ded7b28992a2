"""Optional peer: the bare work. Flask under the same gunicorn doing only what no /predict can
skip: parse the body (orjson), check that every value is a number, score with skserve's own
verified scorer and encode labels and probability objects as skserve does. No request ID, access
log line, metrics, batching, size, content-type or finiteness checks, or error handling: the gap
between this peer and skserve is what those cost."""

import os
import sys
from itertools import chain
from pathlib import Path

import numpy as np
import orjson
from flask import Flask, Response, request

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))  # skserve is not installed
from skserve.api import probability_objects
from skserve.model import LoadedModel

app = Flask(__name__)
model = LoadedModel.load(Path(os.environ["MODEL_DIR"]))
NUMBERS = frozenset({int, float})


@app.post("/predict")
def predict() -> Response:
    instances = orjson.loads(request.get_data())["instances"]
    if not NUMBERS.issuperset(map(type, chain.from_iterable(instances))):
        return Response(b'{"error":"expected numbers"}', 400, mimetype="application/json")
    probabilities = model.outputs(np.array(instances, dtype=np.float64))
    body = {
        "predictions": model.estimator.classes_.take(probabilities.argmax(axis=1)).tolist(),
        "probabilities": probability_objects(probabilities, model.class_names),
        "model_version": model.version,
    }
    return Response(orjson.dumps(body), mimetype="application/json")
