"""Fixtures: a tiny real model trained and saved with train.py's own code, and apps around it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient

import train
from skserve import create_app
from skserve.artifact import write_artifact
from skserve.model import LoadedModel


def save_model(directory: Path, model: str = "logistic_regression", seed: int = 0) -> Path:
    """Train on iris with train.py's functions and write the artifact pair into `directory`."""
    estimator, card = train.train(train.load_bundled(), model, seed)
    write_artifact(directory, estimator, card)
    return directory


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
