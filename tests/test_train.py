"""train.py: bundled data, user CSVs with text and missing values, both tasks, clear refusals, and
an existing model kept safe."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

import train
from skserve.artifact import CARD_FILE, MODEL_FILE, read_card, sha256_of
from skserve.features import (
    CATEGORY,
    CLASSIFICATION,
    MISSING_SPELLINGS,
    NUMBER,
    REGRESSION,
    Feature,
    features_from_card,
)
from skserve.model import LoadedModel
from tests.conftest import PENGUINS_CSV, save_model

REPO = Path(__file__).resolve().parent.parent


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def labelled_csv(tmp_path: Path) -> Path:
    """A small two-feature CSV whose label depends on the first feature."""
    lines = ["size,weight,kind"] + [f"{i},{(i * 7) % 5},{'big' if i >= 10 else 'small'}" for i in range(20)]
    return write_csv(tmp_path / "things.csv", "\n".join(lines) + "\n")


def test_default_run_trains_iris_and_writes_a_complete_card(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert train.main(["--output", str(tmp_path)]) == 0
    card = read_card(tmp_path)
    assert card["name"] == "iris-logistic-regression"
    assert card["features"] == [
        {"name": name, "kind": "number", "nullable": False}
        for name in ("sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)")
    ]
    assert card["classes"] == ["setosa", "versicolor", "virginica"]
    assert card["task"] == "classification"
    assert card["input"] == "array"
    assert card["format_version"] == 2
    assert card["sha256"] == sha256_of(tmp_path / MODEL_FILE)
    assert card["training_data"]["rows"] == 150
    assert card["training_data"]["columns"] == 5
    assert card["training_data"]["rows_without_target"] == 0
    assert len(card["training_data"]["sha256"]) == 64
    assert card["estimator"]["name"] == "logistic_regression"
    assert card["estimator"]["params"]["classify__max_iter"] == 1000
    assert set(card["versions"]) == {"python", "scikit-learn", "numpy", "joblib"}
    assert 0.8 < card["metrics"]["accuracy"] <= 1
    assert 0.8 < card["metrics"]["f1_macro"] <= 1
    assert "created_at" in card
    out = capsys.readouterr().out
    assert f"version {card['version']}" in out
    assert "for classification (inferred: the target is text)" in out


def test_the_model_keeps_the_scaling_inside_its_pipeline(tmp_path: Path) -> None:
    train.main(["--output", str(tmp_path)])
    estimator = joblib.load(tmp_path / MODEL_FILE)
    assert [name for name, _ in estimator.steps] == ["scale", "classify"]


def test_same_data_and_seed_give_the_same_model_and_metrics(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    train.main(["--output", str(first), "--model", "random_forest"])
    train.main(["--output", str(second), "--model", "random_forest"])
    assert read_card(first)["sha256"] == read_card(second)["sha256"]
    assert read_card(first)["metrics"] == read_card(second)["metrics"]


def test_another_seed_gives_another_model(tmp_path: Path) -> None:
    train.main(["--output", str(tmp_path / "a"), "--model", "random_forest", "--seed", "1"])
    train.main(["--output", str(tmp_path / "b"), "--model", "random_forest", "--seed", "2"])
    assert read_card(tmp_path / "a")["sha256"] != read_card(tmp_path / "b")["sha256"]


@pytest.mark.parametrize(
    ("model", "estimator_name", "estimator_type"),
    [
        ("linear", "logistic_regression", Pipeline),
        ("logistic_regression", "logistic_regression", Pipeline),
        ("random_forest", "random_forest", RandomForestClassifier),
        ("hist_gradient_boosting", "hist_gradient_boosting", HistGradientBoostingClassifier),
    ],
)
def test_every_offered_estimator_trains(
    model: str, estimator_name: str, estimator_type: type, tmp_path: Path
) -> None:
    assert train.main(["--output", str(tmp_path), "--model", model, "--name", "custom"]) == 0
    card = read_card(tmp_path)
    assert card["estimator"]["name"] == estimator_name
    assert card["name"] == "custom"
    assert type(joblib.load(tmp_path / MODEL_FILE)) is estimator_type


def test_logistic_regression_is_the_linear_familys_classifier_under_its_old_name(tmp_path: Path) -> None:
    train.main(["--output", str(tmp_path / "old"), "--model", "logistic_regression"])
    train.main(["--output", str(tmp_path / "new"), "--model", "linear"])
    assert read_card(tmp_path / "old")["sha256"] == read_card(tmp_path / "new")["sha256"]


def test_trains_on_a_user_csv_with_text_labels(tmp_path: Path) -> None:
    data = labelled_csv(tmp_path)
    assert train.main(["--data", str(data), "--target", "kind", "--output", str(tmp_path / "m")]) == 0
    card = read_card(tmp_path / "m")
    assert [feature["name"] for feature in card["features"]] == ["size", "weight"]
    assert card["classes"] == ["big", "small"]
    assert card["name"] == "things-logistic-regression"
    assert card["training_data"] == {
        "source": "things",
        "target": "kind",
        "rows": 20,
        "rows_without_target": 0,
        "columns": 3,
        "sha256": sha256_of(data),
    }


def test_integer_labels_stay_integers(tmp_path: Path) -> None:
    lines = ["x,label"] + [f"{i},{int(i >= 5)}" for i in range(10)]
    data = write_csv(tmp_path / "d.csv", "\n".join(lines))
    train.main(["--data", str(data), "--target", "label", "--output", str(tmp_path / "m")])
    assert read_card(tmp_path / "m")["classes"] == [0, 1]


@pytest.mark.parametrize(
    ("csv_text", "options", "message"),
    [
        (None, (), "cannot read .*missing.csv: No such file"),
        ("", (), "is empty"),
        ("a,b,kind\n", (), "has a header but no data rows"),
        ("a,b\n1,2\n3,4\n", (), r"has no column 'kind'; its columns are \['a', 'b'\]"),
        ("kind\nx\ny\n", (), "no feature columns"),
        ("a,b,kind\n1,2,x\n3,4\n", (), "line 3: 2 fields, the header has 3"),
        ("a,b,kind\n1,,p\n2,NA,q\n", (), "feature column 'b' has no values, only missing ones"),
        ("a,a,kind\n1,2,p\n", (), r"names columns \['a'\] more than once"),
        (
            "a,kind\n1,1\n2,inf\n3,2\n4,3\n",
            ("--task", "regression"),
            "regression needs a target of finite numbers; it holds 'inf'",
        ),
        ("a,kind\n1,p\ninf,q\n2,p\n3,q\n", (), "feature column 'a' holds 'inf'; numbers must be finite"),
        ("a,kind\n1,\n2,NA\n", (), "every row's target 'kind' is missing"),
        ("a,kind\n1,1\n2,2\n3,3\n4,4\n", (), r"classes \[1, 2, 3, 4\] have a single row.*--task regression"),
        ("a,kind\n1,p\n2,p\n3,p\n", (), r"only one class \(\['p'\]\)"),
        ("a,kind\n1,p\n2,p\n3,q\n", (), r"classes \['q'\] have a single row"),
        ("a,kind\n1,p\n2,p\n3,q\n4,q\n", (), "cannot split 4 rows"),
        (
            "a,kind\n1,p\n2,q\n",
            ("--task", "regression"),
            "regression needs a target of finite numbers; it holds 'p'",
        ),
        (
            "a,kind\n1,1.5\n2,2.5\n",
            ("--task", "regression", "--model", "logistic_regression"),
            r"logistic_regression is a classifier; for regression choose one of \['linear'",
        ),
    ],
)
def test_bad_training_input_is_refused_with_one_clear_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    csv_text: str | None,
    options: tuple[str, ...],
    message: str,
) -> None:
    data = tmp_path / "missing.csv" if csv_text is None else write_csv(tmp_path / "data.csv", csv_text)
    assert (
        train.main(["--data", str(data), "--target", "kind", "--output", str(tmp_path / "m"), *options]) == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("train.py: error: ")
    assert re.search(message, err), err
    assert not (tmp_path / "m").exists()


def test_a_failed_run_leaves_the_existing_model_exactly_as_it_was(tmp_path: Path) -> None:
    train.main(["--output", str(tmp_path)])
    before = {name: (tmp_path / name).read_bytes() for name in (MODEL_FILE, CARD_FILE)}
    bad = write_csv(tmp_path / "bad.csv", "a,kind\n1,p\n2,p\n")
    assert train.main(["--data", str(bad), "--target", "kind", "--output", str(tmp_path)]) == 2
    after = {name: (tmp_path / name).read_bytes() for name in (MODEL_FILE, CARD_FILE)}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([MODEL_FILE, CARD_FILE, "bad.csv"])


def test_unwritable_output_is_refused_with_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = write_csv(tmp_path / "file", "not a directory")
    assert train.main(["--output", str(blocker / "models")]) == 2
    assert capsys.readouterr().err.startswith(f"train.py: error: cannot write to {blocker / 'models'}")


def test_the_command_line_prints_no_traceback(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "--data", str(tmp_path / "none.csv"), "--target", "y"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert (
        result.stderr == f"train.py: error: cannot read {tmp_path / 'none.csv'}: No such file or directory\n"
    )


def test_data_without_a_target_column_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        train.main(["--data", "x.csv"])
    assert exit_info.value.code == 2
    assert "--data needs --target" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Text and missing values, both tasks, bundled data sets, card format 2.

FAMILIES = ("linear", "random_forest", "hist_gradient_boosting")


def missing(value: object) -> bool:
    return isinstance(value, float) and math.isnan(value)


def penguins(target: str) -> train.Dataset:
    return train.load_csv(PENGUINS_CSV, target)


def missing_in_each(features: tuple[Feature, ...], complete: list[object]) -> np.ndarray:
    """Rows as train.py presents them: one per feature with that feature missing, then one all missing."""
    rows = [[math.nan if j == i else value for j, value in enumerate(complete)] for i in range(len(features))]
    rows.append([math.nan] * len(features))
    return np.array(rows, dtype=object)


def test_every_missing_spelling_reads_as_missing_in_number_and_text_columns(tmp_path: Path) -> None:
    lines = ["size,colour,kind"]
    for index, spelling in enumerate(MISSING_SPELLINGS):
        lines += [f"{spelling},red,p", f"{index},{spelling},q", f" {index + 0.5} , blue ,p", f"{index},red,q"]
    data = train.load_csv(write_csv(tmp_path / "d.csv", "\n".join(lines)), "kind")
    size, colour = data.features
    assert size == Feature("size", NUMBER, nullable=True)
    assert colour == Feature("colour", CATEGORY, nullable=True, categories=("blue", "red"))
    assert data.X.dtype == object
    assert [type(value) for value in data.X[:4, 0]] == [float, float, float, float]
    assert [missing(value) for value in data.X[::4, 0]] == [True] * len(MISSING_SPELLINGS)
    assert [missing(value) for value in data.X[1::4, 1]] == [True] * len(MISSING_SPELLINGS)
    assert data.X[2, :].tolist() == [0.5, "blue"]  # values are stripped


def test_all_number_columns_with_missing_values_are_a_float_matrix(tmp_path: Path) -> None:
    data = train.load_csv(write_csv(tmp_path / "d.csv", "a,b,kind\n1,NA,p\n2,3,q\n"), "kind")
    assert data.X.dtype == np.float64
    assert np.isnan(data.X[0, 1])
    assert data.features == (Feature("a"), Feature("b", nullable=True))


def test_rows_without_a_target_are_left_out_and_counted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert train.main(["--data", str(PENGUINS_CSV), "--target", "sex", "--output", str(tmp_path)]) == 0
    card = read_card(tmp_path)
    assert card["training_data"]["rows"] == 333
    assert card["training_data"]["rows_without_target"] == 11
    assert card["classes"] == ["female", "male"]
    assert "on 333 rows (11 without a target left out)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("labels", "options", "task", "reason"),
    [
        (["p", "q"] * 15, (), CLASSIFICATION, "inferred: the target is text"),
        ([0, 1, 2] * 10, (), CLASSIFICATION, "inferred: the target has only 3 distinct numbers"),
        (list(range(30)), (), REGRESSION, "inferred: the target has 30 distinct numbers"),
        ([0.5, 1.5] * 15, ("--task", "regression"), REGRESSION, "as --task asked"),
        ([i % 25 for i in range(100)], ("--task", "classification"), CLASSIFICATION, "as --task asked"),
    ],
)
def test_the_task_is_inferred_from_the_target_unless_asked(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    *,
    labels: list[object],
    options: tuple[str, ...],
    task: str,
    reason: str,
) -> None:
    lines = ["x,y"] + [f"{i},{label}" for i, label in enumerate(labels)]
    data = write_csv(tmp_path / "d.csv", "\n".join(lines))
    assert train.main(["--data", str(data), "--target", "y", "--output", str(tmp_path / "m"), *options]) == 0
    card = read_card(tmp_path / "m")
    assert card["task"] == task
    assert ("classes" in card) == (task == CLASSIFICATION)
    assert f"for {task} ({reason})" in capsys.readouterr().out


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(("target", "task"), [("species", CLASSIFICATION), ("body_mass_g", REGRESSION)])
def test_every_model_trains_on_text_and_missing_values_and_predicts_a_row_missing_anything(
    family: str, target: str, task: str
) -> None:
    data = penguins(target)
    estimator, card = train.train(data, family, 0)
    assert card["task"] == task
    assert card["estimator"]["name"] == train.ESTIMATOR_NAMES[family, task]
    features = features_from_card(card)
    assert all(feature.nullable for feature in features)
    complete = next(row for row in data.X.tolist() if not any(missing(value) for value in row))
    predictions = estimator.predict(missing_in_each(features, complete))
    assert len(predictions) == len(features) + 1
    if task == REGRESSION:
        assert np.isfinite(predictions).all()
    else:
        assert set(predictions) <= set(card["classes"])


def test_an_unseen_category_is_refused_by_the_card_for_every_model() -> None:
    for family in FAMILIES:
        _, card = train.train(penguins("species"), family, 0)
        categories = [feature for feature in features_from_card(card) if feature.kind == CATEGORY]
        assert [(feature.name, feature.accepts_unknown) for feature in categories] == [
            ("island", False),
            ("sex", False),
        ]


@pytest.mark.parametrize(
    ("target", "metric_names"),
    [("species", {"accuracy", "f1_macro", "test_rows"}), ("body_mass_g", {"r2", "mae", "rmse", "test_rows"})],
)
def test_held_out_metrics_suit_the_task(target: str, metric_names: set[str]) -> None:
    _, card = train.train(penguins(target), "linear", 0)
    metrics = card["metrics"]
    assert set(metrics) == metric_names
    assert metrics["test_rows"] == math.ceil(card["training_data"]["rows"] * train.TEST_FRACTION)
    if "r2" in metrics:
        assert 0.5 < metrics["r2"] <= 1
        assert 0 < metrics["mae"] <= metrics["rmse"]  # the mean of errors is at most their root mean square
        assert metrics["rmse"] < 1000  # grams, against body masses of 2700 to 6300 g
    else:
        assert 0.9 < metrics["accuracy"] <= 1


@pytest.mark.parametrize(
    ("name", "task", "rows", "features", "classes"),
    [
        ("iris", CLASSIFICATION, 150, 4, ["setosa", "versicolor", "virginica"]),
        ("wine", CLASSIFICATION, 178, 13, ["class_0", "class_1", "class_2"]),
        ("breast_cancer", CLASSIFICATION, 569, 30, ["benign", "malignant"]),
        ("diabetes", REGRESSION, 442, 10, None),
    ],
)
def test_bundled_data_sets_train_by_name(
    tmp_path: Path, *, name: str, task: str, rows: int, features: int, classes: list[str] | None
) -> None:
    assert train.main(["--data", name, "--output", str(tmp_path)]) == 0
    card = read_card(tmp_path)
    assert card["task"] == task
    assert card["training_data"]["source"] == name
    assert card["training_data"]["rows"] == rows
    assert len(card["features"]) == features
    assert all(entry["kind"] == "number" and not entry["nullable"] for entry in card["features"])
    assert card.get("classes") == classes


@pytest.mark.parametrize(
    ("family", "classifier", "regressor"),
    [
        ("linear", [StandardScaler, LogisticRegression], [StandardScaler, Ridge]),
        ("random_forest", [RandomForestClassifier], [RandomForestRegressor]),
        ("hist_gradient_boosting", [HistGradientBoostingClassifier], [HistGradientBoostingRegressor]),
    ],
)
def test_complete_numeric_data_keeps_the_plain_estimators(
    family: str, classifier: list[type], regressor: list[type]
) -> None:
    """skserve.scoring's shortcuts match on these exact types."""
    for data, expected in (
        (train.load_bundled("iris"), classifier),
        (train.load_bundled("diabetes"), regressor),
    ):
        estimator = train.build_estimator(family, train.choose_task(data.y, None)[0], data.features, 0)
        steps = (
            [type(step) for _, step in estimator.steps] if type(estimator) is Pipeline else [type(estimator)]
        )
        assert steps == expected


def test_a_mixed_format_2_card_round_trips_through_the_loaded_model(mixed_classifier_dir: Path) -> None:
    loaded = LoadedModel.load(mixed_classifier_dir)
    card = read_card(mixed_classifier_dir)
    assert card["format_version"] == 2
    assert loaded.task == CLASSIFICATION
    assert loaded.features == train.with_nullability(penguins("species"))
    assert loaded.feature_names == [
        "island",
        "bill_length_mm",
        "bill_depth_mm",
        "flipper_length_mm",
        "body_mass_g",
        "sex",
        "year",
    ]
    assert loaded.features[0].categories == ("Biscoe", "Dream", "Torgersen")
    assert loaded.features[5].categories == ("female", "male")


@pytest.mark.parametrize("fixture", ["regressor_dir", "mixed_regressor_dir"])
def test_a_regressors_card_has_a_task_and_no_classes(fixture: str, request: pytest.FixtureRequest) -> None:
    card = read_card(request.getfixturevalue(fixture))
    assert card["task"] == REGRESSION
    assert "classes" not in card
    assert card["input"] == "array"
    assert len(features_from_card(card)) == len(card["features"])


def test_a_format_1_card_still_loads(tmp_path: Path) -> None:
    save_model(tmp_path)
    card = read_card(tmp_path)
    card |= {"format_version": 1, "features": [feature["name"] for feature in card["features"]]}
    del card["input"]
    (tmp_path / CARD_FILE).write_text(json.dumps(card))
    loaded = LoadedModel.load(tmp_path)
    assert loaded.features == tuple(Feature(name) for name in card["features"])
    assert loaded.task == CLASSIFICATION


@pytest.mark.parametrize(("target", "task"), [("species", "classification"), ("body_mass_g", "regression")])
def test_the_penguins_csv_trains_from_the_command_line_as_it_stands(
    tmp_path: Path, target: str, task: str
) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "train.py"),
            "--data",
            str(PENGUINS_CSV),
            "--target",
            target,
            "--output",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert f" for {task} (inferred: " in result.stdout
    assert read_card(tmp_path)["task"] == task


def test_target_with_bundled_data_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        train.main(["--data", "wine", "--target", "y"])
    assert exit_info.value.code == 2
    assert "--target is for a CSV; the bundled wine data has its own target" in capsys.readouterr().err
