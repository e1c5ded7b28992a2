"""The baseline: a naive Flask scorer, the way a tutorial writes it (one predict call, no checks)."""

import os

import joblib
from flask import Flask, jsonify, request

app = Flask(__name__)
model = joblib.load(os.path.join(os.environ["MODEL_DIR"], "model.joblib"))


@app.post("/predict")
def predict():  # type: ignore[no-untyped-def]
    rows = request.get_json()["instances"]
    return jsonify(predictions=model.predict(rows).tolist())
