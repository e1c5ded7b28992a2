"""Safe loading: the models training and scikit-learn users make load; what could run code is refused."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
import scipy.sparse
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer, TransformedTargetRegressor
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestRegressor,
)
from sklearn.feature_selection import SelectKBest, f_classif
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, OrdinalEncoder, StandardScaler
from sklearn.random_projection import SparseRandomProjection

import train
from skserve import create_app
from skserve.artifact import CARD_FILE, MODEL_FILE, read_card, sha256_of
from skserve.model import ArtifactError, LoadedModel
from skserve.unpickle import ALLOWED, DENIED, TRUSTED_PACKAGES, UnsafePickle, _denied, load, trusted_global
from tests.conftest import PENGUINS_CSV, save_model
from tests.live_server import failed_start

RNG = np.random.default_rng(0)
X = RNG.normal(size=(60, 4))
Y_CLASS = np.where(X[:, 0] > 0, "yes", "no")
Y_VALUE = np.abs(X[:, 1]) + 1


def frame(rows: int = 80) -> pd.DataFrame:
    """Mixed columns with pandas' own dtypes (category, nullable Int64, boolean, string) and gaps."""
    rng = np.random.default_rng(1)
    data = pd.DataFrame(
        {
            "size": rng.normal(size=rows),
            "count": pd.array(rng.integers(0, 5, rows), dtype="Int64"),
            "colour": pd.Categorical(rng.choice(["red", "green", "blue"], rows)),
            "shape": rng.choice(["round", "square", None], rows),
            "flag": pd.array(rng.choice([True, False], rows), dtype="boolean"),
            "label": pd.array(rng.choice(["p", "q"], rows), dtype="string"),
        }
    )
    data.loc[3, "count"] = pd.NA
    return data


def tabular(encoder: Any, final: Any) -> Any:
    columns = ColumnTransformer(
        [
            ("numbers", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), ["size", "count"]),
            (
                "text",
                make_pipeline(SimpleImputer(strategy="most_frequent"), encoder),
                ["colour", "shape", "label"],
            ),
        ]
    )
    return make_pipeline(columns, final)


def fitted(kind: str) -> tuple[Any, Any]:
    """An estimator of `kind`, fitted, and rows to predict with."""
    data = frame()
    target = np.where(data["size"] > 0, "big", "small")
    if kind == "onehot_logistic":
        return tabular(OneHotEncoder(handle_unknown="ignore"), LogisticRegression()).fit(data, target), data
    if kind == "ordinal_hist_gradient_boosting":
        encoder = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1)
        return tabular(encoder, HistGradientBoostingClassifier(max_iter=5)).fit(data, target), data
    if kind == "native_categories_regressor":
        columns = data[["size", "colour"]]
        model = HistGradientBoostingRegressor(max_iter=5, categorical_features="from_dtype")
        return model.fit(columns, data["size"] * 2), columns
    if kind == "log_target_ridge":
        return TransformedTargetRegressor(Ridge(), func=np.log1p, inverse_func=np.expm1).fit(X, Y_VALUE), X
    if kind == "ufunc_and_score_function":
        random_state = np.random.RandomState(0)
        steps = (
            FunctionTransformer(np.abs),
            SelectKBest(f_classif, k=2),
            LogisticRegression(random_state=random_state),
        )
        return make_pipeline(*steps).fit(X, Y_CLASS), X
    if kind == "random_forest_regressor":
        return RandomForestRegressor(n_estimators=3, random_state=0).fit(X, Y_VALUE), X
    raise AssertionError(kind)


def answers(estimator: Any, rows: Any) -> Any:
    return estimator.predict_proba(rows) if hasattr(estimator, "predict_proba") else estimator.predict(rows)


# Each data set training offers a kind of: numbers to classes, numbers to a number, and text
# and missing values to classes and to a number (ColumnTransformer pipelines).
DATA = {
    "iris": train.load_bundled,
    "diabetes": lambda: train.load_bundled("diabetes"),
    "penguins-species": lambda: train.load_csv(PENGUINS_CSV, "species"),
    "penguins-mass": lambda: train.load_csv(PENGUINS_CSV, "body_mass_g"),
}


@pytest.mark.parametrize("data", DATA)
@pytest.mark.parametrize("model", train.MODELS)
def test_loads_every_model_training_makes(model: str, data: str, tmp_path: Path) -> None:
    dataset = DATA[data]()
    estimator, _ = train.train(dataset, model, 0)
    joblib.dump(estimator, tmp_path / MODEL_FILE, compress=3 if data == "iris" else 0)  # both formats
    loaded = load(tmp_path / MODEL_FILE)
    assert type(loaded) is type(estimator)
    assert np.array_equal(answers(loaded, dataset.X), answers(estimator, dataset.X))


@pytest.mark.parametrize(
    "kind",
    [
        "onehot_logistic",
        "ordinal_hist_gradient_boosting",
        "native_categories_regressor",
        "log_target_ridge",
        "ufunc_and_score_function",
        "random_forest_regressor",
    ],
)
def test_loads_dataframe_pipelines_and_regressors(kind: str, tmp_path: Path) -> None:
    estimator, rows = fitted(kind)
    joblib.dump(estimator, tmp_path / MODEL_FILE)
    assert np.array_equal(answers(load(tmp_path / MODEL_FILE), rows), answers(estimator, rows))


def test_loads_pandas_and_scipy_values_as_fitted_attributes_hold_them(tmp_path: Path) -> None:
    data = frame()
    values = {
        "frame": data,
        "categories": data["colour"],
        "missing": [pd.NA, pd.NaT, np.nan],
        "times": [pd.Timestamp("2026-01-01"), pd.Timedelta(3), pd.date_range("2026", periods=2)],
        "index": pd.RangeIndex(3),
        "sparse": [scipy.sparse.csr_matrix(np.eye(3)), scipy.sparse.coo_array(np.eye(2))],
        "objects": np.array([1, "a", None], dtype=object),
        "generator": np.random.default_rng(3),
        "sparse_projection": SparseRandomProjection(n_components=2, random_state=0).fit(X).components_,
    }
    joblib.dump(values, tmp_path / MODEL_FILE)
    loaded = load(tmp_path / MODEL_FILE)
    pd.testing.assert_frame_equal(loaded["frame"], data)
    assert loaded["frame"]["count"].dtype == "Int64"
    assert loaded["frame"]["colour"].dtype == "category"
    assert loaded["missing"][0] is pd.NA
    assert loaded["times"][0] == values["times"][0]
    assert (loaded["sparse"][0] != values["sparse"][0]).nnz == 0
    assert (loaded["sparse_projection"] != values["sparse_projection"]).nnz == 0
    assert loaded["objects"].tolist() == [1, "a", None]
    assert loaded["generator"].random() == np.random.default_rng(3).random()


def test_every_allowed_name_exists_here() -> None:
    for dotted in ALLOWED:
        module, _, name = dotted.rpartition(".")
        assert trusted_global(module, name) is not None


def calling(module: str, name: str, *args: str) -> bytes:
    """A pickle whose loading calls module.name(*args) (protocol 0, so any name can be written)."""
    arguments = "".join(f"V{arg}\n" for arg in args)
    return f"c{module}\n{name}\n({arguments}tR.".encode()


REFUSED = [
    ("posix", "system"),  # os.system, as pickle names it
    ("builtins", "open"),
    ("io", "open"),
    ("builtins", "eval"),
    ("builtins", "exec"),
    ("builtins", "getattr"),
    ("builtins", "__import__"),
    ("subprocess", "Popen"),
    ("numpy", "load"),  # unpickles another file
    ("numpy", "fromfile"),
    ("numpy", "memmap"),  # a class that creates and writes files
    ("numpy", "frompyfunc"),
    ("numpy.testing._private.utils", "runstring"),  # an exec
    ("numpy.lib.npyio", "NpzFile"),
    ("pandas", "read_pickle"),  # unpickles another file
    ("pandas", "eval"),
    ("pandas", "ExcelWriter"),  # a class from pandas.io that writes files
    ("pandas.core.computation.expr", "Expr"),
    ("joblib", "load"),  # unpickles another file
    ("joblib", "Memory"),
    ("joblib", "Parallel"),
    ("joblib.numpy_pickle_compat", "NDArrayWrapper"),  # reads a separate file by name
    ("scipy.io", "loadmat"),
    ("scipy", "LowLevelCallable"),  # wraps a raw C function pointer
    ("scipy._lib._uarray._backend", "unpickle_function"),  # imports any module by name
    ("sklearn.base", "clone"),  # a function, not a class
    ("sklearn.base", "np"),  # a module reached through an attribute
    ("sklearn.utils.parallel", "Parallel"),
    ("sklearn.datasets", "fetch_openml"),
    ("sklearn.base", "BaseEstimator.__init_subclass__"),  # a dotted walk
    ("sklearnx", "Estimator"),  # a package that only starts like a trusted one
]


@pytest.mark.parametrize(("module", "name"), REFUSED)
def test_refuses_what_could_run_code_naming_it(module: str, name: str, tmp_path: Path) -> None:
    (tmp_path / MODEL_FILE).write_bytes(calling(module, name, "x"))
    with pytest.raises(
        UnsafePickle, match=rf"^refused to load {module}\.{name}\b.*SKSERVE_ALLOW_UNSAFE_PICKLE"
    ):
        load(tmp_path / MODEL_FILE)


class Call:
    """Pickles as the call `function(*args)`, which unpickling then makes."""

    def __init__(self, function: Any, *args: Any) -> None:
        self.function, self.args = function, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.function, self.args


def write_crafted_artifact(directory: Path, written: Path, touched: Path) -> Path:
    """A valid artifact pair whose model.joblib, loaded, writes `written` and runs `touch touched`.

    The call hides in an object array, which joblib stores as a pickle nested in its own format.
    """
    save_model(directory)
    payload = np.array([Call(open, str(written), "w"), Call(os.system, f"touch {touched}")], dtype=object)
    joblib.dump({"coef": payload}, directory / MODEL_FILE)
    card = {**read_card(directory), "sha256": sha256_of(directory / MODEL_FILE)}
    (directory / CARD_FILE).write_text(json.dumps(card))
    return directory


@pytest.fixture
def crafted(tmp_path: Path) -> tuple[Path, Path, Path]:
    """The crafted artifact's directory, and the two files its loading would make."""
    written, touched = tmp_path / "written-by-open", tmp_path / "touched-by-system"
    return write_crafted_artifact(tmp_path / "model", written, touched), written, touched


def test_the_crafted_artifact_does_write_and_run_when_loaded_by_plain_joblib(
    crafted: tuple[Path, Path, Path],
) -> None:
    directory, written, touched = crafted
    subprocess.run(
        [sys.executable, "-c", "import joblib, sys; joblib.load(sys.argv[1])", directory / MODEL_FILE],
        check=True,
    )
    assert written.exists()
    assert touched.exists()


def test_the_app_refuses_the_crafted_artifact_before_it_runs(crafted: tuple[Path, Path, Path]) -> None:
    directory, written, touched = crafted
    with pytest.raises(
        ArtifactError, match=rf"cannot load .*UnsafePickle: refused to load {open.__module__}\.open\b"
    ):
        create_app({"TESTING": True, "MODEL_DIR": str(directory)})
    assert not written.exists()
    assert not touched.exists()


@pytest.mark.e2e
def test_gunicorn_refuses_the_crafted_artifact_with_one_line_and_exit_1(
    crafted: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    directory, written, touched = crafted
    status, log = failed_start(directory, tmp_path / "server.log")
    assert status == 1
    assert f"refused to load {open.__module__}.open" in log
    assert "Traceback" not in log
    assert "Listening at" not in log
    assert not written.exists()
    assert not touched.exists()


class Doubler(BaseEstimator, TransformerMixin):  # type: ignore[misc]
    """A custom transformer: its module (this test file) is importable, but not trusted."""

    def fit(self, X: Any, y: Any = None) -> Doubler:
        return self

    def transform(self, X: Any) -> Any:
        return np.asarray(X) * 2


@pytest.fixture
def custom_dir(tmp_path: Path) -> Path:
    """An artifact pair whose pipeline holds the custom Doubler."""
    save_model(tmp_path)
    joblib.dump(make_pipeline(Doubler(), LogisticRegression()).fit(X, Y_CLASS), tmp_path / MODEL_FILE)
    card = {**read_card(tmp_path), "sha256": sha256_of(tmp_path / MODEL_FILE), "classes": ["no", "yes"]}
    (tmp_path / CARD_FILE).write_text(json.dumps(card))
    return tmp_path


def test_custom_code_is_refused_by_default(custom_dir: Path) -> None:
    with pytest.raises(ArtifactError, match=rf"refused to load {Doubler.__module__}\.Doubler\b"):
        LoadedModel.load(custom_dir)


def test_allowing_unsafe_loading_serves_custom_code_with_a_warning(
    custom_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("MODEL_DIR", str(custom_dir))
    monkeypatch.setenv("SKSERVE_ALLOW_UNSAFE_PICKLE", "true")
    with caplog.at_level(logging.WARNING, logger="skserve.unpickle"):
        app = create_app()
    assert "SKSERVE_ALLOW_UNSAFE_PICKLE=true" in caplog.text
    response = app.test_client().post("/predict", json={"instances": X[:2].tolist()})
    assert response.status_code == 200
    expected = joblib.load(custom_dir / MODEL_FILE).predict(X[:2])
    assert response.get_json()["predictions"] == expected.tolist()


def test_no_class_defined_in_a_denied_module_passes_under_another_name() -> None:
    """pandas gives public classes a shorter __module__: DENIED must list those built by a denied module."""
    import pandas.io.api  # noqa: F401, PLC0415 (the modules whose classes this looks at)
    import sklearn.datasets  # noqa: F401, PLC0415

    leaks = set()
    for module_name, module in list(sys.modules.items()):
        if module_name.split(".")[0] not in TRUSTED_PACKAGES or not _denied(module_name):
            continue
        for value in list(vars(module).values()):
            claimed = getattr(value, "__module__", None)
            if isinstance(value, type) and isinstance(claimed, str) and not _denied(claimed):
                home = Path(sys.modules[claimed.split(".")[0]].__file__ or "").parent
                constructors = [vars(value).get("__init__"), vars(value).get("__new__")]
                files = [Path(f.__code__.co_filename) for f in constructors if hasattr(f, "__code__")]
                defined_in = {
                    ".".join(f.relative_to(home.parent).with_suffix("").parts)
                    for f in files
                    if f.is_relative_to(home)
                }
                dotted = f"{claimed}.{value.__qualname__}"
                if any(_denied(module) for module in defined_in) and dotted not in DENIED:
                    leaks.add(dotted)
    assert leaks == set()
