"""Loading, verifying and calling the saved model; knows nothing of HTTP."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import sklearn

from skserve import unpickle
from skserve.artifact import CARD_FILE, MODEL_FILE, read_card, sha256_of
from skserve.errors import InvalidInput
from skserve.features import (
    ARRAY_INPUT,
    CLASSIFICATION,
    DATAFRAME_INPUT,
    INPUTS,
    REGRESSION,
    TASKS,
    CardError,
    Feature,
    features_from_card,
)
from skserve.scoring import Score, scorer_for

log = logging.getLogger(__name__)


class ArtifactError(RuntimeError):
    """The artifact cannot be served: missing, corrupt, or not the one its card describes.

    A RuntimeError because gunicorn prints a RuntimeError raised while preloading the app as
    one line and exits 1, rather than a traceback.
    """


@dataclass(frozen=True)
class Prediction:
    # The predicted class of each row; for a regressor, its predicted number.
    labels: list[Any]
    # One row per input row, one column per class, in the order of the model's class_names; None
    # for a regressor, which has no classes.
    probabilities: np.ndarray | None


@dataclass(frozen=True)
class LoadedModel:
    estimator: Any
    card: dict[str, Any]
    # The estimator's predict_proba (or a cheaper equivalent verified at load, skserve.scoring) for a
    # classifier, its predict for a regressor; given rows as the card's "input" says it was fitted.
    score: Score = field(repr=False, compare=False)

    @classmethod
    def load(
        cls, model_dir: Path, *, allow_version_mismatch: bool = False, allow_unsafe_pickle: bool = False
    ) -> LoadedModel:
        """Load and verify the pair in `model_dir`; raise ArtifactError with one clear sentence."""
        try:
            card = read_card(model_dir)
        except FileNotFoundError:
            raise ArtifactError(f"no model card at {model_dir / CARD_FILE}: run `make train` first") from None
        except (OSError, ValueError) as error:
            raise ArtifactError(f"unreadable model card {model_dir / CARD_FILE}: {error}") from None
        _check_card(card)
        model_path = model_dir / MODEL_FILE
        try:
            actual_sha = sha256_of(model_path)
        except OSError as error:
            raise ArtifactError(f"cannot read {model_path}: {error.strerror}") from None
        if actual_sha != card["sha256"]:
            raise ArtifactError(
                f"{model_path} does not match its card: sha256 is {actual_sha}, "
                f"{CARD_FILE} expects {card['sha256']}"
            )
        _check_sklearn_version(card, allow_version_mismatch)
        try:
            estimator = unpickle.load(model_path, allow_unsafe=allow_unsafe_pickle)
        except Exception as error:  # unpickling can raise nearly anything; all mean "unusable"
            raise ArtifactError(f"cannot load {model_path}: {type(error).__name__}: {error}") from None
        return cls(estimator=estimator, card=card, score=_scorer(estimator, card, model_path))

    @property
    def version(self) -> str:
        return str(self.card["version"])

    @property
    def name(self) -> str:
        """The name clients address the model by (the V2 routes); the card's, or "model" if it has none."""
        return str(self.card.get("name", "model"))

    def renamed(self, name: str) -> LoadedModel:
        """The same model under another name, which its card (as GET /model shows it) then carries."""
        return replace(self, card={**self.card, "name": name})

    @cached_property
    def features(self) -> tuple[Feature, ...]:
        """The typed input schema (skserve.features); validated when the model is loaded."""
        return features_from_card(self.card)

    @cached_property
    def feature_names(self) -> list[str]:
        return [feature.name for feature in self.features]

    @property
    def task(self) -> str:
        """ "classification" or "regression"; cards that say nothing are classifiers (format 1)."""
        return str(self.card.get("task", CLASSIFICATION))

    @cached_property
    def classes(self) -> list[Any] | None:
        """The estimator's classes, in the order of its probability columns; None for a regressor."""
        if self.task == REGRESSION:
            return None
        classes: list[Any] = self.estimator.classes_.tolist()
        return classes

    @cached_property
    def class_names(self) -> tuple[str, ...]:
        """The estimator's classes as text, in the order of its probability columns."""
        return tuple(str(name) for name in self.estimator.classes_.tolist())

    def predict(self, rows: np.ndarray) -> Prediction:
        """Predict rows as `skserve.schema.rows_of_values` returns them.

        A classifier is called once: the label is the class of highest probability, which is how
        `predict` decides for every classifier training offers (tests hold them to it), so
        callers get both for the price of one model call.
        """
        return self.prediction_from(self.outputs(rows))

    def outputs(self, rows: np.ndarray) -> np.ndarray:
        """The model's output for rows, in one call for any number of them: a classifier's
        `predict_proba` (a row per input row, a column per class), a regressor's `predict` (1-D).

        A single row is scored as two copies of itself. numpy multiplies a one-row matrix with BLAS
        gemv and a taller one with gemm, and for linear models the two differ in the last bits;
        scored this way a row gets the same bits alone, in a batch with any other rows, or in a
        multi-row request (tests hold every estimator training offers to it).
        """
        scored = rows if len(rows) > 1 else np.repeat(rows, 2, axis=0)
        # Finite values can still overflow inside the estimator (a scaler dividing 1e308, a tree
        # casting to float32): the input's fault, so refused with a 400 like any other bad value.
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            try:
                outputs = np.asarray(self.score(scored), dtype=np.float64)
            except ValueError as error:
                raise InvalidInput(f"values too large for the model to compute with: {error}") from None
        return outputs[: len(rows)]

    def prediction_from(self, outputs: np.ndarray) -> Prediction:
        """The prediction for the rows whose `outputs` this model computed."""
        if not np.isfinite(outputs).all():
            raise InvalidInput("values too large for the model to compute with: its outputs overflow")
        if self.task == REGRESSION:
            return Prediction(labels=outputs.tolist(), probabilities=None)
        return Prediction(
            labels=self.estimator.classes_.take(outputs.argmax(axis=1)).tolist(),
            probabilities=outputs,
        )


REQUIRED_CARD_KEYS = ("version", "features", "sha256", "versions")


def _check_card(card: dict[str, Any]) -> None:
    missing = [key for key in REQUIRED_CARD_KEYS if key not in card]
    if missing:
        raise ArtifactError(f"{CARD_FILE} lacks required keys {missing}")
    for key, allowed, default in (("task", TASKS, CLASSIFICATION), ("input", INPUTS, ARRAY_INPUT)):
        if card.get(key, default) not in allowed:
            raise ArtifactError(f"{CARD_FILE}: {key!r} must be one of {list(allowed)}, got {card[key]!r}")
    try:
        features_from_card(card)
    except CardError as error:
        raise ArtifactError(f"{CARD_FILE}: {error}") from None


# The estimator method each task scores with.
TASK_METHODS = {CLASSIFICATION: "predict_proba", REGRESSION: "predict"}


def _scorer(estimator: Any, card: dict[str, Any], model_path: Path) -> Score:
    """The function of validated rows that gives the estimator's output for the card's task."""
    task = card.get("task", CLASSIFICATION)
    method = TASK_METHODS[task]
    if not callable(getattr(estimator, method, None)):
        raise ArtifactError(
            f"{model_path} holds a {type(estimator).__name__}, which has no {method} for {task}"
        )
    features = features_from_card(card)
    score: Score = scorer_for(estimator, features) if task == CLASSIFICATION else estimator.predict
    if card.get("input", ARRAY_INPUT) == DATAFRAME_INPUT:
        return _on_data_frames(score, features)
    return score


def _on_data_frames(score: Score, features: tuple[Feature, ...]) -> Score:
    """`score` given the rows as a pandas DataFrame with the card's column names and dtypes, as a
    pipeline fitted on a DataFrame (selecting columns by name) must be given them."""
    # Imported here, the one place serving uses pandas (scikit-learn imports it anyway when installed).
    import pandas as pd  # noqa: PLC0415

    names = [feature.name for feature in features]
    dtypes = {feature.name: feature.dtype for feature in features if feature.dtype is not None}
    return lambda rows: score(pd.DataFrame(rows, columns=names).astype(dtypes))


def _check_sklearn_version(card: dict[str, Any], allow_mismatch: bool) -> None:
    trained_with = card["versions"].get("scikit-learn")
    if trained_with == sklearn.__version__:
        return
    message = (
        f"model was trained with scikit-learn {trained_with} but {sklearn.__version__} is "
        "installed; predictions may differ"
    )
    if not allow_mismatch:
        raise ArtifactError(f"{message}. Retrain it, or set SKSERVE_ALLOW_VERSION_MISMATCH=true")
    log.warning("%s (allowed by SKSERVE_ALLOW_VERSION_MISMATCH)", message)
