"""Optional peer: the naive scorer that also returns probabilities, by a second model call."""

import os

import joblib
from flask import Flask, jsonify, request

app = Flask(__name__)
model = joblib.load(os.path.join(os.environ["MODEL_DIR"], "model.joblib"))


@app.post("/predict")
def predict():  # type: ignore[no-untyped-def]
    rows = request.get_json()["instances"]
    labels = model.predict(rows).tolist()
    probabilities = model.predict_proba(rows).tolist()
    classes = model.classes_.tolist()
    return jsonify(
        predictions=labels, probabilities=[dict(zip(classes, p, strict=True)) for p in probabilities]
    )
