"""Loading, verifying and calling the saved model."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import joblib
import numpy as np
import pytest

import train
from skserve.artifact import CARD_FILE, MODEL_FILE, read_card, sha256_of
from skserve.errors import InvalidInput
from skserve.model import ArtifactError, LoadedModel
from skserve.schema import rows_of_values
from tests.conftest import PENGUINS_CSV, save_model
from tests.typed_models import save_frame_model


@pytest.fixture
def copy_of_model(model_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(model_dir, tmp_path / "model"))


def rewrite_card(directory: Path, **changes: object) -> None:
    card = read_card(directory)
    card.update(changes)
    (directory / CARD_FILE).write_text(json.dumps(card))


@pytest.mark.parametrize("estimator", train.MODELS)
def test_predictions_equal_the_saved_estimator_called_in_process(estimator: str, tmp_path: Path) -> None:
    loaded = LoadedModel.load(save_model(tmp_path, estimator))
    saved = joblib.load(tmp_path / MODEL_FILE)
    rows = np.random.default_rng(0).uniform(0, 8, size=(500, 4))
    prediction = loaded.predict(rows)
    assert prediction.labels == saved.predict(rows).tolist()
    expected = saved.predict_proba(rows)
    assert prediction.probabilities.tobytes() == expected.tobytes()
    assert loaded.class_names == ("setosa", "versicolor", "virginica")  # the columns' classes


def test_exposes_the_card_as_source_of_truth(model_dir: Path) -> None:
    loaded = LoadedModel.load(model_dir)
    card = read_card(model_dir)
    assert loaded.version == card["version"]
    assert loaded.feature_names == [feature["name"] for feature in card["features"]]
    assert loaded.classes == ["setosa", "versicolor", "virginica"]


def test_a_renamed_model_keeps_the_scorer_verified_at_load(
    model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """SKSERVE_MODEL_NAME renames the loaded model: its scorer is not probed and logged a second time."""
    with caplog.at_level(logging.INFO, logger="skserve.scoring"):
        loaded = LoadedModel.load(model_dir)
        renamed = loaded.renamed("another-name")
    assert renamed.score is loaded.score
    assert caplog.text.count("by a shortcut that matched predict_proba") == 1


def test_missing_model_directory_says_to_train(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match=r"no model card at .*run `make train` first"):
        LoadedModel.load(tmp_path / "absent")


def test_missing_model_file_is_refused(copy_of_model: Path) -> None:
    (copy_of_model / MODEL_FILE).unlink()
    with pytest.raises(ArtifactError, match=f"cannot read .*{MODEL_FILE}"):
        LoadedModel.load(copy_of_model)


def test_corrupt_model_file_fails_the_sha256_check(copy_of_model: Path) -> None:
    with (copy_of_model / MODEL_FILE).open("ab") as stream:
        stream.write(b"tampered")
    with pytest.raises(ArtifactError, match="does not match its card: sha256 is"):
        LoadedModel.load(copy_of_model)


def test_unloadable_model_file_is_refused_even_with_matching_sha256(copy_of_model: Path) -> None:
    (copy_of_model / MODEL_FILE).write_bytes(b"not a pickle")
    rewrite_card(copy_of_model, sha256=sha256_of(copy_of_model / MODEL_FILE))
    with pytest.raises(ArtifactError, match=r"cannot load .*model.joblib: KeyError"):
        LoadedModel.load(copy_of_model)


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", ""])
def test_unreadable_card_is_refused(copy_of_model: Path, content: str) -> None:
    (copy_of_model / CARD_FILE).write_text(content)
    with pytest.raises(ArtifactError, match="unreadable model card"):
        LoadedModel.load(copy_of_model)


def test_card_without_required_keys_is_refused(copy_of_model: Path) -> None:
    card = read_card(copy_of_model)
    del card["features"], card["sha256"]
    (copy_of_model / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(ArtifactError, match=r"lacks required keys \['features', 'sha256'\]"):
        LoadedModel.load(copy_of_model)


def test_other_scikit_learn_version_is_refused_by_default(copy_of_model: Path) -> None:
    card = read_card(copy_of_model)
    rewrite_card(copy_of_model, versions={**card["versions"], "scikit-learn": "0.0.1"})
    with pytest.raises(ArtifactError, match=r"trained with scikit-learn 0.0.1 but .* SKSERVE_ALLOW_VERSION"):
        LoadedModel.load(copy_of_model)


def test_other_scikit_learn_version_can_be_allowed_with_a_warning(
    copy_of_model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    card = read_card(copy_of_model)
    rewrite_card(copy_of_model, versions={**card["versions"], "scikit-learn": "0.0.1"})
    with caplog.at_level(logging.WARNING):
        loaded = LoadedModel.load(copy_of_model, allow_version_mismatch=True)
    assert loaded.version == card["version"]
    assert "trained with scikit-learn 0.0.1" in caplog.text


@pytest.mark.parametrize(
    ("estimator", "value"),
    [("logistic_regression", 1e308), ("logistic_regression", -1.7e308), ("random_forest", 3.5e38)],
)
def test_finite_values_that_overflow_inside_the_estimator_are_invalid_input(
    estimator: str, value: float, tmp_path: Path
) -> None:
    """The scaler divides 1e308 into infinity; a forest casts to float32, whose largest is 3.4e38."""
    model = LoadedModel.load(save_model(tmp_path, estimator))
    with pytest.raises(InvalidInput, match="values too large for the model to compute with"):
        model.predict(np.array([[5.1, 3.5, 1.4, 0.2], [value] * 4]))


def penguin_rows(target: str) -> np.ndarray:
    """The penguins' feature rows as train.py fitted on them (an object array with NaN)."""
    return train.load_csv(PENGUINS_CSV, target).X


def test_a_regressor_predicts_numbers_without_probabilities(mixed_regressor_dir: Path) -> None:
    loaded = LoadedModel.load(mixed_regressor_dir)
    rows = penguin_rows("body_mass_g")
    prediction = loaded.predict(rows)
    assert prediction.probabilities is None
    assert prediction.labels == joblib.load(mixed_regressor_dir / MODEL_FILE).predict(rows).tolist()
    assert loaded.classes is None


def test_a_typed_row_scores_the_same_bits_alone_and_among_others(mixed_classifier_dir: Path) -> None:
    loaded = LoadedModel.load(mixed_classifier_dir)
    rows = penguin_rows("species")[:40]
    alone = np.concatenate([loaded.outputs(rows[i : i + 1]) for i in range(len(rows))])
    assert alone.tobytes() == loaded.outputs(rows).tobytes()


def test_a_regressors_row_scores_alone_as_among_others_but_for_the_last_bit(
    mixed_regressor_dir: Path,
) -> None:
    """Not always to the bit: BLAS computes a linear regressor's matrix-vector product with kernels
    that depend on the number of rows, so a row may differ in its last bit (measured: 4 of these
    40 penguins, by 1 ulp). The classifiers' matrix-matrix products do not (the test above)."""
    loaded = LoadedModel.load(mixed_regressor_dir)
    rows = penguin_rows("body_mass_g")[:40]
    alone = np.concatenate([loaded.outputs(rows[i : i + 1]) for i in range(len(rows))])
    together = loaded.outputs(rows)
    assert np.all(np.abs(alone - together) <= np.spacing(np.abs(together)))


@pytest.mark.parametrize("family", train.MODELS)
def test_labels_from_one_predict_proba_call_equal_the_tabular_pipelines_predict(
    family: str, tmp_path: Path
) -> None:
    data = train.load_csv(PENGUINS_CSV, "species")
    loaded = LoadedModel.load(save_model(tmp_path, family, data=data))
    assert loaded.predict(data.X).labels == joblib.load(tmp_path / MODEL_FILE).predict(data.X).tolist()


def test_a_dataframe_fitted_pipeline_gets_its_rows_as_a_dataframe_with_the_cards_dtypes(
    tmp_path: Path,
) -> None:
    import pandas as pd  # noqa: PLC0415 (only this test needs it)

    loaded = LoadedModel.load(save_frame_model(tmp_path))
    rows = rows_of_values([[1.5, "red", 3], [None, None, 6.0], [2, "blue", 0]], loaded.features, 10)
    frame = pd.DataFrame(
        {
            "length": [1.5, np.nan, 2.0],
            "colour": pd.Series(["red", np.nan, "blue"], dtype="object"),
            "count": [3, 6, 0],
        }
    )
    pipeline = joblib.load(tmp_path / MODEL_FILE)
    prediction = loaded.predict(rows)
    assert prediction.labels == pipeline.predict(frame).tolist()
    assert prediction.probabilities is not None
    assert prediction.probabilities.tobytes() == pipeline.predict_proba(frame).tobytes()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"task": "ranking"}, "'task' must be one of ['classification', 'regression'], got 'ranking'"),
        ({"input": "arrow"}, "'input' must be one of ['array', 'dataframe'], got 'arrow'"),
        ({"task": "regression"}, None),  # iris' LogisticRegression has predict: it loads as a regressor
    ],
)
def test_refuses_a_card_whose_task_or_input_it_cannot_serve(
    copy_of_model: Path, changes: dict[str, str], message: str | None
) -> None:
    rewrite_card(copy_of_model, **changes)
    if message is None:
        assert LoadedModel.load(copy_of_model).classes is None
        return
    with pytest.raises(ArtifactError) as caught:
        LoadedModel.load(copy_of_model)
    assert message in str(caught.value)
