"""Train a scikit-learn classifier and write the artifact pair (model.joblib, model.json) serving loads."""

from __future__ import annotations

import argparse
import csv
import hashlib
import math
import platform
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import sklearn
from sklearn.datasets import load_iris
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

# train.py is a script at the top of the repository; the artifact code it shares with serving is in src/.
sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))
from skserve.artifact import CARD_FORMAT_VERSION, write_artifact

MODELS = ("logistic_regression", "random_forest", "hist_gradient_boosting")
DEFAULT_MODEL = "logistic_regression"
DEFAULT_SEED = 42
TEST_FRACTION = 0.25


class TrainingError(Exception):
    """Training cannot go ahead; the message says why in one line."""


@dataclass(frozen=True)
class Dataset:
    name: str
    features: list[str]
    X: np.ndarray
    y: np.ndarray
    sha256: str


def load_bundled() -> Dataset:
    """scikit-learn's bundled iris data, with class names as labels (nothing is downloaded)."""
    iris = load_iris()
    X = np.asarray(iris.data, dtype=np.float64)
    y = np.asarray(iris.target_names)[iris.target]
    digest = hashlib.sha256(X.tobytes() + "\n".join(y.tolist()).encode()).hexdigest()
    return Dataset("iris", list(iris.feature_names), X, y, digest)


def load_csv(path: Path, target: str) -> Dataset:
    """A CSV with a header row, numeric feature columns and a target column of any type."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise TrainingError(f"cannot read {path}: {error.strerror}") from None
    try:
        lines = raw.decode("utf-8-sig").splitlines()
    except UnicodeDecodeError:
        raise TrainingError(f"{path} is not UTF-8 text") from None
    records = [record for record in csv.reader(lines) if record]
    if not records:
        raise TrainingError(f"{path} is empty")
    header, rows = records[0], records[1:]
    if target not in header:
        raise TrainingError(f"{path} has no column {target!r}; its columns are {header}")
    if not rows:
        raise TrainingError(f"{path} has a header but no data rows")
    for number, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise TrainingError(f"{path} line {number}: {len(row)} fields, the header has {len(header)}")
    target_index = header.index(target)
    features = [name for name in header if name != target]
    if not features:
        raise TrainingError(f"{path} has no feature columns besides {target!r}")
    columns = list(zip(*rows, strict=True))
    X = np.column_stack([_numeric_column(columns[header.index(name)]) for name in features])
    bad = [name for name, column in zip(features, X.T, strict=True) if not np.isfinite(column).all()]
    if bad:
        raise TrainingError(
            f"feature columns must hold finite numbers; non-numeric or missing values in {bad}"
        )
    return Dataset(path.stem, features, X, _labels(columns[target_index]), hashlib.sha256(raw).hexdigest())


def _numeric_column(values: tuple[str, ...]) -> np.ndarray:
    """Floats, with NaN standing for any value that is not a number (reported by the caller)."""
    return np.array([_to_float(value) for value in values], dtype=np.float64)


def _to_float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def _labels(values: tuple[str, ...]) -> np.ndarray:
    """Integer labels when every value is an integer, the text otherwise."""
    stripped = [value.strip() for value in values]
    if all(value.lstrip("-").isdigit() for value in stripped):
        return np.array([int(value) for value in stripped])
    return np.array(stripped)


def build_estimator(model: str, seed: int) -> Any:
    if model == "logistic_regression":
        # Scaling lives inside the saved Pipeline, so serving never repeats preprocessing.
        return Pipeline(
            [("scale", StandardScaler()), ("classify", LogisticRegression(max_iter=1000, random_state=seed))]
        )
    if model == "random_forest":
        return RandomForestClassifier(n_estimators=100, random_state=seed)
    if model == "hist_gradient_boosting":
        return HistGradientBoostingClassifier(random_state=seed)
    raise TrainingError(f"unknown model {model!r}; choose one of {list(MODELS)}")


def train(data: Dataset, model: str, seed: int, name: str | None = None) -> tuple[Any, dict[str, Any]]:
    """Fit on a stratified split and return the estimator and its model card (without sha256)."""
    classes, counts = np.unique(data.y, return_counts=True)
    if len(classes) < 2:
        raise TrainingError(
            f"the target has only one class ({classes.tolist()}); a classifier needs at least two"
        )
    if counts.min() < 2:
        rare = classes[counts < 2].tolist()
        raise TrainingError(f"classes {rare} have a single row; every class needs at least two to split")
    try:
        X_train, X_test, y_train, y_test = train_test_split(
            data.X, data.y, test_size=TEST_FRACTION, random_state=seed, stratify=data.y
        )
    except ValueError as error:
        raise TrainingError(f"cannot split {len(data.y)} rows into training and test sets: {error}") from None
    estimator = build_estimator(model, seed)
    estimator.fit(X_train, y_train)
    predicted = estimator.predict(X_test)
    card = {
        "format_version": CARD_FORMAT_VERSION,
        "name": name or f"{data.name}-{model.replace('_', '-')}",
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "task": "classification",
        "features": data.features,
        "classes": estimator.classes_.tolist(),
        "metrics": {
            "accuracy": round(float(accuracy_score(y_test, predicted)), 6),
            "f1_macro": round(float(f1_score(y_test, predicted, average="macro")), 6),
            "test_rows": len(y_test),
        },
        "training_data": {
            "source": data.name,
            "rows": len(data.y),
            "columns": len(data.features) + 1,
            "sha256": data.sha256,
        },
        "estimator": {"name": model, "class": type(estimator).__name__, "params": _plain_params(estimator)},
        "seed": seed,
        "versions": {
            "python": platform.python_version(),
            "scikit-learn": sklearn.__version__,
            "numpy": np.__version__,
            "joblib": joblib.__version__,
        },
    }
    return estimator, card


def _plain_params(estimator: Any) -> dict[str, Any]:
    """The estimator's parameters that are plain JSON values (nested estimators are named by class)."""
    return {
        key: value if isinstance(value, (str, int, float, bool, type(None))) else type(value).__name__
        for key, value in sorted(estimator.get_params(deep=True).items())
        if not isinstance(value, list)
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, help="CSV file with a header row (default: bundled iris data)")
    parser.add_argument("--target", help="name of the CSV's target column (required with --data)")
    parser.add_argument(
        "--model", choices=MODELS, default=DEFAULT_MODEL, help=f"estimator (default: {DEFAULT_MODEL})"
    )
    parser.add_argument(
        "--output", type=Path, default=Path("models"), help="artifact directory (default: models/)"
    )
    parser.add_argument(
        "--seed", type=int, default=DEFAULT_SEED, help=f"random seed (default: {DEFAULT_SEED})"
    )
    parser.add_argument("--name", help="model name (default: <data>-<model>, e.g. iris-logistic-regression)")
    args = parser.parse_args(argv)
    if args.data is not None and not args.target:
        parser.error("--data needs --target naming the column to predict")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        data = load_bundled() if args.data is None else load_csv(args.data, args.target)
        estimator, card = train(data, args.model, args.seed, args.name)
        card = write_artifact(args.output, estimator, card)
    except TrainingError as error:
        print(f"train.py: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"train.py: error: cannot write to {args.output}: {error.strerror}", file=sys.stderr)
        return 2
    metrics = card["metrics"]
    print(
        f"trained {card['name']} ({card['estimator']['class']}) on {card['training_data']['rows']} rows; "
        f"held-out {metrics['test_rows']} rows: accuracy {metrics['accuracy']:.3f}, "
        f"macro F1 {metrics['f1_macro']:.3f}; wrote {args.output}/ (version {card['version']})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
