"""Tiny real models with category and missing values, for classification and regression."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import sklearn
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from skserve.artifact import write_artifact
from skserve.features import (
    ARRAY_INPUT,
    CATEGORY,
    CLASSIFICATION,
    DATAFRAME_INPUT,
    NUMBER,
    Feature,
    features_to_card,
)

FEATURES = (
    Feature("length", NUMBER, nullable=True),
    Feature("colour", CATEGORY, nullable=True, categories=("blue", "green", "red")),
    Feature("grade", CATEGORY, categories=(1, 2, 3)),
    Feature("width", NUMBER),
)
NAMES = [feature.name for feature in FEATURES]


def training_rows(n_rows: int = 90, seed: int = 0) -> np.ndarray:
    """An object array as train.py presents mixed data: floats (NaN), categories (np.nan)."""
    rng = np.random.default_rng(seed)
    rows = np.empty((n_rows, len(FEATURES)), dtype=object)
    rows[:, 0] = [np.nan if i % 9 == 0 else float(v) for i, v in enumerate(rng.uniform(0, 10, n_rows))]
    rows[:, 1] = [np.nan if i % 7 == 0 else str(rng.choice(["blue", "green", "red"])) for i in range(n_rows)]
    rows[:, 2] = [int(v) for v in rng.integers(1, 4, n_rows)]
    rows[:, 3] = [float(v) for v in rng.normal(5, 2, n_rows)]
    return rows


def pipeline(task: str) -> Pipeline:
    encode = ColumnTransformer(
        [
            ("number", make_pipeline(SimpleImputer(), StandardScaler()), [0, 3]),
            ("category", OneHotEncoder(handle_unknown="ignore"), [1, 2]),
        ]
    )
    final: Any = LogisticRegression(max_iter=1000) if task == CLASSIFICATION else Ridge()
    return Pipeline([("encode", encode), ("final", final)])


def save_mixed_model(directory: Path, task: str = CLASSIFICATION) -> Path:
    """Fit the pipeline for `task` on mixed rows and write the pair with a format-2 card."""
    rows = training_rows()
    width = np.array(rows[:, 3], dtype=float)
    if task == CLASSIFICATION:
        target: Any = np.where(rows[:, 1] == "red", "warm", np.where(width > 5, "wide", "narrow"))
    else:
        target = width * 3.0 + np.array(rows[:, 2], dtype=float)
    estimator = pipeline(task).fit(rows, target)
    card: dict[str, Any] = {
        "format_version": 2,
        "name": f"mixed-{task}",
        "task": task,
        "input": ARRAY_INPUT,
        "features": features_to_card(FEATURES),
        "versions": {"scikit-learn": sklearn.__version__},
    }
    if task == CLASSIFICATION:
        card["classes"] = estimator.classes_.tolist()
    write_artifact(directory, estimator, card)
    return directory


# A pipeline fitted on a pandas DataFrame, selecting its columns by name, as a user might package it.
FRAME_FEATURES = (
    Feature("length", NUMBER, nullable=True, dtype="float64"),
    Feature("colour", CATEGORY, nullable=True, categories=("blue", "green", "red"), dtype="object"),
    Feature("count", NUMBER, dtype="int64"),
)


def save_frame_model(directory: Path) -> Path:
    import pandas as pd  # noqa: PLC0415 (the other models' tests need no pandas)

    rows = training_rows()
    frame = pd.DataFrame(
        {
            "length": np.array(rows[:, 0], dtype=float),
            "colour": pd.Series(rows[:, 1], dtype="object"),
            "count": np.arange(len(rows), dtype=np.int64) % 7,
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
