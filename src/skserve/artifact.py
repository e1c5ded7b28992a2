"""The model artifact on disk: a joblib file and its JSON model card, written atomically."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import sklearn

from skserve.features import CLASSIFICATION, Feature, features_to_card

MODEL_FILE = "model.joblib"
CARD_FILE = "model.json"
CARD_FORMAT_VERSION = 2


def card_head(
    *, name: str, task: str, input_kind: str, features: Sequence[Feature], estimator: Any
) -> dict[str, Any]:
    """The keys every model card starts with, whoever writes it (train.py or `skserve package`)."""
    card: dict[str, Any] = {
        "format_version": CARD_FORMAT_VERSION,
        "name": name,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "task": task,
        "input": input_kind,
        "features": features_to_card(features),
    }
    if task == CLASSIFICATION:
        card["classes"] = estimator.classes_.tolist()
    return card


def library_versions() -> dict[str, str]:
    """The versions a card records; serving refuses a model made with another scikit-learn."""
    return {
        "python": platform.python_version(),
        "scikit-learn": sklearn.__version__,
        "numpy": np.__version__,
        "joblib": joblib.__version__,
    }


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in chunks so large artifacts do not need to fit in memory."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_artifact(model_dir: Path, estimator: Any, card: dict[str, Any]) -> dict[str, Any]:
    """Write the estimator and its card into `model_dir`, replacing any existing pair.

    Both files are written to temporary names in the same directory and renamed into place
    only once both are complete, so a crash never leaves a half-written or mismatched pair.
    The card gets the sha256 of the joblib file it describes and a version id derived from it
    (the same model always has the same version); the completed card is returned.
    """
    model_dir.mkdir(parents=True, exist_ok=True)
    model_tmp = _temp_path(model_dir, MODEL_FILE)
    card_tmp = _temp_path(model_dir, CARD_FILE)
    try:
        joblib.dump(estimator, model_tmp)
        sha256 = sha256_of(model_tmp)
        card = {**card, "version": sha256[:12], "sha256": sha256}
        card_tmp.write_text(json.dumps(card, indent=2, allow_nan=False) + "\n", encoding="utf-8")
        _fsync(model_tmp)
        _fsync(card_tmp)
        # The model goes first: a reader that sees the new card always finds the new model, and
        # a crash between the renames leaves a pair the sha256 check rejects rather than misreads.
        os.replace(model_tmp, model_dir / MODEL_FILE)
        os.replace(card_tmp, model_dir / CARD_FILE)
    finally:
        model_tmp.unlink(missing_ok=True)
        card_tmp.unlink(missing_ok=True)
    return card


def read_card(model_dir: Path) -> dict[str, Any]:
    """The parsed model card; raises OSError or ValueError when it is missing or not JSON."""
    card = json.loads((model_dir / CARD_FILE).read_text(encoding="utf-8"))
    if not isinstance(card, dict):
        raise ValueError(f"{CARD_FILE} must hold a JSON object")
    return card


def _temp_path(directory: Path, name: str) -> Path:
    """A fresh name beside `name`; its writer creates the file with the umask's permissions.

    Not mkstemp: its 0600 would hide the model from a server running as another user.
    """
    return directory / f".{name}.{secrets.token_hex(8)}.tmp"


def _fsync(path: Path) -> None:
    with path.open("rb") as stream:
        os.fsync(stream.fileno())
