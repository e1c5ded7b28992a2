"""Fixtures: tiny real models trained and saved with train.py's own code, and apps around it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient

import train
from skserve import create_app
from skserve.artifact import write_artifact
from skserve.model import LoadedModel


def _penguins_csv() -> Path:
    """The Palmer penguins CSV the palmerpenguins package ships (found without importing it)."""
    spec = importlib.util.find_spec("palmerpenguins")
    assert spec is not None, "palmerpenguins is not installed (make install)"
    assert spec.origin is not None
    return Path(spec.origin).parent / "data" / "penguins.csv"


# 344 rows; text columns island and sex; NA in five columns (and in two rows of body_mass_g).
PENGUINS_CSV = _penguins_csv()


def save_model(
    directory: Path,
    model: str = "logistic_regression",
    seed: int = 0,
    data: train.Dataset | None = None,
    task: str | None = None,
) -> Path:
    """Train with train.py's functions (on iris unless `data` is given); write the pair into `directory`."""
    estimator, card = train.train(data or train.load_bundled(), model, seed, task=task)
    write_artifact(directory, estimator, card)
    return directory


@pytest.fixture(scope="session")
def mixed_classifier_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Penguin species from number and text features with missing values (a linear pipeline)."""
    return save_model(
        tmp_path_factory.mktemp("mixed"), "linear", data=train.load_csv(PENGUINS_CSV, "species")
    )


@pytest.fixture(scope="session")
def regressor_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Disease progression from the bundled diabetes data: complete numbers, a regression target."""
    return save_model(tmp_path_factory.mktemp("regressor"), "linear", data=train.load_bundled("diabetes"))


@pytest.fixture(scope="session")
def mixed_regressor_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Penguin body mass from number and text features with missing values (a linear pipeline)."""
    data = train.load_csv(PENGUINS_CSV, "body_mass_g")
    return save_model(tmp_path_factory.mktemp("mixed-regressor"), "linear", data=data)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_model(tmp_path_factory.mktemp("model"))


@pytest.fixture
def app(model_dir: Path) -> Flask:
    return create_app({"TESTING": True, "MODEL_DIR": str(model_dir)})


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


# What the model raises in failing_app: no response may echo it.
SECRET_FAILURE = "secret internal detail"  # noqa: S105 (a marker, not a password)


@pytest.fixture
def failing_app(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Flask:
    """An app whose model fails unexpectedly on every call, serving errors as production does."""

    def explode(self: LoadedModel, rows: np.ndarray) -> None:
        raise RuntimeError(SECRET_FAILURE)

    monkeypatch.setattr(LoadedModel, "outputs", explode)  # before the app's batcher takes it
    return create_app({"TESTING": True, "PROPAGATE_EXCEPTIONS": False, "MODEL_DIR": str(model_dir)})
