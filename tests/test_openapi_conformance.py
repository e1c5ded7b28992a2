"""schemathesis against the real gunicorn server: generated requests, from its own OpenAPI document."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.live_server import REPO, running

pytestmark = pytest.mark.e2e

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
# Bounds, checks and their reasons are in this file, so a run by hand is the same run.
CONFIG = REPO / "tests" / "schemathesis.toml"


def schemathesis(url: str, workdir: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """Run schemathesis against the server at `url` from its own document; assert it found no issue.

    `workdir` is where it keeps its example database and crash files.
    """
    run = subprocess.run(
        [
            str(SCHEMATHESIS),
            "--config-file",
            str(CONFIG),
            "run",
            f"{url}/openapi.json",
            "--no-color",
            *options,
        ],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-20_000:] + run.stderr[-5_000:]
    assert "No issues found" in run.stdout
    return run


def test_no_generated_request_gets_a_5xx_and_every_response_matches_the_document(
    model_dir: Path, tmp_path: Path
) -> None:
    # A small row limit keeps generated bodies small; the document states whatever the limit is.
    with running(model_dir, tmp_path / "server.log", SKSERVE_MAX_ROWS="20") as server:
        paths = server.request("GET", "/openapi.json").json()["paths"]
        run = schemathesis(server.url, tmp_path)
    # Every documented operation was tested, but for the document's own URL, which schemathesis skips.
    operations = sum(len(item) for item in paths.values())
    assert f"Tested: {operations - 1}\n" in run.stdout
