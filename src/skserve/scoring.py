"""Scoring rows with the cheapest function that gives `predict_proba`'s exact bits.

scikit-learn spends most of a call on a few rows outside the arithmetic: validating input (which
skserve has done), and for a forest, dispatching each tree through joblib. For the estimators
train.py makes there is a shorter path through the same arithmetic, in the same order. A model
uses it only if it reproduces the estimator's own `predict_proba` bit for bit on probe rows when
loaded, so a scikit-learn release that computes differently falls back to `predict_proba`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.special import expit
from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

log = logging.getLogger(__name__)

Score = Callable[[np.ndarray], np.ndarray]

# Exact types only: a subclass may score differently.
_FORESTS = (RandomForestClassifier, ExtraTreesClassifier)
PROBE_ROWS = 64


def scorer_for(estimator: Any) -> Score:
    """A function of a finite 2-D float64 array of rows giving `estimator.predict_proba`'s result."""
    predict_proba: Score = estimator.predict_proba
    shortcut = _shortcut(estimator)
    if shortcut is None:
        return predict_proba
    name = type(estimator).__name__
    if not _same_bits(shortcut, estimator):
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
    return None


def _same_bits(shortcut: Score, estimator: Any) -> bool:
    """Whether `shortcut` gives the estimator's own bits on probe rows around and far from zero."""
    rng = np.random.default_rng(0)
    scales = rng.choice([1.0, 10.0, 1000.0], size=(PROBE_ROWS, 1))
    probe = rng.normal(0, 1, size=(PROBE_ROWS, estimator.n_features_in_)) * scales
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
