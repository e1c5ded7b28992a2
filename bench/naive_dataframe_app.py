"""The baseline for the mixed-type model: a naive Flask scorer that builds a pandas DataFrame per
request, as a tutorial does for a pipeline with text columns, and calls predict_proba once."""

import os

import joblib
import pandas as pd
from flask import Flask, jsonify, request

app = Flask(__name__)
model = joblib.load(os.path.join(os.environ["MODEL_DIR"], "model.joblib"))


@app.post("/predict")
def predict():  # type: ignore[no-untyped-def]
    # Columns stay numbered: the pipeline selects them by position, as train.py fitted it. pandas
    # reads a JSON null as NaN, which the pipeline's imputers take for missing.
    frame = pd.DataFrame(request.get_json()["instances"])
    probabilities = model.predict_proba(frame)
    classes = model.classes_.tolist()
    return jsonify(
        predictions=model.classes_.take(probabilities.argmax(axis=1)).tolist(),
        probabilities=[dict(zip(classes, p, strict=True)) for p in probabilities.tolist()],
    )
