"""Writing the artifact pair: complete, self-describing, and never half-replaced."""

from __future__ import annotations

import json
import os
import pickle
import stat
from pathlib import Path

import pytest

from skserve.artifact import CARD_FILE, MODEL_FILE, read_card, sha256_of, write_artifact


def test_card_records_the_sha256_and_a_version_derived_from_it(tmp_path: Path) -> None:
    card = write_artifact(tmp_path, {"weights": [1, 2]}, {"name": "demo"})
    assert card == read_card(tmp_path)
    assert card["sha256"] == sha256_of(tmp_path / MODEL_FILE)
    assert card["version"] == card["sha256"][:12]
    assert card["name"] == "demo"


def test_replaces_an_existing_pair_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    write_artifact(tmp_path, "old", {"name": "old"})
    card = write_artifact(tmp_path, "new", {"name": "new"})
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([CARD_FILE, MODEL_FILE])
    assert read_card(tmp_path) == card


def test_a_failed_write_leaves_the_existing_pair_exactly_as_it_was(tmp_path: Path) -> None:
    write_artifact(tmp_path, "old", {"name": "old"})
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(pickle.PicklingError):
        write_artifact(tmp_path, lambda: None, {"name": "unpicklable"})  # a local lambda cannot be pickled
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_a_card_that_is_not_strict_json_is_refused_before_anything_is_replaced(tmp_path: Path) -> None:
    write_artifact(tmp_path, "old", {"name": "old"})
    with pytest.raises(ValueError, match="not JSON compliant"):
        write_artifact(tmp_path, "new", {"metric": float("nan")})
    assert json.loads((tmp_path / CARD_FILE).read_text())["name"] == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([CARD_FILE, MODEL_FILE])


def test_files_are_readable_by_other_users_under_the_usual_umask(tmp_path: Path) -> None:
    """A server running as another user (a container's non-root uid) must be able to read them."""
    previous = os.umask(0o022)
    try:
        write_artifact(tmp_path, "model", {"name": "demo"})
    finally:
        os.umask(previous)
    assert {stat.S_IMODE((tmp_path / name).stat().st_mode) for name in (MODEL_FILE, CARD_FILE)} == {0o644}
