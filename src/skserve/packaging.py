"""`skserve package`: the artifact pair for an estimator fitted anywhere, its card read off the estimator."""

from __future__ import annotations

import argparse
import os
import re
import sys
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import is_classifier, is_regressor
from sklearn.compose import ColumnTransformer
from sklearn.exceptions import NotFittedError
from sklearn.metrics import accuracy_score, f1_score, mean_absolute_error, r2_score
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted

from skserve import unpickle
from skserve.artifact import card_head, library_versions, write_artifact
from skserve.features import (
    ARRAY_INPUT,
    CATEGORY,
    CLASSIFICATION,
    DATAFRAME_INPUT,
    MISSING_SPELLINGS,
    NUMBER,
    REGRESSION,
    Category,
    Feature,
    features_from_card,
)

DEFAULT_OUTPUT = Path("models")
# A category value no encoder has seen: probing with it tells whether the estimator takes unknowns.
UNKNOWN_PROBE = "\x00skserve-unknown-category"


class PackagingError(Exception):
    """The estimator or sample cannot be packaged; the message says why in one line."""


def read_csv(source: Any, **options: Any) -> Any:
    """A CSV read by pandas with skserve's spellings of a missing value, and only those."""
    return pd.read_csv(
        source, na_values=list(MISSING_SPELLINGS), keep_default_na=False, skipinitialspace=True, **options
    )


def load_estimator(path: Path) -> Any:
    """Unpickle the user's joblib file through the safe loader, as the server will load it."""
    try:
        return unpickle.load(path, allow_unsafe=allow_unsafe_pickle())
    except FileNotFoundError:
        raise PackagingError(f"no such file: {path}") from None
    except unpickle.UnsafePickle as error:
        raise PackagingError(str(error)) from None
    except Exception as error:  # unpickling can raise nearly anything; all mean "not a model file"
        raise PackagingError(f"cannot load {path}: {type(error).__name__}: {error}") from None


def allow_unsafe_pickle() -> bool:
    """SKSERVE_ALLOW_UNSAFE_PICKLE=true, as the server reads it: load custom code with plain joblib."""
    return os.environ.get(unpickle.UNSAFE_SETTING, "").lower() == "true"


def package(
    estimator: Any,
    sample: Any,
    output: str | Path = DEFAULT_OUTPUT,
    *,
    target: str | Sequence[Any] | np.ndarray | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """Write `estimator` and its card into `output`, the card derived from the estimator and `sample`.

    `sample` is a DataFrame or a 2-D array of a few rows the estimator accepts. `target` names the
    sample's column of true values, or gives them, to record metrics on the sample. Returns the card;
    raises PackagingError, and leaves any model already in `output` untouched, when it cannot.
    """
    check_estimator(estimator)
    frame = _sample_frame(sample)
    truth = None
    if isinstance(target, str):
        if target not in frame.columns:
            raise PackagingError(
                f"the sample has no column {target!r}; its columns are {list(frame.columns)}"
            )
        truth = frame.pop(target).to_numpy()
    elif target is not None:
        truth = np.asarray(target)
        if len(truth) != len(frame):
            raise PackagingError(f"the target has {len(truth)} values for {len(frame)} sample rows")
    card = describe(estimator, frame, name=name)
    if truth is not None:
        card["sample_metrics"] = _sample_metrics(estimator, card, frame, truth)
    try:
        return write_artifact(Path(output), estimator, card)
    except OSError as error:
        raise PackagingError(f"cannot write to {output}: {error.strerror}") from None


def check_estimator(estimator: Any) -> None:
    """Refuse what skserve cannot serve: not an estimator, not fitted, no predict, no task."""
    kind = type(estimator).__name__
    if not hasattr(estimator, "get_params") or not hasattr(estimator, "fit"):
        raise PackagingError(f"not a scikit-learn estimator: the file holds a {kind}")
    if not callable(getattr(estimator, "predict", None)):
        raise PackagingError(f"the {kind} has no predict method: skserve serves predictors")
    try:
        check_is_fitted(estimator)
    except NotFittedError:
        raise PackagingError(f"the {kind} is not fitted: call fit before joblib.dump") from None
    if is_classifier(estimator):
        if not callable(getattr(estimator, "predict_proba", None)):
            raise PackagingError(f"the {kind} classifier has no predict_proba, which /predict answers with")
    elif not is_regressor(estimator):
        raise PackagingError(f"the {kind} is neither a classifier nor a regressor")


def describe(estimator: Any, sample: Any, name: str | None = None) -> dict[str, Any]:
    """The card (without version and sha256) of a fitted estimator, given sample rows in feature order."""
    input_kind = _input_kind(estimator)
    frame = _matching_sample(estimator, sample, input_kind)
    encoded = dict(_encoder_categories(estimator, list(frame.columns)))
    features = _probed(
        estimator,
        frame,
        [_feature(name, frame[name], encoded.get(name), input_kind) for name in frame.columns],
        input_kind,
    )
    task = CLASSIFICATION if is_classifier(estimator) else REGRESSION
    final = estimator.steps[-1][1] if isinstance(estimator, Pipeline) else estimator
    card = card_head(
        name=name or _kebab(type(final).__name__),
        task=task,
        input_kind=input_kind,
        features=features,
        estimator=estimator,
    )
    card["estimator"] = {"name": _kebab(type(final).__name__), "class": type(estimator).__name__}
    card["packaged_from"] = {"sample_rows": len(frame)}
    card["versions"] = library_versions()
    if input_kind == DATAFRAME_INPUT:
        card["versions"]["pandas"] = pd.__version__
    return card


def presented(frame: Any, features: Sequence[Feature], input_kind: str) -> Any:
    """Rows as serving hands them to the estimator: a DataFrame with the fitted dtypes, or an array."""
    if input_kind == DATAFRAME_INPUT:
        return frame.astype({feature.name: feature.dtype for feature in features})
    if all(feature.kind == NUMBER for feature in features):
        return frame.to_numpy(dtype=np.float64)
    values = frame.to_numpy(dtype=object, copy=True)
    values[pd.isna(values)] = None
    return values


def _sample_frame(sample: Any) -> Any:
    if isinstance(sample, pd.DataFrame):
        frame = sample.reset_index(drop=True)
    else:
        array = np.asarray(sample)
        if array.ndim != 2:
            raise PackagingError(
                f"the sample must be a DataFrame or a 2-D array, got {array.ndim} dimensions"
            )
        frame = pd.DataFrame(array, columns=[f"x{index}" for index in range(array.shape[1])])
    if frame.empty:
        raise PackagingError("the sample has no rows: give a few rows the estimator accepts")
    return frame


def _input_kind(estimator: Any) -> str:
    """DataFrame input when the estimator was fitted on named columns (pandas keeps their names)."""
    names = getattr(estimator, "feature_names_in_", None)
    if names is not None and all(isinstance(name, str) for name in names):
        return DATAFRAME_INPUT
    return ARRAY_INPUT


def _matching_sample(estimator: Any, frame: Any, input_kind: str) -> Any:
    """The sample's feature columns in the estimator's order; refuses columns that do not match."""
    columns = [str(column) for column in frame.columns]
    if input_kind == DATAFRAME_INPUT:
        expected = [str(name) for name in estimator.feature_names_in_]
        missing = [name for name in expected if name not in columns]
        unexpected = [name for name in columns if name not in expected]
        if missing or unexpected:
            problems = [
                f"{label} {names}"
                for label, names in (("missing", missing), ("unexpected", unexpected))
                if names
            ]
            raise PackagingError(
                f"the sample's columns do not match the estimator's features {expected}: "
                + "; ".join(problems)
            )
        return frame[expected]
    width = estimator.n_features_in_
    if len(columns) != width:
        raise PackagingError(
            f"the estimator takes {width} features; the sample has {len(columns)} columns {columns}"
        )
    return frame.set_axis(columns, axis=1)


def _encoder_categories(estimator: Any, names: list[str]) -> Iterator[tuple[str, list[Any]]]:
    """Each input column an encoder (anything with `categories_`) reads, with the categories it learned."""
    if isinstance(estimator, Pipeline):
        # Only the first step reads the input columns; later steps read its output.
        yield from _encoder_categories(estimator.steps[0][1], names)
    elif isinstance(estimator, ColumnTransformer):
        for _, transformer, columns in estimator.transformers_:
            selected = _column_names(columns, names)
            if selected and not isinstance(transformer, str):
                yield from _encoder_categories(transformer, selected)
    elif hasattr(estimator, "categories_") and len(estimator.categories_) == len(names):
        for name, categories in zip(names, estimator.categories_, strict=True):
            yield name, [value for value in categories.tolist() if not pd.isna(value)]


def _column_names(columns: Any, names: list[str]) -> list[str]:
    """A ColumnTransformer's fitted column selection as names (by name, position or mask); [] if unknown."""
    selection = [columns] if isinstance(columns, (str, int)) else list(np.asarray(columns).tolist())
    if selection and all(isinstance(value, bool) for value in selection):
        return [name for name, chosen in zip(names, selection, strict=False) if chosen]
    if all(isinstance(value, str) for value in selection):
        return [value for value in selection if value in names]
    if all(isinstance(value, int) for value in selection):
        return [names[int(value)] for value in selection]
    return []


def _feature(name: str, column: Any, encoded: list[Any] | None, input_kind: str) -> Feature:
    """A feature as the estimator sees it; nullable and accepts_unknown are decided by probing later."""
    dtype = str(column.dtype) if input_kind == DATAFRAME_INPUT else None
    if encoded is None and pd.api.types.is_numeric_dtype(column.dtype):
        return Feature(name, NUMBER, dtype=dtype)
    if encoded is not None:
        categories: list[Category] = encoded
    elif isinstance(column.dtype, pd.CategoricalDtype):
        categories = column.dtype.categories.tolist()
    else:
        categories = sorted(column.dropna().unique().tolist(), key=str)
    return Feature(name, CATEGORY, categories=tuple(categories), dtype=dtype)


def _probed(estimator: Any, frame: Any, features: list[Feature], input_kind: str) -> list[Feature]:
    """The features with `nullable` and `accepts_unknown` as the fitted estimator shows them.

    A feature is nullable when the estimator scores a sample row with that value missing, and a
    category accepts unknowns when it scores the row with a value no encoder has seen: the estimator
    itself decides (an imputer, native missing-value support, an encoder's handle_unknown).
    """
    failure = _failure(estimator, presented(frame, features, input_kind))
    if failure is not None:
        raise PackagingError(f"the {type(estimator).__name__} fails on the sample rows: {failure}")
    complete = frame[frame.notna().all(axis=1)]
    row = (complete if len(complete) else frame).iloc[[0]].astype(object)
    probed = []
    for index, feature in enumerate(features):
        nullable = _scores_with(estimator, row, index, None, features=features, input_kind=input_kind)
        accepts_unknown = feature.kind == CATEGORY and _scores_with(
            estimator, row, index, _unknown_value(feature), features=features, input_kind=input_kind
        )
        probed.append(replace(feature, nullable=nullable, accepts_unknown=accepts_unknown))
    return probed


def _unknown_value(feature: Feature) -> Category:
    if feature.numeric_categories:
        return max(float(value) for value in feature.categories) + 1
    return UNKNOWN_PROBE


def _scores_with(
    estimator: Any, row: Any, index: int, value: Any, *, features: list[Feature], input_kind: str
) -> bool:
    changed = row.copy()
    changed.iloc[0, index] = value
    try:
        rows = presented(changed, features, input_kind)
    except (TypeError, ValueError):  # the fitted dtype cannot hold the value (int64 and missing)
        return False
    return _failure(estimator, rows) is None


def _failure(estimator: Any, rows: Any) -> str | None:
    """Why the estimator does not answer these rows with finite values as serving calls it, or None."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an encoder's "unknown categories" warning, for one
            scored = estimator.predict_proba(rows) if is_classifier(estimator) else estimator.predict(rows)
    except Exception as error:  # any failure means serving would fail on such rows
        return f"{type(error).__name__}: {(str(error).splitlines() or [''])[0]}"
    answer = np.asarray(scored)
    if answer.dtype.kind == "f" and not np.isfinite(answer).all():
        return "its answer has non-finite values"
    return None


def _sample_metrics(estimator: Any, card: dict[str, Any], frame: Any, truth: np.ndarray) -> dict[str, Any]:
    """Metrics on the sample, labelled as such: it may overlap the data the model was fitted on."""
    features = features_from_card(card)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        predicted = estimator.predict(presented(frame[[f.name for f in features]], features, card["input"]))
    metrics: dict[str, Any] = {"data": "the packaging sample, not held-out data", "rows": len(truth)}
    if card["task"] == CLASSIFICATION:
        metrics["accuracy"] = round(float(accuracy_score(truth, predicted)), 6)
        metrics["f1_macro"] = round(float(f1_score(truth, predicted, average="macro")), 6)
    else:
        metrics["r2"] = round(float(r2_score(truth, predicted)), 6)
        metrics["mae"] = round(float(mean_absolute_error(truth, predicted)), 6)
    return metrics


def _kebab(class_name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "-", class_name).lower()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "estimator", type=Path, help="the fitted estimator or Pipeline, saved with joblib.dump"
    )
    parser.add_argument(
        "--sample", type=Path, required=True, help="CSV of rows the estimator accepts, with a header"
    )
    parser.add_argument("--target", help="the sample's column of true values: records metrics on the sample")
    parser.add_argument("--name", help="model name (default: the estimator file's name)")
    parser.add_argument(
        "--output", type=Path, default=DEFAULT_OUTPUT, help=f"artifact directory (default: {DEFAULT_OUTPUT}/)"
    )


def run(args: argparse.Namespace) -> int:
    try:
        estimator = load_estimator(args.estimator)
        sample = _read_sample(args.sample)
        card = package(
            estimator, sample, args.output, target=args.target, name=args.name or args.estimator.stem
        )
    except PackagingError as error:
        print(f"skserve package: error: {error}", file=sys.stderr)
        return 2
    print(_summary(card, args.output))
    return 0


def _read_sample(path: Path) -> Any:
    try:
        return read_csv(path)
    except FileNotFoundError:
        raise PackagingError(f"no such file: {path}") from None
    except (OSError, ValueError, UnicodeDecodeError) as error:
        raise PackagingError(f"cannot read the sample {path}: {str(error).splitlines()[0]}") from None


def _summary(card: dict[str, Any], output: Path) -> str:
    kinds = [feature["kind"] for feature in card["features"]]
    counts = ", ".join(f"{kinds.count(kind)} {kind}" for kind in (NUMBER, CATEGORY) if kind in kinds)
    line = (
        f"packaged {card['name']} ({card['estimator']['class']}, {card['task']}, {card['input']} input; "
        f"features: {counts}) from {card['packaged_from']['sample_rows']} sample rows"
    )
    metrics = card.get("sample_metrics")
    if metrics is not None:
        shown = ", ".join(f"{key} {value:.3f}" for key, value in metrics.items() if isinstance(value, float))
        line += f"; on the sample: {shown}"
    return f"{line}; wrote {output}/ (version {card['version']})"


def main(argv: list[str] | None = None) -> int:
    """`python -m skserve.packaging`, which the image's build stage runs without installing skserve."""
    parser = argparse.ArgumentParser(prog="skserve package", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
