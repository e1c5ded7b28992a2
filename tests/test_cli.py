"""The `skserve` command: `pip install .` gives it, and `skserve serve DIR` is the real server."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest

from skserve.artifact import MODEL_FILE
from skserve.cli import main
from skserve.cpus import THREAD_POOL_VARIABLES, available_cpus
from tests.conftest import save_model
from tests.live_server import REPO, LiveServer, running

ROWS = np.random.default_rng(4).uniform(0, 8, size=(5, 4))


def test_lists_its_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    assert "serve" in capsys.readouterr().out


def test_serve_takes_one_optional_model_dir(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["serve", "a", "b"])
    assert exited.value.code == 2
    assert "unrecognized arguments: b" in capsys.readouterr().err


def json_lines(server: LiveServer) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in server.log().splitlines() if line.strip()]
    assert all(isinstance(line, dict) for line in lines)
    return lines


def thread_pool_lines(server: LiveServer, workers: int) -> list[dict[str, Any]]:
    """Each worker's start-up line about its thread pools, waiting (boundedly) for all `workers`."""
    deadline = time.monotonic() + 20
    while True:
        lines = [line for line in json_lines(server) if "thread_pools" in line]
        if len(lines) >= workers or time.monotonic() > deadline:
            return lines
        time.sleep(0.1)


def assert_serves_like_make_serve(server: LiveServer, model_dir: Path, workers: int) -> None:
    """The model's answers, one JSON log per line, a worker count of `workers`, metrics from all of them."""
    model = joblib.load(model_dir / MODEL_FILE)
    for _ in range(6):
        response = server.request("POST", "/predict", {"instances": ROWS.tolist()})
        assert response.status == 200
        assert response.json()["predictions"] == model.predict(ROWS).tolist()
    pools = thread_pool_lines(server, workers)
    booted = {line["pid"] for line in json_lines(server) if line["message"].startswith("Booting worker")}
    assert len(booted) == workers
    metrics = server.request("GET", "/metrics").body.decode()
    assert f"skserve_rows_predicted_total {6 * len(ROWS)}.0" in metrics  # every worker's rows, added up
    assert {line["pid"] for line in pools} == booted


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_model(tmp_path_factory.mktemp("model"), "hist_gradient_boosting")


@pytest.mark.e2e
def test_skserve_serve_runs_gunicorn_with_the_package_settings(model_dir: Path, tmp_path: Path) -> None:
    skserve = [str(Path(sys.executable).parent / "skserve"), "serve", str(model_dir)]
    # From another directory: no gunicorn.conf.py there, so the settings can only come from the package.
    with running(Path("unused"), tmp_path / "server.log", workers=2, command=skserve, cwd=tmp_path) as server:
        assert server.request("GET", "/ready").status == 200
        assert_serves_like_make_serve(server, model_dir, workers=2)
        assert server.stop() == 0


@pytest.mark.e2e
@pytest.mark.parametrize(("workers", "setting"), [(2, ""), (1, ""), (2, "3")])
def test_each_worker_limits_its_thread_pools_to_its_share_of_the_cpus(
    model_dir: Path, tmp_path: Path, workers: int, setting: str
) -> None:
    """Each OpenMP and BLAS pool a request thread gets holds the worker's share; SKSERVE_THREADS overrides."""
    expected = int(setting) if setting else max(available_cpus() // workers, 1)
    environment = {"SKSERVE_THREADS": setting}
    for variable in THREAD_POOL_VARIABLES:
        environment[variable] = ""  # only the setting under test decides; an empty value is unset
    with running(model_dir, tmp_path / "server.log", workers=workers, **environment) as server:
        lines = thread_pool_lines(server, workers)
    assert len(lines) == workers
    for line in lines:
        assert {pool["api"] for pool in line["thread_pools"]} == {"openmp", "blas"}
        assert {pool["threads"] for pool in line["thread_pools"]} == {expected}


# --- pip install . ------------------------------------------------------------------------------

COPIED = ("pyproject.toml", "requirements.txt", "README.md", "src")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with `pip install .` from a copy of the tree (pip's cache makes it quick)."""
    root = tmp_path_factory.mktemp("pip-install")
    tree = root / "tree"
    for name in COPIED:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, tree / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            tree.mkdir(exist_ok=True)
            shutil.copy2(source, tree / name)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            str(tree),
        ],
        check=True,
        timeout=900,
    )
    return venv


@pytest.mark.e2e
def test_pip_install_gives_a_skserve_command_that_serves(
    installed: Path, model_dir: Path, tmp_path: Path
) -> None:
    skserve = installed / "bin" / "skserve"
    where = subprocess.run(
        [str(installed / "bin" / "python"), "-c", "import skserve; print(skserve.__file__)"],
        capture_output=True,
        check=True,
        cwd=tmp_path,
    )
    assert where.stdout.decode().startswith(str(installed))  # the installed copy, not the checkout
    assert subprocess.run([str(skserve), "--help"], capture_output=True, check=True).stdout.startswith(
        b"usage"
    )
    environment = {"PATH": f"{installed / 'bin'}:{os.environ['PATH']}", "PYTHONPATH": ""}
    command = [str(skserve), "serve", str(model_dir)]
    with running(Path("unused"), tmp_path / "server.log", 2, command, tmp_path, **environment) as server:
        assert server.request("GET", "/ready").status == 200
        assert_serves_like_make_serve(server, model_dir, workers=2)
        page = server.request("GET", "/")  # the docs page's template is package data
        assert page.status == 200
        assert b"<html" in page.body.lower()
