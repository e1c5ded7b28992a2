"""Train a scikit-learn classifier or regressor and write the artifact pair (model.joblib, model.json)."""

from __future__ import annotations

import argparse
import csv
import hashlib
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris, load_wine
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import accuracy_score, f1_score, mean_absolute_error, r2_score, root_mean_squared_error
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

# train.py is a script at the top of the repository; the artifact code it shares with serving is in src/.
sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))
from skserve.artifact import card_head, library_versions, write_artifact
from skserve.features import (
    ARRAY_INPUT,
    CATEGORY,
    CLASSIFICATION,
    MISSING_SPELLINGS,
    NUMBER,
    REGRESSION,
    TASKS,
    Feature,
    is_plain_numeric,
)

# Model families, each with a classifier and a regressor; "logistic_regression" is the linear
# family's classifier under the name it had before regression existed.
MODELS = ("linear", "random_forest", "hist_gradient_boosting")
LEGACY_NAMES = {"logistic_regression": "linear"}
DEFAULT_MODEL = "linear"
# What the card's estimator name says: the estimator itself, per family and task.
ESTIMATOR_NAMES = {
    ("linear", CLASSIFICATION): "logistic_regression",
    ("linear", REGRESSION): "ridge",
    ("random_forest", CLASSIFICATION): "random_forest",
    ("random_forest", REGRESSION): "random_forest",
    ("hist_gradient_boosting", CLASSIFICATION): "hist_gradient_boosting",
    ("hist_gradient_boosting", REGRESSION): "hist_gradient_boosting",
}
DEFAULT_DATA = "iris"
DEFAULT_SEED = 42
TEST_FRACTION = 0.25
# A numeric target with more distinct values than this is inferred to be regression.
MAX_INFERRED_CLASSES = 20
# Histogram gradient boosting bins a category column into at most 255 codes; rarer categories
# beyond that share one code.
MAX_BOOSTED_CATEGORIES = 255
MISSING = frozenset(MISSING_SPELLINGS)


class TrainingError(Exception):
    """Training cannot go ahead; the message says why in one line."""


@dataclass(frozen=True)
class Dataset:
    """Rows as the estimator is fitted on them and serving presents them (see `feature_matrix`)."""

    name: str
    features: tuple[Feature, ...]
    X: np.ndarray
    # int labels, float numbers, or text, as `parse_target` reads the target column.
    y: np.ndarray
    sha256: str
    target: str = "target"
    rows_without_target: int = 0


BUNDLED: dict[str, Callable[..., Any]] = {
    "iris": load_iris,
    "wine": load_wine,
    "breast_cancer": load_breast_cancer,
    "diabetes": load_diabetes,
}


def load_bundled(name: str = DEFAULT_DATA) -> Dataset:
    """One of scikit-learn's bundled data sets (nothing is downloaded); class names as labels."""
    bunch = BUNDLED[name]()
    X = np.asarray(bunch.data, dtype=np.float64)
    target_names = bunch.get("target_names")
    y = np.asarray(bunch.target, dtype=np.float64) if target_names is None else target_names[bunch.target]
    digest = hashlib.sha256(X.tobytes() + "\n".join(map(str, y.tolist())).encode()).hexdigest()
    features = tuple(Feature(str(feature)) for feature in bunch.feature_names)
    return Dataset(name, features, X, y, digest)


def load_csv(path: Path, target: str) -> Dataset:
    """A CSV with a header row: number or text feature columns, any of them with missing values.

    A column is a number column when every value that is not missing parses as a number; rows
    whose target is missing are left out and counted.
    """
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
    header, rows = [name.strip() for name in records[0]], records[1:]
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise TrainingError(f"{path} names columns {repeated} more than once")
    if target not in header:
        raise TrainingError(f"{path} has no column {target!r}; its columns are {header}")
    if not rows:
        raise TrainingError(f"{path} has a header but no data rows")
    for number, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise TrainingError(f"{path} line {number}: {len(row)} fields, the header has {len(header)}")
    names = [name for name in header if name != target]
    if not names:
        raise TrainingError(f"{path} has no feature columns besides {target!r}")
    target_values = [row[header.index(target)].strip() for row in rows]
    kept = [row for row, value in zip(rows, target_values, strict=True) if value not in MISSING]
    if not kept:
        raise TrainingError(f"every row's target {target!r} is missing")
    stripped = ([value.strip() for value in column] for column in zip(*kept, strict=True))
    columns = dict(zip(header, stripped, strict=True))
    features = tuple(_feature(name, columns[name]) for name in names)
    return Dataset(
        name=path.stem,
        features=features,
        X=feature_matrix(features, [columns[name] for name in names]),
        y=parse_target(columns[target]),
        sha256=hashlib.sha256(raw).hexdigest(),
        target=target,
        rows_without_target=len(rows) - len(kept),
    )


def _feature(name: str, values: list[str]) -> Feature:
    """A number column if every present value is a number, else a category column; nullable
    when the column has a missing value (`with_nullability` says what the model accepts)."""
    present = [value for value in values if value not in MISSING]
    if not present:
        raise TrainingError(f"feature column {name!r} has no values, only missing ones")
    numbers = [number for number in map(_to_float, present) if number is not None]
    if len(numbers) == len(present):
        bad = next(
            (text for text, number in zip(present, numbers, strict=True) if not math.isfinite(number)), None
        )
        if bad is not None:
            raise TrainingError(f"feature column {name!r} holds {bad!r}; numbers must be finite")
        return Feature(name, NUMBER, nullable=len(present) < len(values))
    return Feature(name, CATEGORY, len(present) < len(values), categories=tuple(sorted(set(present))))


def feature_matrix(features: Sequence[Feature], columns: Sequence[Sequence[str]]) -> np.ndarray:
    """The rows as train.py's estimators take them: a float64 matrix (NaN for missing) when every
    feature is a number, else an object array of floats (NaN) and str (np.nan) in feature order."""
    if all(feature.kind == NUMBER for feature in features):
        return np.array([[_missing_or_float(value) for value in column] for column in columns]).T
    matrix = np.empty((len(columns[0]), len(features)), dtype=object)
    for index, (feature, column) in enumerate(zip(features, columns, strict=True)):
        if feature.kind == NUMBER:
            matrix[:, index] = [_missing_or_float(value) for value in column]
        else:
            matrix[:, index] = [np.nan if value in MISSING else value for value in column]
    return matrix


def _missing_or_float(text: str) -> float:
    return math.nan if text in MISSING else float(text)


def _to_float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def parse_target(values: Sequence[str]) -> np.ndarray:
    """Integers when every value is an integer, numbers when every value is a number, else text."""
    if all(value.lstrip("-").isdigit() for value in values):
        return np.array([int(value) for value in values])
    if all(_is_finite_number(value) for value in values):
        return np.array([float(value) for value in values])
    return np.array(values)


def _is_finite_number(text: str) -> bool:
    number = _to_float(text)
    return number is not None and math.isfinite(number)


def with_nullability(data: Dataset) -> tuple[Feature, ...]:
    """The features as the model accepts them: complete numbers as they are; otherwise every one is
    nullable, since the tabular pipelines impute or route a missing value in any column."""
    if is_plain_numeric(data.features):
        return data.features
    return tuple(replace(feature, nullable=True) for feature in data.features)


def choose_task(y: np.ndarray, requested: str | None) -> tuple[str, str]:
    """The task and why it was chosen: as requested, else regression for a numeric target with
    many distinct values and classification otherwise."""
    if requested is not None:
        if requested == REGRESSION and y.dtype.kind not in "iuf":
            example = next(value for value in y.tolist() if not _is_finite_number(value))
            raise TrainingError(f"regression needs a target of finite numbers; it holds {example!r}")
        return requested, "as --task asked"
    if y.dtype.kind not in "iuf":
        return CLASSIFICATION, "inferred: the target is text"
    distinct = len(np.unique(y))
    if distinct > MAX_INFERRED_CLASSES:
        return REGRESSION, f"inferred: the target has {distinct} distinct numbers"
    return CLASSIFICATION, f"inferred: the target has only {distinct} distinct numbers"


def build_estimator(model: str, task: str, features: Sequence[Feature], seed: int) -> Any:
    """The estimator for `model` and `task`; preprocessing lives inside it, so serving never repeats it.

    Complete numeric data keeps the plain estimators (skserve.scoring's shortcuts match on their
    exact types); text or missing values get a pipeline that encodes and imputes them itself.
    """
    family = LEGACY_NAMES.get(model, model)
    if family not in MODELS:
        raise TrainingError(f"unknown model {model!r}; choose one of {list(MODELS)}")
    if model in LEGACY_NAMES and task != CLASSIFICATION:
        raise TrainingError(f"{model} is a classifier; for {task} choose one of {list(MODELS)}")
    regression = task == REGRESSION
    if family == "linear":
        final: Any = Ridge() if regression else LogisticRegression(max_iter=1000, random_state=seed)
    elif family == "random_forest":
        forest = RandomForestRegressor if regression else RandomForestClassifier
        final = forest(n_estimators=100, random_state=seed)
    else:
        boosting = HistGradientBoostingRegressor if regression else HistGradientBoostingClassifier
        final = boosting(random_state=seed)
    if is_plain_numeric(features):
        if family == "linear":
            return Pipeline([("scale", StandardScaler()), (_final_step(task), final)])
        return final
    numbers = [i for i, feature in enumerate(features) if feature.kind == NUMBER]
    categories = [i for i, feature in enumerate(features) if feature.kind == CATEGORY]
    if family == "linear":
        encode = _columns(
            ("number", make_pipeline(SimpleImputer(), StandardScaler()), numbers),
            ("category", OneHotEncoder(handle_unknown="ignore"), categories),
        )
    elif family == "random_forest":
        # The trees take NaN themselves; an unseen category is one-hot encoded as all zeros.
        encode = _columns(
            ("number", "passthrough", numbers),
            ("category", OneHotEncoder(handle_unknown="ignore", sparse_output=False), categories),
        )
    else:
        # Native categorical support: categories as codes (unseen or missing as NaN) in the first columns.
        encode = _columns(
            ("category", _category_codes(), categories),
            ("number", "passthrough", numbers),
        )
        final.set_params(categorical_features=list(range(len(categories))))
    return Pipeline([("encode", encode), (_final_step(task), final)])


def _final_step(task: str) -> str:
    return "classify" if task == CLASSIFICATION else "regress"


def _columns(*transformers: tuple[str, Any, list[int]]) -> ColumnTransformer:
    return ColumnTransformer([transformer for transformer in transformers if transformer[2]])


def _category_codes() -> OrdinalEncoder:
    return OrdinalEncoder(
        handle_unknown="use_encoded_value",
        unknown_value=np.nan,
        encoded_missing_value=np.nan,
        max_categories=MAX_BOOSTED_CATEGORIES,
    )


def train(
    data: Dataset, model: str, seed: int, name: str | None = None, task: str | None = None
) -> tuple[Any, dict[str, Any]]:
    """Fit on a held-out split (stratified for classification); return the estimator and its card
    (without sha256). `task` None infers it from the target (see `choose_task`)."""
    task, reason = choose_task(data.y, task)
    y = data.y.astype(np.float64) if task == REGRESSION else data.y
    if task == CLASSIFICATION:
        _check_classes(y)
    features = with_nullability(data)
    estimator = build_estimator(model, task, features, seed)
    try:
        X_train, X_test, y_train, y_test = train_test_split(
            data.X,
            y,
            test_size=TEST_FRACTION,
            random_state=seed,
            stratify=y if task == CLASSIFICATION else None,
        )
    except ValueError as error:
        raise TrainingError(f"cannot split {len(y)} rows into training and test sets: {error}") from None
    estimator.fit(X_train, y_train)
    estimator_name = ESTIMATOR_NAMES[LEGACY_NAMES.get(model, model), task]
    card = card_head(
        name=name or f"{data.name}-{estimator_name.replace('_', '-')}",
        task=task,
        input_kind=ARRAY_INPUT,
        features=features,
        estimator=estimator,
    )
    card |= {
        "metrics": {**_metrics(task, y_test, estimator.predict(X_test)), "test_rows": len(y_test)},
        "training_data": {
            "source": data.name,
            "target": data.target,
            "rows": len(y),
            "rows_without_target": data.rows_without_target,
            "columns": len(data.features) + 1,
            "sha256": data.sha256,
        },
        "estimator": {
            "name": estimator_name,
            "class": type(estimator).__name__,
            "params": _plain_params(estimator),
        },
        "seed": seed,
        "task_reason": reason,
        "versions": library_versions(),
    }
    return estimator, card


def _check_classes(y: np.ndarray) -> None:
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise TrainingError(
            f"the target has only one class ({classes.tolist()}); a classifier needs at least two"
        )
    if counts.min() < 2:
        rare = classes[counts < 2].tolist()
        hint = "; for a numeric target, --task regression" if y.dtype.kind in "iuf" else ""
        raise TrainingError(
            f"classes {rare[:5]} have a single row; every class needs at least two to split{hint}"
        )


def _metrics(task: str, actual: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    if task == CLASSIFICATION:
        scores = {
            "accuracy": accuracy_score(actual, predicted),
            "f1_macro": f1_score(actual, predicted, average="macro"),
        }
    else:
        scores = {
            "r2": r2_score(actual, predicted),
            "mae": mean_absolute_error(actual, predicted),
            "rmse": root_mean_squared_error(actual, predicted),
        }
    return {key: round(float(value), 6) for key, value in scores.items()}


def _plain_params(estimator: Any) -> dict[str, Any]:
    """The estimator's parameters that are plain JSON values (nested estimators are named by class)."""
    return {
        key: value
        if isinstance(value, (str, int, bool, type(None))) or _finite(value)
        else type(value).__name__
        for key, value in sorted(estimator.get_params(deep=True).items())
        if not isinstance(value, list)
    }


def _finite(value: Any) -> bool:
    return isinstance(value, float) and math.isfinite(value)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--data",
        default=DEFAULT_DATA,
        help=f"a CSV file with a header row, or bundled data: {', '.join(BUNDLED)} (default: {DEFAULT_DATA})",
    )
    parser.add_argument("--target", help="name of the CSV's target column (required with a CSV)")
    parser.add_argument(
        "--model",
        choices=(*MODELS, *LEGACY_NAMES),
        default=DEFAULT_MODEL,
        help=f"model family, for either task (default: {DEFAULT_MODEL}; logistic_regression: its classifier)",
    )
    parser.add_argument(
        "--task", choices=TASKS, help="classification or regression (default: inferred from the target)"
    )
    parser.add_argument(
        "--output", type=Path, default=Path("models"), help="artifact directory (default: models/)"
    )
    parser.add_argument(
        "--seed", type=int, default=DEFAULT_SEED, help=f"random seed (default: {DEFAULT_SEED})"
    )
    parser.add_argument(
        "--name", help="model name (default: <data>-<estimator>, e.g. iris-logistic-regression)"
    )
    args = parser.parse_args(argv)
    if args.data in BUNDLED and args.target:
        parser.error(f"--target is for a CSV; the bundled {args.data} data has its own target")
    if args.data not in BUNDLED and not args.target:
        parser.error("--data needs --target naming the column to predict")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        data = load_bundled(args.data) if args.data in BUNDLED else load_csv(Path(args.data), args.target)
        estimator, card = train(data, args.model, args.seed, args.name, args.task)
        card = write_artifact(args.output, estimator, card)
    except TrainingError as error:
        print(f"train.py: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"train.py: error: cannot write to {args.output}: {error.strerror}", file=sys.stderr)
        return 2
    print(summary(card, args.output))
    return 0


def summary(card: dict[str, Any], output: Path) -> str:
    """One line: what was trained for which task, on how many rows, and its held-out metrics."""
    data, metrics = card["training_data"], card["metrics"]
    left_out = data["rows_without_target"]
    rows = f"{data['rows']} rows" + (f" ({left_out} without a target left out)" if left_out else "")
    if card["task"] == CLASSIFICATION:
        scores = f"accuracy {metrics['accuracy']:.3f}, macro F1 {metrics['f1_macro']:.3f}"
    else:
        scores = f"R2 {metrics['r2']:.3f}, MAE {metrics['mae']:.4g}, RMSE {metrics['rmse']:.4g}"
    return (
        f"trained {card['name']} ({card['estimator']['class']}) for {card['task']} "
        f"({card['task_reason']}) on {rows}; held-out {metrics['test_rows']} rows: {scores}; "
        f"wrote {output}/ (version {card['version']})"
    )


if __name__ == "__main__":
    sys.exit(main())
