"""Scoring shortcuts give the estimator's own predict_proba, bit for bit, or are not used."""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_iris, load_wine
from sklearn.ensemble import ExtraTreesClassifier, HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import train
from skserve import scoring
from skserve.features import NUMBER, Feature, features_from_card
from skserve.scoring import scorer_for
from tests.conftest import PENGUINS_CSV

IRIS = load_iris()
WINE = load_wine()
TWO_CLASSES = IRIS.target < 2
WINE_LABELS = WINE.target_names[WINE.target]


def trained(model: str) -> Any:
    estimator, _ = train.train(train.load_bundled(), model, 0)
    return estimator


def numbers(estimator: Any) -> tuple[Feature, ...]:
    """The features of an estimator fitted on a float64 matrix: numbers, never missing."""
    return tuple(Feature(f"x{index}") for index in range(estimator.n_features_in_))


def logistic(**scaler: bool) -> Any:
    return make_pipeline(StandardScaler(**scaler), LogisticRegression(max_iter=5000))


# Estimators as train.py makes them, and others of the same kinds: more features, two classes,
# string labels, scalers without centring or scaling.
SHORTCUT_ESTIMATORS = {
    "trained-forest": trained("random_forest"),
    "extra-trees": ExtraTreesClassifier(n_estimators=30, random_state=1).fit(IRIS.data, IRIS.target),
    "forest-two-classes": RandomForestClassifier(n_estimators=7, random_state=2).fit(
        IRIS.data[TWO_CLASSES], IRIS.target[TWO_CLASSES]
    ),
    "forest-wine": RandomForestClassifier(n_estimators=25, max_depth=3, random_state=3).fit(
        WINE.data, WINE_LABELS
    ),
    "trained-pipeline": trained("logistic_regression"),
    "pipeline-two-classes": logistic().fit(IRIS.data[TWO_CLASSES], IRIS.target[TWO_CLASSES]),
    "pipeline-wine": logistic().fit(WINE.data, WINE_LABELS),
    "pipeline-not-centred": logistic(with_mean=False).fit(IRIS.data, IRIS.target),
    "pipeline-not-scaled": logistic(with_std=False).fit(WINE.data, WINE_LABELS),
}


@pytest.mark.parametrize("estimator", SHORTCUT_ESTIMATORS.values(), ids=SHORTCUT_ESTIMATORS.keys())
@pytest.mark.parametrize("n_rows", [1, 2, 17, 500])
def test_a_shortcut_scores_with_the_bits_of_predict_proba(estimator: Any, n_rows: int) -> None:
    score = scorer_for(estimator, numbers(estimator))
    assert score != estimator.predict_proba  # the shortcut, not the fallback, is under test
    n_features = estimator.n_features_in_
    rng = np.random.default_rng(n_rows)
    # Inside and far outside the training range, with digits that float32 (the trees') rounds away.
    rows = rng.uniform(-50, 1500, size=(n_rows, n_features)) + rng.uniform(0, 1e-9, size=(n_rows, n_features))
    assert score(rows).tobytes() == estimator.predict_proba(rows).tobytes()


def test_a_shortcut_that_does_not_reproduce_predict_proba_is_not_used(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """As if a scikit-learn release computed differently: the model falls back to predict_proba."""
    honest = scoring._logistic_predict_proba

    def one_bit_off(logistic: Any, rows: np.ndarray) -> np.ndarray:
        return np.nextafter(honest(logistic, rows), 2.0)

    monkeypatch.setattr(scoring, "_logistic_predict_proba", one_bit_off)
    estimator = SHORTCUT_ESTIMATORS["trained-pipeline"]
    with caplog.at_level(logging.WARNING, logger="skserve.scoring"):
        assert scorer_for(estimator, numbers(estimator)) == estimator.predict_proba
    assert "the Pipeline shortcut differs from predict_proba" in caplog.text


def test_other_estimators_and_subclasses_keep_their_own_predict_proba() -> None:
    class Calibrated(RandomForestClassifier):
        def predict_proba(self, X: Any) -> Any:
            return np.full((len(X), 3), 1 / 3)

    subclass = Calibrated(n_estimators=5, random_state=0).fit(IRIS.data, IRIS.target)
    boosting = HistGradientBoostingClassifier(max_iter=5).fit(IRIS.data, IRIS.target)
    bare_logistic = LogisticRegression(max_iter=5000).fit(IRIS.data, IRIS.target)
    for estimator in (subclass, boosting, bare_logistic):
        assert scorer_for(estimator, numbers(estimator)) == estimator.predict_proba


def test_a_forest_refuses_values_past_float32_as_scikit_learn_does() -> None:
    forest = SHORTCUT_ESTIMATORS["extra-trees"]
    rows = np.array([[1.0, 2.0, 1e300, 4.0]])
    with np.errstate(over="ignore"), pytest.raises(ValueError, match="too large for dtype\\('float32'\\)"):
        forest.predict_proba(rows)
    with np.errstate(over="ignore"), pytest.raises(ValueError, match="too large for dtype\\('float32'\\)"):
        scorer_for(forest, numbers(forest))(rows)


PENGUINS = train.load_csv(PENGUINS_CSV, "species")
# Every tabular pipeline train.py makes for text and missing values, with its typed features.
MIXED_MODELS = {model: train.train(PENGUINS, model, 0) for model in train.MODELS}


def mixed_rows(features: tuple[Feature, ...], n_rows: int) -> np.ndarray:
    """Rows as serving gives them: numbers in and far outside the penguins' range, every category,
    and a missing value in about a fifth of the cells of every column."""
    rng = np.random.default_rng(n_rows)
    rows = np.empty((n_rows, len(features)), dtype=object)
    for index, feature in enumerate(features):
        if feature.kind == NUMBER:
            column = rng.uniform(-50, 6500, size=n_rows) + rng.uniform(0, 1e-9, size=n_rows)
            rows[:, index] = column.tolist()
        else:
            rows[:, index] = rng.choice(np.array(feature.categories, dtype=object), size=n_rows)
        rows[rng.random(n_rows) < 0.2, index] = np.nan
    return rows


@pytest.mark.parametrize("model", MIXED_MODELS)
@pytest.mark.parametrize("n_rows", [1, 2, 17, 500])
def test_a_tabular_pipeline_shortcut_scores_with_the_bits_of_predict_proba(model: str, n_rows: int) -> None:
    estimator, card = MIXED_MODELS[model]
    features = features_from_card(card)
    score = scorer_for(estimator, features)
    assert score != estimator.predict_proba
    rows = mixed_rows(features, n_rows)
    if n_rows == 500:  # every category and a missing value in every column
        for index, feature in enumerate(features):
            column = rows[:, index].tolist()
            assert set(feature.categories) <= set(column)
            assert any(isinstance(value, float) and math.isnan(value) for value in column)
    assert score(rows).tobytes() == estimator.predict_proba(rows).tobytes()


@pytest.mark.parametrize("model", MIXED_MODELS)
def test_the_tabular_pipeline_shortcut_is_chosen_and_logged(
    model: str, caplog: pytest.LogCaptureFixture
) -> None:
    estimator, card = MIXED_MODELS[model]
    with caplog.at_level(logging.INFO, logger="skserve.scoring"):
        assert scorer_for(estimator, features_from_card(card)) != estimator.predict_proba
    assert "scoring the Pipeline by a shortcut that matched predict_proba bit for bit" in caplog.text


@pytest.mark.parametrize("model", MIXED_MODELS)
def test_a_tabular_shortcut_one_bit_off_is_not_used(
    model: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """As if a scikit-learn release encoded differently: the model falls back to predict_proba."""
    honest = scoring._encoded_predict_proba

    def one_bit_off(encode: Any, parts: list[tuple[Any, ...]], final: Any, rows: np.ndarray) -> Any:
        return np.nextafter(honest(encode, parts, final, rows), 2.0)

    monkeypatch.setattr(scoring, "_encoded_predict_proba", one_bit_off)
    estimator, card = MIXED_MODELS[model]
    with caplog.at_level(logging.WARNING, logger="skserve.scoring"):
        assert scorer_for(estimator, features_from_card(card)) == estimator.predict_proba
    assert "the Pipeline shortcut differs from predict_proba" in caplog.text


@pytest.mark.parametrize("model", MIXED_MODELS)
def test_each_encoding_step_gives_its_transformers_own_values(model: str) -> None:
    """The imputer, scaler and one-hot encoder, computed without validation, equal their transform
    on rows with every category and missing values; other transformers keep their own transform."""
    estimator, card = MIXED_MODELS[model]
    rows = mixed_rows(features_from_card(card), 500)
    encode = estimator.steps[0][1]
    for _, transformer, columns in encode.transformers_:
        if transformer == "drop":
            continue
        transform = scoring._transform(transformer)
        expected = transformer.transform(rows[:, columns])
        expected = expected.toarray() if hasattr(expected, "toarray") else expected
        assert np.asarray(transform(rows[:, columns])).tobytes() == np.asarray(expected).tobytes()
