"""The cheap ways of scoring give the estimator's own predict_proba, bit for bit."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_iris, load_wine
from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier

import train
from skserve.scoring import predict_proba

IRIS = load_iris()
WINE = load_wine()


def forests() -> list[Any]:
    """Forests as train.py makes them, and others: extra trees, two classes, string labels, few trees."""
    trained, _ = train.train(train.load_bundled(), "random_forest", 0)
    two_classes = IRIS.target < 2
    return [
        trained,
        ExtraTreesClassifier(n_estimators=30, random_state=1).fit(IRIS.data, IRIS.target),
        RandomForestClassifier(n_estimators=7, random_state=2).fit(
            IRIS.data[two_classes], IRIS.target[two_classes]
        ),
        RandomForestClassifier(n_estimators=25, max_depth=3, random_state=3).fit(
            WINE.data, WINE.target_names[WINE.target]
        ),
    ]


FORESTS = forests()


@pytest.mark.parametrize("forest", FORESTS, ids=["trained", "extra-trees", "two-classes", "string-labels"])
@pytest.mark.parametrize("n_rows", [1, 2, 17, 500])
def test_a_forest_scores_with_the_bits_of_its_own_predict_proba(forest: Any, n_rows: int) -> None:
    n_features = forest.n_features_in_
    rng = np.random.default_rng(n_rows)
    # Inside and far outside the training range, and values that round when cast to float32.
    rows = rng.uniform(-50, 1500, size=(n_rows, n_features)) + rng.uniform(0, 1e-9, size=(n_rows, n_features))
    assert predict_proba(forest, rows).tobytes() == forest.predict_proba(rows).tobytes()


def test_a_forest_refuses_values_past_float32_as_scikit_learn_does() -> None:
    forest = FORESTS[1]  # extra trees
    rows = np.array([[1.0, 2.0, 1e300, 4.0]])
    with np.errstate(over="ignore"), pytest.raises(ValueError, match="too large for dtype\\('float32'\\)"):
        forest.predict_proba(rows)
    with np.errstate(over="ignore"), pytest.raises(ValueError, match="too large for dtype\\('float32'\\)"):
        predict_proba(forest, rows)


def test_a_subclass_keeps_its_own_predict_proba() -> None:
    class Calibrated(RandomForestClassifier):
        def predict_proba(self, X: Any) -> Any:
            return np.full((len(X), 3), 1 / 3)

    forest = Calibrated(n_estimators=5, random_state=0).fit(IRIS.data, IRIS.target)
    assert predict_proba(forest, IRIS.data[:4]).tolist() == [[1 / 3] * 3] * 4
