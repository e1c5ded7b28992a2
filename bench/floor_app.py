"""Optional peer: the floor. Flask under the same gunicorn, answering each body it has seen before
from a table: what reading a request and sending a /predict-sized answer cost, with no parsing,
validation or model call. No Flask app serving this model on one core can beat it."""

import json
import os

import joblib
from flask import Flask, Response, request

app = Flask(__name__)
model = joblib.load(os.path.join(os.environ["MODEL_DIR"], "model.joblib"))
classes = [str(label) for label in model.classes_.tolist()]
answers: dict[bytes, bytes] = {}  # the benchmark sends a fixed set of bodies; each is scored once


@app.post("/predict")
def predict() -> Response:
    body = request.get_data()
    answer = answers.get(body)
    if answer is None:
        probabilities = model.predict_proba(json.loads(body)["instances"])
        answer = answers[body] = json.dumps(
            {
                "predictions": model.classes_[probabilities.argmax(axis=1)].tolist(),
                "probabilities": [dict(zip(classes, row, strict=True)) for row in probabilities.tolist()],
                "model_version": "floor",
            }
        ).encode()
    return Response(answer, mimetype="application/json")
