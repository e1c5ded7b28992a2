"""Optional peer (BENCH_PEERS=mlflow): MLflow's scoring server for the same estimator, in its own venv."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
VENV = BENCH / ".peers" / "mlflow"
REQUIREMENTS = BENCH / "requirements-mlflow.txt"
STAMP = VENV / ".installed"
INSTALL_TIMEOUT_S = 900

# Run by the peer venv's Python: MLflow's own sklearn flavour wraps the very estimator we serve.
SAVE = """
import sys, joblib, mlflow.sklearn
mlflow.sklearn.save_model(joblib.load(sys.argv[1]), sys.argv[2], serialization_format="cloudpickle")
"""


def ensure_venv() -> None:
    """Create bench/.peers/mlflow with the pinned requirements, unless it is already up to date."""
    if STAMP.exists() and STAMP.read_text() == REQUIREMENTS.read_text():
        return
    print(f"bench: installing MLflow's scoring server into {VENV} (once)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True, timeout=120)
    subprocess.run(
        [str(VENV / "bin" / "pip"), "install", "--quiet", "-r", str(REQUIREMENTS)],
        check=True,
        timeout=INSTALL_TIMEOUT_S,
    )
    STAMP.write_text(REQUIREMENTS.read_text())


def save_as_mlflow_model(model_dir: Path) -> Path:
    """Write MODEL_DIR/mlflow, an MLflow model directory holding the estimator of MODEL_DIR/model.joblib."""
    target = model_dir / "mlflow"
    subprocess.run(
        [str(VENV / "bin" / "python"), "-c", SAVE, str(model_dir / "model.joblib"), str(target)],
        check=True,
        timeout=300,
        capture_output=True,
    )
    return target


def serve_command(model_dir: Path, host: str, port: int, workers: int) -> tuple[list[str], dict[str, str]]:
    """`mlflow models serve` on the saved model, with the venv first on PATH (it runs `uvicorn` by name)."""
    argv = [
        str(VENV / "bin" / "mlflow"),
        "models",
        "serve",
        "--model-uri",
        str(model_dir / "mlflow"),
        "--env-manager",
        "local",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    return argv, {"PATH": f"{VENV / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}
