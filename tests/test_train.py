"""train.py: the bundled-data default, user CSVs, clear refusals, and an existing model kept safe."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import joblib
import pytest

import train
from skserve.artifact import CARD_FILE, MODEL_FILE, read_card, sha256_of

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
        "sepal length (cm)",
        "sepal width (cm)",
        "petal length (cm)",
        "petal width (cm)",
    ]
    assert card["classes"] == ["setosa", "versicolor", "virginica"]
    assert card["task"] == "classification"
    assert card["format_version"] == 1
    assert card["sha256"] == sha256_of(tmp_path / MODEL_FILE)
    assert card["training_data"]["rows"] == 150
    assert card["training_data"]["columns"] == 5
    assert len(card["training_data"]["sha256"]) == 64
    assert card["estimator"]["name"] == "logistic_regression"
    assert card["estimator"]["params"]["classify__max_iter"] == 1000
    assert set(card["versions"]) == {"python", "scikit-learn", "numpy", "joblib"}
    assert 0.8 < card["metrics"]["accuracy"] <= 1
    assert 0.8 < card["metrics"]["f1_macro"] <= 1
    assert "created_at" in card
    assert f"version {card['version']}" in capsys.readouterr().out


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


@pytest.mark.parametrize("model", train.MODELS)
def test_every_offered_estimator_trains(model: str, tmp_path: Path) -> None:
    assert train.main(["--output", str(tmp_path), "--model", model, "--name", "custom"]) == 0
    card = read_card(tmp_path)
    assert card["estimator"]["name"] == model
    assert card["name"] == "custom"


def test_trains_on_a_user_csv_with_text_labels(tmp_path: Path) -> None:
    data = labelled_csv(tmp_path)
    assert train.main(["--data", str(data), "--target", "kind", "--output", str(tmp_path / "m")]) == 0
    card = read_card(tmp_path / "m")
    assert card["features"] == ["size", "weight"]
    assert card["classes"] == ["big", "small"]
    assert card["name"] == "things-logistic-regression"
    assert card["training_data"] == {"source": "things", "rows": 20, "columns": 3, "sha256": sha256_of(data)}


def test_integer_labels_stay_integers(tmp_path: Path) -> None:
    lines = ["x,label"] + [f"{i},{int(i >= 5)}" for i in range(10)]
    data = write_csv(tmp_path / "d.csv", "\n".join(lines))
    train.main(["--data", str(data), "--target", "label", "--output", str(tmp_path / "m")])
    assert read_card(tmp_path / "m")["classes"] == [0, 1]


@pytest.mark.parametrize(
    ("csv_text", "target", "message"),
    [
        (None, "kind", "cannot read .*missing.csv: No such file"),
        ("", "kind", "is empty"),
        ("a,b,kind\n", "kind", "has a header but no data rows"),
        ("a,b\n1,2\n3,4\n", "kind", r"has no column 'kind'; its columns are \['a', 'b'\]"),
        ("kind\nx\ny\n", "kind", "no feature columns"),
        ("a,b,kind\n1,2,x\n3,4\n", "kind", "line 3: 2 fields, the header has 3"),
        (
            "a,b,c,kind\n1,x,2,p\n3,4,y,q\n1,2,3,p\n1,2,3,q\n",
            "kind",
            r"non-numeric or missing values in \['b', 'c'\]",
        ),
        ("a,kind\n1,p\n,q\n1,p\n1,q\n", "kind", r"missing values in \['a'\]"),
        ("a,kind\n1,p\nnan,q\n1,p\n1,q\n", "kind", r"non-numeric or missing values in \['a'\]"),
        ("a,kind\n1,p\n2,p\n3,p\n", "kind", r"only one class \(\['p'\]\)"),
        ("a,kind\n1,p\n2,p\n3,q\n", "kind", r"classes \['q'\] have a single row"),
        ("a,kind\n1,p\n2,p\n3,q\n4,q\n", "kind", "cannot split 4 rows"),
    ],
)
def test_bad_training_input_is_refused_with_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], csv_text: str | None, target: str, message: str
) -> None:
    data = tmp_path / "missing.csv" if csv_text is None else write_csv(tmp_path / "data.csv", csv_text)
    assert train.main(["--data", str(data), "--target", target, "--output", str(tmp_path / "m")]) == 2
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
