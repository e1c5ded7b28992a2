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
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy.special import expit
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from skserve.features import NUMBER, Feature

log = logging.getLogger(__name__)

Score = Callable[[np.ndarray], np.ndarray]

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
        return lambda rows: _scaled_logistic_predict_proba(scaler, logistic, rows)
    encode = _encoding_step(estimator)
    if encode is not None:
        parts = list(
            encode._iter(fitted=True, column_as_labels=False, skip_drop=True, skip_empty_columns=True)
        )
        final = estimator.steps[-1][1]
        return lambda rows: _encoded_predict_proba(encode, parts, final, rows)
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


def _encoded_predict_proba(encode: Any, parts: list[tuple[Any, ...]], final: Any, rows: np.ndarray) -> Any:
    """The pipeline's predict_proba with ColumnTransformer.transform done without its validation,
    routing and joblib dispatch (most of a call on a few rows): each fitted transformer on its
    columns, in order, stacked by the ColumnTransformer's own hstack (dense or sparse as fitting
    decided), then the final step's predict_proba, as Pipeline calls it."""
    outputs = [transformer.transform(rows[:, columns]) for _, transformer, columns, _ in parts]
    return final.predict_proba(encode._hstack(outputs, n_samples=len(rows)))


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


def _scaled_logistic_predict_proba(scaler: Any, logistic: Any, rows: np.ndarray) -> np.ndarray:
    """StandardScaler then LogisticRegression, as their transform and predict_proba compute it,
    without the validation, tags and array-API dispatch that are 90% of a call on a few rows.

    Overflow gives non-finite probabilities here instead of an error; callers refuse those.
    """
    scaled = rows.copy()
    if scaler.with_mean:
        scaled -= scaler.mean_
    if scaler.with_std:
        scaled /= scaler.scale_
    decision: np.ndarray = scaled @ logistic.coef_.T + logistic.intercept_
    if len(logistic.classes_) <= 2:  # the logistic function of the one decision column
        positive: np.ndarray = expit(decision.reshape(-1))
        return np.stack([1 - positive, positive], axis=1)
    # softmax, in place
    decision -= decision.max(axis=1).reshape(-1, 1)
    np.exp(decision, out=decision)
    decision /= decision.sum(axis=1).reshape(-1, 1)
    return decision
