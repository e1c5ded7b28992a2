"""`make docker-build MODEL_FILE=... SAMPLE=...` on the real engine: an image serving a user's own model."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import joblib
import pytest

from tests.live_server import REPO
from tests.test_docker import (  # the engine, base and container fixtures of the image tests
    READ_ONLY,
    Container,
    base_image,  # noqa: F401 (a fixture)
    docker,
    engine,  # noqa: F401 (a fixture)
    http_json,
    image_config,
    make,
    start,  # noqa: F401 (a fixture)
)
from tests.test_packaging import customers, json_rows, mixed_pipeline

pytestmark = pytest.mark.docker

IMAGE = "skserve:test-package"
MAX_IMAGE_BYTES = 450 * 1000**2  # 450 MB as `docker images` counts them, pandas included


@pytest.fixture(scope="module")
def user_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A DataFrame pipeline saved with joblib.dump, and a sample CSV with its target, outside the repo."""
    directory = tmp_path_factory.mktemp("user-model")
    joblib.dump(mixed_pipeline(), directory / "churn.joblib")
    sample, bought = customers(30, seed=4)
    sample.assign(bought=bought).to_csv(directory / "sample.csv", index=False)
    return directory / "churn.joblib", directory / "sample.csv"


@pytest.fixture(scope="module")
def image(base_image: str, user_model: tuple[Path, Path]) -> str:  # noqa: F811 (the fixture above)
    model_file, sample = user_model
    make(
        "docker-build",
        f"IMAGE={IMAGE}",
        f"BASE_IMAGE={base_image}",
        f"MODEL_FILE={model_file}",
        f"SAMPLE={sample}",
        "TARGET=bought",
    )
    return IMAGE


def test_the_image_packages_the_model_and_keeps_the_sample_out(image: str) -> None:
    config = image_config(image)
    assert config["Size"] <= MAX_IMAGE_BYTES, f"image is {config['Size'] / 1e6:.0f} MB"
    assert config["Config"]["Labels"]["skserve.model.name"] == "churn"
    found = docker(
        "run",
        "--rm",
        "--network",
        "none",
        "--user",
        "0:0",
        "--entrypoint",
        "find",
        image,
        "/",
        "-xdev",
        "-name",
        "sample.csv",
    )
    assert found.stdout.split() == []  # the sample stays in the build stage
    assert list(REPO.glob(".skserve-model-*")) == []  # build-image.sh removed its copy from the context


def test_the_container_answers_exactly_what_the_estimator_answers(
    image: str,
    start: Callable[..., Container],  # noqa: F811 (the fixture above)
    user_model: tuple[Path, Path],
) -> None:
    began = time.monotonic()
    container = start(image, *READ_ONLY, "--publish", "127.0.0.1::8000")
    container.wait_healthy(began)
    status, card = http_json(f"{container.published_url()}/model")
    assert status == 200
    assert (card["input"], card["sample_metrics"]["rows"]) == ("dataframe", 30)
    rows = customers(25, seed=11)[0]
    status, answer = http_json(f"{container.published_url()}/predict", {"instances": json_rows(rows)})
    assert status == 200, answer
    estimator = joblib.load(user_model[0])
    assert answer["predictions"] == estimator.predict(rows).tolist()
    assert [list(p.values()) for p in answer["probabilities"]] == estimator.predict_proba(rows).tolist()
