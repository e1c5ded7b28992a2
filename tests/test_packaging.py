"""skserve package: a user's fitted estimator becomes an artifact pair, its card read off the estimator."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

import skserve
from skserve.artifact import CARD_FILE, MODEL_FILE, read_card
from skserve.features import features_from_card
from skserve.model import LoadedModel
from skserve.packaging import PackagingError
from tests.live_server import REPO, running


def customers(rows: int = 200, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """A DataFrame with an integer, a float with missing values, and text categories with missing values."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "age": rng.integers(18, 80, rows),
            "income": np.where(rng.random(rows) < 0.1, np.nan, rng.normal(50, 10, rows)),
            "city": rng.choice(["paris", "lyon", "nice"], rows),
            "plan": pd.Series(rng.choice(["basic", "pro", None], rows)),
        }
    )
    bought = np.where((frame["age"] > 40) ^ (frame["city"] == "nice"), "yes", "no")
    return frame, bought


def mixed_pipeline(handle_unknown: str = "ignore") -> Any:
    """A DataFrame-fitted pipeline: a ColumnTransformer selecting columns by name, imputers, one-hot."""
    frame, bought = customers()
    columns = ColumnTransformer(
        [
            ("numbers", make_pipeline(SimpleImputer(), StandardScaler()), ["age", "income"]),
            (
                "categories",
                make_pipeline(
                    SimpleImputer(strategy="most_frequent"), OneHotEncoder(handle_unknown=handle_unknown)
                ),
                ["city", "plan"],
            ),
        ]
    )
    return make_pipeline(columns, LogisticRegression()).fit(frame, bought)


def array_forest() -> RandomForestClassifier:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(120, 3))
    return RandomForestClassifier(n_estimators=10, random_state=0).fit(X, (X[:, 0] > 0).astype(int))


SKSERVE = Path(sys.executable).parent / "skserve"  # the console script `pip install` makes


def run_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """The `skserve` command as a user runs it, with nothing on PATH."""
    return subprocess.run(
        [SKSERVE, *map(str, args)], cwd=REPO, capture_output=True, text=True, check=False, env={"PATH": ""}
    )


def package_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return run_cli("package", *args)


def card_features(card: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {feature["name"]: feature for feature in card["features"]}


def test_a_dataframe_pipeline_card_comes_from_the_estimator(tmp_path: Path) -> None:
    """Kinds, dtypes and categories from the fitted encoders; nullable and unknowns from the estimator."""
    sample, _ = customers(20, seed=5)
    card = skserve.package(mixed_pipeline(), sample, tmp_path)
    assert card["format_version"] == 2
    assert card["task"] == "classification"
    assert card["classes"] == ["no", "yes"]
    assert card["input"] == "dataframe"
    features = card_features(card)
    assert list(features) == ["age", "income", "city", "plan"]
    # An int64 column cannot hold a missing value; the float one can, and the imputer fills it.
    assert features["age"] == {"name": "age", "kind": "number", "nullable": False, "dtype": "int64"}
    assert features["income"] == {"name": "income", "kind": "number", "nullable": True, "dtype": "float64"}
    # Categories are the encoder's, not the sample's (which may lack some), and missing is not one.
    assert features["plan"]["categories"] == ["basic", "pro"]
    assert features["city"]["categories"] == ["lyon", "nice", "paris"]
    assert features["city"]["kind"] == "category"
    assert features["city"]["accepts_unknown"] is True  # handle_unknown="ignore"
    assert features["city"]["nullable"] is True  # the imputer fills it
    assert features["city"]["dtype"] == str(sample["city"].dtype)
    assert set(card["versions"]) >= {"python", "scikit-learn", "numpy", "joblib", "pandas"}
    assert read_card(tmp_path) == card
    LoadedModel.load(tmp_path)  # the pair verifies as serving loads it


def test_an_encoder_that_refuses_unknowns_gives_categories_that_refuse_them(tmp_path: Path) -> None:
    frame, bought = customers()
    encode = ColumnTransformer([("codes", OrdinalEncoder(), ["city"])], remainder="drop")
    estimator = make_pipeline(encode, LogisticRegression()).fit(frame[["city"]], bought)
    card = skserve.package(estimator, frame[["city"]].head(5), tmp_path)
    city = card_features(card)["city"]
    assert (city["accepts_unknown"], city["nullable"]) == (False, False)
    assert city["categories"] == ["lyon", "nice", "paris"]


def test_an_array_forest_takes_numbers_in_order(tmp_path: Path) -> None:
    forest = array_forest()
    card = skserve.package(forest, np.zeros((2, 3)), tmp_path)
    assert card["input"] == "array"
    assert [feature["name"] for feature in card["features"]] == ["x0", "x1", "x2"]
    assert {feature["kind"] for feature in card["features"]} == {"number"}
    assert "dtype" not in card["features"][0]
    assert card["classes"] == [0, 1]
    assert card["estimator"] == {"name": "random-forest-classifier", "class": "RandomForestClassifier"}


def test_a_regressor_is_packaged_as_regression_without_classes(tmp_path: Path) -> None:
    X = np.random.default_rng(2).normal(size=(50, 2))
    regressor = RandomForestRegressor(n_estimators=5, random_state=0).fit(X, X[:, 0] * 3)
    card = skserve.package(regressor, X[:10], tmp_path, target=X[:10, 0] * 3)
    assert card["task"] == "regression"
    assert "classes" not in card
    assert set(card["sample_metrics"]) == {"data", "rows", "r2", "mae"}


def test_sample_metrics_are_labelled_as_measured_on_the_sample(tmp_path: Path) -> None:
    sample, bought = customers(40, seed=3)
    card = skserve.package(mixed_pipeline(), sample.assign(bought=bought), tmp_path, target="bought")
    metrics = card["sample_metrics"]
    assert metrics["data"] == "the packaging sample, not held-out data"
    assert metrics["rows"] == 40
    estimator = joblib.load(tmp_path / MODEL_FILE)
    assert metrics["accuracy"] == round(float((estimator.predict(sample) == bought).mean()), 6)
    assert "metrics" not in card  # never mistaken for held-out metrics
    assert [feature["name"] for feature in card["features"]] == ["age", "income", "city", "plan"]


def test_the_cli_packages_a_joblib_file_with_a_csv_sample(tmp_path: Path) -> None:
    joblib.dump(mixed_pipeline(), tmp_path / "churn.joblib")
    sample, bought = customers(30, seed=4)
    sample.assign(bought=bought).to_csv(tmp_path / "sample.csv", index=False)
    done = package_cli(
        tmp_path / "churn.joblib",
        "--sample",
        tmp_path / "sample.csv",
        "--target",
        "bought",
        "--output",
        tmp_path / "out",
    )
    assert done.returncode == 0, done.stderr
    card = read_card(tmp_path / "out")
    assert done.stdout.startswith("packaged churn (Pipeline, classification, dataframe input; features: ")
    assert f"wrote {tmp_path / 'out'}/ (version {card['version']})" in done.stdout
    features = features_from_card(card)
    assert [feature.kind for feature in features] == ["number", "number", "category", "category"]
    assert card["sample_metrics"]["rows"] == 30


def test_the_cli_names_an_array_models_features_after_the_sample_header(tmp_path: Path) -> None:
    joblib.dump(array_forest(), tmp_path / "forest.joblib")
    pd.DataFrame(np.ones((3, 3)), columns=["a", "b", "c"]).to_csv(tmp_path / "sample.csv", index=False)
    done = package_cli(tmp_path / "forest.joblib", "--sample", tmp_path / "sample.csv", "--output", tmp_path)
    assert done.returncode == 0, done.stderr
    assert [feature["name"] for feature in read_card(tmp_path)["features"]] == ["a", "b", "c"]


REFUSALS = [
    ("garbage", "cannot load {dir}/model_in.joblib: "),
    ("missing", "no such file: {dir}/model_in.joblib"),
    ("dict", "not a scikit-learn estimator: the file holds a dict"),
    ("unfitted", "the Pipeline is not fitted: call fit before joblib.dump"),
    ("transformer", "the StandardScaler has no predict method: skserve serves predictors"),
    (
        "columns",
        "the sample's columns do not match the estimator's features ['age', 'income', 'city', 'plan']: "
        "missing ['plan']; unexpected ['colour']",
    ),
    ("width", "the estimator takes 3 features; the sample has 2 columns ['a', 'b']"),
    ("target", "the sample has no column 'nope'; its columns are ['age', 'income', 'city', 'plan']"),
]


@pytest.mark.parametrize(("case", "message"), REFUSALS, ids=[case for case, _ in REFUSALS])
def test_refusals_are_one_line_and_leave_the_existing_model_alone(
    tmp_path: Path, case: str, message: str
) -> None:
    existing = tmp_path / "models"
    skserve.package(array_forest(), np.zeros((1, 3)), existing)
    before = {name: (existing / name).read_bytes() for name in (MODEL_FILE, CARD_FILE)}
    model_file = tmp_path / "model_in.joblib"
    sample = tmp_path / "sample.csv"
    frame, _ = customers(5)
    frame.to_csv(sample, index=False)
    args: list[str | Path] = []
    if case == "garbage":
        model_file.write_bytes(b"not a pickle at all")
    elif case == "dict":
        joblib.dump({"coef": [1, 2]}, model_file)
    elif case == "unfitted":
        joblib.dump(make_pipeline(StandardScaler(), LogisticRegression()), model_file)
    elif case == "transformer":
        joblib.dump(StandardScaler().fit(np.ones((3, 2))), model_file)
    elif case == "columns":
        joblib.dump(mixed_pipeline(), model_file)
        frame.rename(columns={"plan": "colour"}).to_csv(sample, index=False)
    elif case == "width":
        joblib.dump(array_forest(), model_file)
        pd.DataFrame({"a": [1.0], "b": [2.0]}).to_csv(sample, index=False)
    elif case == "target":
        joblib.dump(mixed_pipeline(), model_file)
        args = ["--target", "nope"]
    done = package_cli(model_file, "--sample", sample, "--output", existing, *args)
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("skserve package: error: " + message.format(dir=tmp_path))
    assert {name: (existing / name).read_bytes() for name in (MODEL_FILE, CARD_FILE)} == before


def test_a_sample_the_estimator_fails_on_is_refused(tmp_path: Path) -> None:
    sample, _ = customers(5)
    with pytest.raises(PackagingError, match=r"^the Pipeline fails on the sample rows: ValueError: "):
        skserve.package(mixed_pipeline(handle_unknown="error"), sample.assign(city="rome"), tmp_path)
    assert not (tmp_path / CARD_FILE).exists()


def test_importing_skserve_does_not_import_pandas_until_package_is_used() -> None:
    code = (
        "import sys, skserve; assert 'pandas' not in sys.modules; "
        "skserve.package; assert 'pandas' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, env={"PYTHONPATH": str(REPO / "src")})


def json_rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The rows as a client sends them: numbers, category strings, and null for a missing value."""
    return [
        {name: None if pd.isna(value) else value for name, value in row.items()}
        for row in frame.astype(object).to_dict(orient="records")
    ]


@pytest.mark.e2e
@pytest.mark.parametrize("how", ["cli", "python"])
@pytest.mark.parametrize("kind", ["dataframe pipeline", "array forest"])
def test_the_server_answers_exactly_what_the_estimator_answers_in_process(
    tmp_path: Path, how: str, kind: str
) -> None:
    """Packaged from the CLI or from Python and served by real gunicorn, with rows the sample lacks."""
    if kind == "dataframe pipeline":
        estimator, sample = mixed_pipeline(), customers(20, seed=5)[0]
        rows = customers(40, seed=9)[0]
        rows.loc[3, "city"] = "rome"  # a city the encoder never saw: handle_unknown="ignore" takes it
        body = json_rows(rows)
    else:
        estimator = array_forest()
        sample = pd.DataFrame(np.zeros((2, 3)), columns=["a", "b", "c"])
        rows = np.random.default_rng(3).normal(size=(40, 3))
        body = rows.tolist()
    model_dir = tmp_path / "models"
    if how == "cli":
        joblib.dump(estimator, tmp_path / "model.joblib")
        sample.to_csv(tmp_path / "sample.csv", index=False)
        done = package_cli(
            tmp_path / "model.joblib", "--sample", tmp_path / "sample.csv", "--output", model_dir
        )
        assert done.returncode == 0, done.stderr
    else:
        skserve.package(estimator, sample, model_dir)
    with running(model_dir, tmp_path / "server.log") as server:
        response = server.request("POST", "/predict", {"instances": body})
        assert response.status == 200, response.body
        answer = response.json()
    assert answer["predictions"] == estimator.predict(rows).tolist()
    assert [list(p.values()) for p in answer["probabilities"]] == estimator.predict_proba(rows).tolist()


class Call:
    """An object whose unpickling calls `function(*args)`: what a malicious artifact holds."""

    def __init__(self, function: Any, *args: Any) -> None:
        self.function, self.args = function, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.function, self.args


def test_a_crafted_pickle_is_refused_before_it_writes_a_file_or_runs_a_command(tmp_path: Path) -> None:
    written, touched = tmp_path / "written-by-open", tmp_path / "touched-by-system"
    crafted = tmp_path / "crafted.joblib"
    joblib.dump([Call(open, str(written), "w"), Call(os.system, f"/usr/bin/touch {touched}")], crafted)
    customers(5)[0].to_csv(tmp_path / "sample.csv", index=False)
    done = package_cli(crafted, "--sample", tmp_path / "sample.csv", "--output", tmp_path / "models")
    assert done.returncode == 2
    assert done.stderr.startswith("skserve package: error: refused to load ")
    assert len(done.stderr.splitlines()) == 1
    assert not written.exists()
    assert not touched.exists()
    assert not (tmp_path / "models").exists()
    # The file does both when plain joblib loads it, so the refusal is what prevented them.
    subprocess.run([sys.executable, "-c", f"import joblib; joblib.load({str(crafted)!r})"], check=True)
    assert written.exists()
    assert touched.exists()
