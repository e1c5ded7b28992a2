"""Scoring rows with the cheapest function that gives `predict_proba`'s exact bits.

scikit-learn spends most of a call on a few rows outside the arithmetic: validating input (which
skserve has done), and for a forest, dispatching each tree through joblib. For the estimators
train.py makes there is a shorter path through the same arithmetic, in the same order. A model
uses it only if it reproduces the estimator's own `predict_proba` bit for bit on probe rows built
from its typed features when loaded, so a scikit-learn release that computes differently falls back
to `predict_proba`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from functools import reduce
from typing import Any

import numpy as np
from scipy.special import expit
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from skserve.features import NUMBER, Feature

log = logging.getLogger(__name__)

Score = Callable[[np.ndarray], np.ndarray]
Transform = Callable[[np.ndarray], Any]

# Exact types only: a subclass may score differently.
_FORESTS = (RandomForestClassifier, ExtraTreesClassifier)
PROBE_ROWS = 64


def scorer_for(estimator: Any, features: Sequence[Feature]) -> Score:
    """A function of rows as `skserve.schema.rows_of_values` gives them for `features` (the model's
    typed inputs) giving `estimator.predict_proba`'s result."""
    predict_proba: Score = estimator.predict_proba
    shortcut = _shortcut(estimator)
    if shortcut is None:
        return predict_proba
    name = type(estimator).__name__
    if not _same_bits(shortcut, estimator, probe_rows(features)):
        log.warning(
            "the %s shortcut differs from predict_proba with this scikit-learn; using predict_proba", name
        )
        return predict_proba
    log.info("scoring the %s by a shortcut that matched predict_proba bit for bit", name)
    return shortcut


def _shortcut(estimator: Any) -> Score | None:
    if type(estimator) in _FORESTS and estimator.n_outputs_ == 1:
        return lambda rows: _forest_predict_proba(estimator, rows)
    if type(estimator) is Pipeline and [type(step) for _, step in estimator.steps] == [
        StandardScaler,
        LogisticRegression,
    ]:
        scaler, logistic = (step for _, step in estimator.steps)
        return lambda rows: _logistic_predict_proba(logistic, _standardize(scaler, rows))
    encode = _encoding_step(estimator)
    if encode is not None:
        fitted = encode._iter(fitted=True, column_as_labels=False, skip_drop=True, skip_empty_columns=True)
        parts = [(_transform(transformer), columns) for _, transformer, columns, _ in fitted]
        final = estimator.steps[-1][1]
        score: Score = final.predict_proba  # a forest's own: its shortcut refuses NaN, which they take
        if type(final) is LogisticRegression:
            score = lambda encoded: _logistic_predict_proba(final, encoded)  # noqa: E731
        return lambda rows: _encoded_predict_proba(encode, parts, score, rows)
    return None


def _encoding_step(estimator: Any) -> Any:
    """The ColumnTransformer of a two-step Pipeline as train.py makes for text or missing values
    (fitted on an array, unweighted), or None."""
    if type(estimator) is not Pipeline or len(estimator.steps) != 2:
        return None
    encode = estimator.steps[0][1]
    if type(encode) is not ColumnTransformer or encode.transformer_weights:
        return None
    return None if hasattr(encode, "feature_names_in_") else encode


def _encoded_predict_proba(
    encode: Any, parts: list[tuple[Transform, Any]], final: Score, rows: np.ndarray
) -> Any:
    """The pipeline's predict_proba with ColumnTransformer.transform done without its validation,
    routing and joblib dispatch (most of a call on a few rows): each fitted transformer on its
    columns, in order, stacked by the ColumnTransformer's own hstack (dense or sparse as fitting
    decided), then the final step's predict_proba (or its shortcut), as Pipeline calls it."""
    outputs = [transform(rows[:, columns]) for transform, columns in parts]
    return final(encode._hstack(outputs, n_samples=len(rows)))


def _transform(transformer: Any) -> Transform:
    """The fitted transformer's transform, computed without its input validation for the kinds
    train.py puts in a ColumnTransformer (same values, same operations); others' own transform."""
    kind = type(transformer)
    if kind is Pipeline:
        steps = [_transform(step) for _, step in transformer.steps]
        return lambda rows: reduce(lambda data, step: step(data), steps, rows)
    if kind is SimpleImputer and _fills_nan_only(transformer):
        return lambda rows: _impute(transformer.statistics_, rows)
    if kind is StandardScaler:
        return lambda rows: _standardize(transformer, rows)
    if kind is OneHotEncoder and _plain_one_hot(transformer):
        lookups = [_category_index(categories) for categories in transformer.categories_]
        offsets = np.cumsum([0] + [len(categories) for categories in transformer.categories_])
        return lambda rows: _one_hot(lookups, offsets, rows)
    transform: Transform = transformer.transform
    return transform


def _fills_nan_only(imputer: Any) -> bool:
    """A numeric SimpleImputer that replaces NaN by its statistics and keeps every column."""
    return bool(
        imputer.strategy in ("mean", "median")
        and _is_nan(imputer.missing_values)
        and not imputer.add_indicator
        and np.isfinite(imputer.statistics_).all()
    )


def _impute(statistics: np.ndarray, rows: np.ndarray) -> np.ndarray:
    filled = np.array(rows, dtype=np.float64)
    missing = np.isnan(filled)
    if missing.any():
        filled[missing] = statistics[np.nonzero(missing)[1]]
    return filled


def _standardize(scaler: Any, rows: np.ndarray) -> np.ndarray:
    """StandardScaler.transform's arithmetic, on a float64 copy of the rows."""
    scaled = np.array(rows, dtype=np.float64)
    if scaler.with_mean:
        scaled -= scaler.mean_
    if scaler.with_std:
        scaled /= scaler.scale_
    return scaled


def _plain_one_hot(encoder: Any) -> bool:
    """A OneHotEncoder with a column per category, unknown categories as zeros, float64 output."""
    return bool(
        encoder.handle_unknown == "ignore"
        and encoder.drop_idx_ is None
        and not encoder._infrequent_enabled
        and encoder.dtype in (np.float64, float)
    )


def _category_index(categories: np.ndarray) -> tuple[dict[Any, int], int | None]:
    """Each category's position, and that of NaN when missing values were a category in fitting."""
    known = categories.tolist()
    nan_at = len(known) - 1 if known and _is_nan(known[-1]) else None
    return {value: i for i, value in enumerate(known) if i != nan_at}, nan_at


def _is_nan(value: Any) -> bool:
    """Whether `value` is NaN, how missing values reach a category column."""
    return isinstance(value, float) and math.isnan(value)


def _one_hot(
    lookups: list[tuple[dict[Any, int], int | None]], offsets: np.ndarray, rows: np.ndarray
) -> np.ndarray:
    """OneHotEncoder.transform's values, dense: 1.0 in each row's category column of each feature
    (NaN's own column when fitting saw missing values), zeros for an unknown category."""
    encoded = np.zeros((len(rows), offsets[-1]), dtype=np.float64)
    for column, (index, nan_at) in enumerate(lookups):
        for row, value in enumerate(rows[:, column].tolist()):
            position = nan_at if _is_nan(value) else index.get(value)
            if position is not None:
                encoded[row, offsets[column] + position] = 1.0
    return encoded


def probe_rows(features: Sequence[Feature]) -> np.ndarray:
    """Rows as serving gives them for `features`: numbers around and far from zero (NaN in some rows
    of a nullable one), every category (and a missing one when nullable, an unknown one when
    accepted) in shuffled rows; a float64 matrix when every feature is a number, else an object array."""
    rng = np.random.default_rng(0)
    choices = [_category_choices(feature) for feature in features]
    n_rows = max([PROBE_ROWS, *map(len, choices)])
    scales = rng.choice([1.0, 10.0, 1000.0], size=(n_rows, 1))
    numbers: np.ndarray = rng.normal(0, 1, size=(n_rows, len(features))) * scales
    for index, feature in enumerate(features):
        if feature.kind == NUMBER and feature.nullable:
            numbers[rng.random(n_rows) < 0.25, index] = np.nan
    if all(feature.kind == NUMBER for feature in features):
        return numbers
    probe = np.empty((n_rows, len(features)), dtype=object)
    for index, (feature, values) in enumerate(zip(features, choices, strict=True)):
        if feature.kind == NUMBER:
            probe[:, index] = numbers[:, index].tolist()
        else:
            probe[:, index] = [values[i % len(values)] for i in rng.permutation(n_rows)]
    return probe


def _category_choices(feature: Feature) -> list[Any]:
    missing = [np.nan] if feature.nullable else []
    unknown = ["(a category unseen in training)"] if feature.accepts_unknown else []
    return [*feature.categories, *missing, *unknown]


def _same_bits(shortcut: Score, estimator: Any, probe: np.ndarray) -> bool:
    """Whether `shortcut` gives the estimator's own bits on the probe rows."""
    try:
        return bool(shortcut(probe).tobytes() == estimator.predict_proba(probe).tobytes())
    except Exception:  # a shortcut that cannot score the probe is not used
        return False


def _forest_predict_proba(forest: Any, rows: np.ndarray) -> np.ndarray:
    """A forest's predict_proba without joblib, which dispatches each tree as a task of its own
    (with a config context and a warnings filter): 80% of a 100-tree call on a few rows.

    As scikit-learn does: the trees' probabilities summed into zeros in tree order, then divided
    by the number of trees; values that overflow float32, the trees' input type, are refused.
    """
    matrix = np.ascontiguousarray(rows, dtype=np.float32)
    if not np.isfinite(matrix).all():
        raise ValueError("Input X contains infinity or a value too large for dtype('float32').")
    total = np.zeros((len(matrix), forest.n_classes_), dtype=np.float64)
    for tree in forest.estimators_:
        total += tree.predict_proba(matrix, check_input=False)
    total /= len(forest.estimators_)
    return total


def _logistic_predict_proba(logistic: Any, rows: np.ndarray) -> np.ndarray:
    """LogisticRegression.predict_proba's arithmetic, without the validation, tags and array-API
    dispatch that are 90% of a call on a few rows.

    Overflow gives non-finite probabilities here instead of an error; callers refuse those.
    """
    decision: np.ndarray = rows @ logistic.coef_.T + logistic.intercept_
    if len(logistic.classes_) <= 2:  # the logistic function of the one decision column
        positive: np.ndarray = expit(decision.reshape(-1))
        return np.stack([1 - positive, positive], axis=1)
    # softmax, in place
    decision -= decision.max(axis=1).reshape(-1, 1)
    np.exp(decision, out=decision)
    decision /= decision.sum(axis=1).reshape(-1, 1)
    return decision
