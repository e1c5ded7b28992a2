"""skserve score: a CSV scored chunk by chunk, in order, with /predict's validation and line numbers."""

from __future__ import annotations

import csv
import io
import os
import pty
import subprocess
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest

import skserve
from skserve.artifact import MODEL_FILE
from skserve.bulk import Chunk, ScoringError, score_csv
from skserve.model import LoadedModel
from tests.live_server import REPO
from tests.test_packaging import SKSERVE, customers, mixed_pipeline, run_cli

HEADER = "sepal length (cm),sepal width (cm),petal length (cm),petal width (cm)"


@pytest.fixture(scope="module")
def model(model_dir: Path) -> LoadedModel:
    return LoadedModel.load(model_dir)


def iris_rows(count: int) -> np.ndarray:
    return np.random.default_rng(7).uniform(0, 8, size=(count, 4)).round(2)


def csv_bytes(rows: np.ndarray | list[list[str]]) -> bytes:
    lines = [HEADER, *(",".join(str(value) for value in row) for row in rows)]
    return ("\n".join(lines) + "\n").encode()


def score(model: LoadedModel, data: bytes, **options: Any) -> tuple[list[list[str]], list[Chunk]]:
    sink = io.StringIO()
    chunks = list(score_csv(model, io.BytesIO(data), sink, **options))
    return list(csv.reader(io.StringIO(sink.getvalue()))), chunks


def test_scores_chunk_by_chunk_with_one_model_call_per_chunk(
    model: LoadedModel, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks of at most chunk_rows rows reach the model, and the output is predict_proba's, in order."""
    rows = iris_rows(50)
    seen: list[int] = []
    predict = LoadedModel.predict
    monkeypatch.setattr(
        LoadedModel, "predict", lambda self, matrix: (seen.append(len(matrix)), predict(self, matrix))[1]
    )
    output, chunks = score(model, csv_bytes(rows), chunk_rows=7)
    assert seen == [7] * 7 + [1]
    assert [(chunk.first_line, chunk.rows) for chunk in chunks] == [(2 + 7 * i, 7) for i in range(7)] + [
        (51, 1)
    ]
    estimator = joblib.load(model_dir / MODEL_FILE)
    assert output[0] == ["prediction", *(f"probability_{name}" for name in estimator.classes_)]
    assert [row[0] for row in output[1:]] == estimator.predict(rows).tolist()
    # repr of a float reads back as the same float: the probabilities are exact.
    assert [[float(value) for value in row[1:]] for row in output[1:]] == estimator.predict_proba(
        rows
    ).tolist()


def test_the_output_is_the_same_whatever_the_chunk_size(model: LoadedModel) -> None:
    data = csv_bytes(iris_rows(30))
    assert score(model, data, chunk_rows=4)[0] == score(model, data, chunk_rows=1000)[0]


def test_columns_are_matched_by_name_in_any_order(model: LoadedModel) -> None:
    rows = iris_rows(3)
    names = HEADER.split(",")
    reordered = ",".join(reversed(names)) + "\n" + "\n".join(",".join(map(str, row[::-1])) for row in rows)
    assert score(model, reordered.encode())[0] == score(model, csv_bytes(rows))[0]


BAD_FILES = [
    (
        [["1", "2", "3", "4"], ["1", "x", "3", "4"]],
        "line 3: feature 'sepal width (cm)': expected a number, got a string",
    ),
    (
        [["1", "2", "3", "4"], ["1", "2", "3"]],
        "line 3: feature 'petal width (cm)': expected a number, got null",
    ),
    ([["1", "2", "", "4"]], "line 2: feature 'petal length (cm)': expected a number, got null"),
    ([["1", "2", "NA", "4"]], "line 2: feature 'petal length (cm)': expected a number, got null"),
    (
        [["1", "2", "3", "4"], [], ["1", "2", "3", "4"]],
        "line 3: feature 'sepal length (cm)': expected a number, got null",
    ),
    ([["1", "2", "3", "1e999"]], "line 2: feature 'petal width (cm)': value is too large for a 64-bit float"),
]


@pytest.mark.parametrize(("rows", "message"), BAD_FILES)
def test_a_bad_row_stops_the_run_naming_its_line(
    model: LoadedModel, rows: list[list[str]], message: str
) -> None:
    with pytest.raises(ScoringError) as raised:
        score(model, csv_bytes(rows), chunk_rows=2)
    assert str(raised.value) == f"{message} (--skip-bad-rows scores the other rows)"


def test_skipping_bad_rows_scores_the_others_and_reports_each(model: LoadedModel) -> None:
    rows = iris_rows(6).astype(str).tolist()
    rows[1][0] = "oops"
    rows[4][3] = ""
    output, chunks = score(model, csv_bytes(rows), chunk_rows=4, skip_bad_rows=True)
    good = np.array([row for index, row in enumerate(rows) if index not in {1, 4}], dtype=float)
    assert output[1:] == score(model, csv_bytes(good))[0][1:]
    assert [str(bad) for chunk in chunks for bad in chunk.bad] == [
        "line 3: feature 'sepal length (cm)': expected a number, got a string",
        "line 6: feature 'petal width (cm)': expected a number, got null",
    ]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "the file is empty: expected a header row naming the model's features"),
        (
            b"sepal length (cm),sepal width (cm),petal length (cm),colour\n1,2,3,4\n",
            "line 1: the header's columns must be the model's features ['sepal length (cm)', "
            "'sepal width (cm)', 'petal length (cm)', 'petal width (cm)']: "
            "missing ['petal width (cm)']; unknown ['colour']",
        ),
    ],
)
def test_a_file_that_is_not_the_models_csv_is_refused(model: LoadedModel, data: bytes, message: str) -> None:
    with pytest.raises(ScoringError) as raised:
        score(model, data)
    assert str(raised.value) == message


def score_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return run_cli("score", *args)


def test_the_cli_writes_the_predictions_file(model: LoadedModel, model_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_bytes(csv_bytes(iris_rows(25)))
    done = score_cli(
        tmp_path / "in.csv", "--model-dir", model_dir, "--output", tmp_path / "out.csv", "--chunk-rows", "10"
    )
    assert (done.returncode, done.stdout, done.stderr) == (
        0,
        "",
        "",
    )  # no progress bar: stderr is not a terminal
    expected = score(model, csv_bytes(iris_rows(25)))[0]
    assert list(csv.reader(io.StringIO((tmp_path / "out.csv").read_text()))) == expected


def test_the_cli_stops_on_a_bad_row_without_leaving_a_partial_file(model_dir: Path, tmp_path: Path) -> None:
    rows = iris_rows(30).astype(str).tolist()
    rows[25][2] = "wide"
    (tmp_path / "in.csv").write_bytes(csv_bytes(rows))
    done = score_cli(
        tmp_path / "in.csv", "--model-dir", model_dir, "--output", tmp_path / "out.csv", "--chunk-rows", "10"
    )
    assert done.returncode == 2
    assert done.stderr == (
        "skserve score: error: line 27: feature 'petal length (cm)': expected a number, got a string "
        "(--skip-bad-rows scores the other rows)\n"
    )
    assert list(tmp_path.iterdir()) == [tmp_path / "in.csv"]


def test_the_cli_reports_skipped_rows_on_stderr(model_dir: Path, tmp_path: Path) -> None:
    rows = iris_rows(3).astype(str).tolist()
    rows[0][1] = "?"
    (tmp_path / "in.csv").write_bytes(csv_bytes(rows))
    done = score_cli(tmp_path / "in.csv", "--model-dir", model_dir, "--skip-bad-rows")
    assert done.returncode == 0
    assert (
        done.stderr
        == "skserve score: skipped line 2: feature 'sepal width (cm)': expected a number, got a string\n"
    )
    assert len(done.stdout.splitlines()) == 3  # the header and two predictions, on stdout


def test_the_cli_refuses_a_missing_model(tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_bytes(csv_bytes(iris_rows(1)))
    done = score_cli(tmp_path / "in.csv", "--model-dir", tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith(f"skserve score: error: no model card at {tmp_path}/model.json")


def test_the_cli_shows_progress_on_stderr_when_it_is_a_terminal(model_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_bytes(csv_bytes(iris_rows(30)))
    controller, terminal = pty.openpty()
    with os.fdopen(controller, "rb", buffering=0) as screen:
        done = subprocess.run(
            [
                SKSERVE,
                "score",
                tmp_path / "in.csv",
                "--model-dir",
                model_dir,
                "--chunk-rows",
                "10",
            ],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=terminal,
            check=False,
            env={"PATH": ""},
        )
        os.close(terminal)
        shown = screen.read(4096).decode()
    assert done.returncode == 0
    updates = shown.removesuffix("\r\n").split("\r")[1:]  # one per chunk, each redrawing the line
    assert [update.split("% ")[1].strip() for update in updates] == ["10 rows", "20 rows", "30 rows"]
    assert updates[-1].strip() == "[##############################] 100% 30 rows"


@pytest.fixture(scope="module")
def mixed_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A packaged DataFrame pipeline: an int, a float with missing values, text categories."""
    directory = tmp_path_factory.mktemp("mixed")
    skserve.package(mixed_pipeline(handle_unknown="error"), customers(20)[0], directory)
    return directory


def test_a_dataframe_pipeline_scores_text_and_missing_values_as_in_process(mixed_dir: Path) -> None:
    rows = customers(30, seed=8)[0]
    data = rows.to_csv(index=False).encode()
    output, chunks = score(LoadedModel.load(mixed_dir), data, chunk_rows=8)
    assert [chunk.rows for chunk in chunks] == [8, 8, 8, 6]
    estimator = joblib.load(mixed_dir / MODEL_FILE)
    assert [row[0] for row in output[1:]] == estimator.predict(rows).tolist()
    assert [[float(value) for value in row[1:]] for row in output[1:]] == estimator.predict_proba(
        rows
    ).tolist()


def test_a_category_the_model_never_saw_is_a_bad_row(mixed_dir: Path) -> None:
    rows = customers(5, seed=8)[0]
    rows.loc[2, "city"] = "rome"
    with pytest.raises(ScoringError, match=r"^line 4: feature 'city': "):
        score(LoadedModel.load(mixed_dir), rows.to_csv(index=False).encode())


def test_bad_rows_of_a_typed_chunk_are_named_as_the_per_row_checks_name_them(mixed_dir: Path) -> None:
    rows = customers(16, seed=8)[0].astype({"age": object, "income": object})
    rows.loc[1, "age"] = 3.5
    rows.loc[6, "city"] = "rome"
    rows.loc[9, "income"] = "lots"
    output, chunks = score(
        LoadedModel.load(mixed_dir), rows.to_csv(index=False).encode(), chunk_rows=4, skip_bad_rows=True
    )
    assert [[str(row) for row in chunk.bad] for chunk in chunks] == [
        [
            "line 3: feature 'age': expected an integer (the model was fitted on int64), "
            "got a number with a fraction"
        ],
        ["line 8: feature 'city': expected one of its categories ['lyon', 'nice', 'paris'], got 'rome'"],
        ["line 11: feature 'income': expected a number or null, got a string"],
        [],
    ]
    good = rows.drop(index=[1, 6, 9]).astype({"age": "int64", "income": "float64"})
    assert [row[0] for row in output[1:]] == joblib.load(mixed_dir / MODEL_FILE).predict(good).tolist()
