"""Typed rows as training presented them; a pipeline fitted on a DataFrame, which train.py does not make."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import sklearn
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from skserve.artifact import write_artifact
from skserve.features import CATEGORY, CLASSIFICATION, DATAFRAME_INPUT, NUMBER, Feature, features_to_card
from tests.conftest import PENGUINS_CSV

# The penguins CSV's columns (conftest's mixed models predict species or body_mass_g from the others).
PENGUIN_COLUMNS = PENGUINS_CSV.read_text().splitlines()[0].split(",")


def presented(rows: Sequence[Any], features: Sequence[Feature]) -> np.ndarray:
    """Rows (lists in feature order or objects) as train.py fitted on them: an object array of
    floats and categories with NaN for a missing value, or a float64 matrix when all are numbers."""
    names = [feature.name for feature in features]
    matrix = np.empty((len(rows), len(features)), dtype=object)
    for index, row in enumerate(rows):
        values = [row[name] for name in names] if isinstance(row, dict) else row
        matrix[index] = [
            np.nan if value is None else float(value) if feature.kind == NUMBER else value
            for feature, value in zip(features, values, strict=True)
        ]
    if all(feature.kind == NUMBER for feature in features):
        return matrix.astype(np.float64)
    return matrix


# A pipeline fitted on a pandas DataFrame, selecting its columns by name, as a user might package it.
FRAME_FEATURES = (
    Feature("length", NUMBER, nullable=True, dtype="float64"),
    Feature("colour", CATEGORY, nullable=True, categories=("blue", "green", "red"), dtype="object"),
    Feature("count", NUMBER, dtype="int64"),
)


def save_frame_model(directory: Path) -> Path:
    import pandas as pd  # noqa: PLC0415 (the other models' tests need no pandas)

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "length": [np.nan if i % 9 == 0 else v for i, v in enumerate(rng.uniform(0, 10, 90))],
            "colour": pd.Series(
                [None if i % 7 == 0 else ["blue", "green", "red"][i % 3] for i in range(90)], dtype="object"
            ),
            "count": np.arange(90, dtype=np.int64) % 7,
        }
    )
    target = np.where(frame["colour"] == "red", "warm", np.where(frame["count"] > 3, "many", "few"))
    encode = ColumnTransformer(
        [
            ("number", SimpleImputer(), ["length", "count"]),
            ("category", OneHotEncoder(handle_unknown="ignore"), ["colour"]),
        ]
    )
    estimator = Pipeline([("encode", encode), ("final", LogisticRegression(max_iter=1000))]).fit(
        frame, target
    )
    card: dict[str, Any] = {
        "format_version": 2,
        "name": "frame",
        "task": CLASSIFICATION,
        "input": DATAFRAME_INPUT,
        "features": features_to_card(FRAME_FEATURES),
        "classes": estimator.classes_.tolist(),
        "versions": {"scikit-learn": sklearn.__version__},
    }
    write_artifact(directory, estimator, card)
    return directory
