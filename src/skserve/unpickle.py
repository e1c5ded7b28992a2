"""Loading a joblib artifact without running code it names: a restricted unpickler (on by default)."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from joblib.numpy_pickle import NumpyUnpickler
from joblib.numpy_pickle_utils import _validate_fileobject_and_memmap

log = logging.getLogger(__name__)

# The packages whose classes an artifact may name. joblib contributes only its array wrapper
# (ALLOWED): its other classes run functions, spawn processes or cache to disk.
TRUSTED_PACKAGES = frozenset({"sklearn", "numpy", "scipy", "pandas"})

# Modules of those packages that read or write files, download, run code strings, run functions in
# other processes or unpickle: nothing in them is loaded, whatever it is (numpy.testing's runstring
# is an exec, pandas.io writes Excel files, scipy._lib wraps raw C function pointers).
DENIED_MODULE_PARTS = frozenset(
    {
        "_config",
        "_datasource",
        "_lib",
        "_npyio_impl",
        "_testing",
        "computation",
        "conftest",
        "ctypeslib",
        "datasets",
        "distutils",
        "externals",
        "f2py",
        "io",
        "npyio",
        "parallel",
        "plotting",
        "testing",
        "tests",
    }
)

# Classes whose constructors open or write files, under the names they give themselves: pandas names
# its file readers and writers as if pandas (or pandas.api.typing) defined them, not pandas.io.
DENIED = frozenset(
    {
        "numpy.memmap",
        "pandas.ExcelFile",
        "pandas.ExcelWriter",
        "pandas.HDFStore",
        "pandas.api.typing.JsonReader",
        "pandas.api.typing.SASReader",
        "pandas.api.typing.StataReader",
    }
)

# What an artifact may name besides those classes and numpy's ufuncs (np.log1p in a
# FunctionTransformer, say): how pickle, numpy, pandas and joblib rebuild their objects, singletons
# that pickle by name, and the functions scikit-learn's own estimators keep as parameters.
ALLOWED = frozenset(
    {
        # builtin types without an opcode of their own, and standard containers
        "builtins.complex",
        "builtins.frozenset",
        "builtins.set",
        "builtins.slice",
        "collections.OrderedDict",
        "collections.defaultdict",
        "functools.partial",  # of what else the artifact names, also checked
        # joblib's placeholder for an array stored after it in the file
        "joblib.numpy_pickle.NumpyArrayWrapper",
        # numpy's and pandas' reconstructors, and pandas.NA
        "numpy._core.multiarray._reconstruct",
        "numpy._core.multiarray.scalar",
        "numpy._core.numeric._frombuffer",
        "numpy.random._pickle.__bit_generator_ctor",
        "numpy.random._pickle.__generator_ctor",
        "numpy.random._pickle.__randomstate_ctor",
        "pandas._libs.internals._unpickle_block",
        "pandas._libs.tslibs.nattype._nat_unpickle",
        "pandas._libs.tslibs.timedeltas._timedelta_unpickle",
        "pandas._libs.tslibs.timestamps._unpickle_timestamp",
        "pandas.core.indexes.base._new_Index",
        "pandas.core.indexes.datetimes._new_DatetimeIndex",
        "pandas.core.indexes.interval._new_IntervalIndex",
        "pandas.core.indexes.period._new_PeriodIndex",
        "pandas.core.indexes.timedeltas._new_TimedeltaIndex",
        "pandas.NA",
        # functions scikit-learn keeps in fitted estimators: HistGradientBoosting's categorical
        # preprocessing, and SelectKBest's and SelectPercentile's score functions
        "sklearn.utils.validation.check_array",
        "sklearn.feature_selection._mutual_info.mutual_info_classif",
        "sklearn.feature_selection._mutual_info.mutual_info_regression",
        "sklearn.feature_selection._univariate_selection.chi2",
        "sklearn.feature_selection._univariate_selection.f_classif",
        "sklearn.feature_selection._univariate_selection.f_regression",
        "sklearn.feature_selection._univariate_selection.r_regression",
    }
)

# Cython names the function that rebuilds an extension type `__pyx_unpickle_<Type>`: it creates an
# instance of that one type and sets its state.
CYTHON_RECONSTRUCTOR = "__pyx_unpickle_"

UNSAFE_SETTING = "SKSERVE_ALLOW_UNSAFE_PICKLE"


class UnsafePickle(pickle.UnpicklingError):
    """The artifact names something the restricted unpickler does not load; the message says what."""


def load(path: Path, *, allow_unsafe: bool = False) -> Any:
    """The object in the joblib file `path`, refusing (UnsafePickle) anything outside the allowlist.

    Nothing the file names runs before it is checked. `allow_unsafe` loads with plain joblib, which
    runs whatever the file holds, for pipelines with custom code (whose module must be importable).
    """
    if allow_unsafe:
        log.warning(
            "%s=true: %s is unpickled without restriction, so loading it runs any code it holds",
            UNSAFE_SETTING,
            path,
        )
        return joblib.load(path)
    with path.open("rb") as file, _validate_fileobject_and_memmap(file, str(path), None) as (stream, _):
        if isinstance(stream, str):  # the format of joblib < 0.10, whose arrays are separate files
            raise UnsafePickle(f"{path} was written by joblib < 0.10; re-save it with a current joblib")
        return _RestrictedUnpickler(str(path), stream, ensure_native_byte_order=True).load()


class _RestrictedUnpickler(NumpyUnpickler):  # type: ignore[misc]  # joblib is untyped
    """joblib's unpickler (it also reads the elements of object arrays through this find_class)."""

    def find_class(self, module: str, name: str) -> Any:
        return trusted_global(module, name)


def trusted_global(module: str, name: str) -> Any:
    """The object `module.name` if an artifact may name it; UnsafePickle naming it if not."""
    dotted = f"{module}.{name}"
    if dotted in ALLOWED:
        return _resolve(module, name)
    if _denied(module) or dotted in DENIED or "." in name:  # a dotted name could walk to anything
        raise _refusal(dotted)
    found = _resolve(module, name)
    # What was found must live in a trusted module too (`sklearn.base.np` is numpy, a module).
    real_module = getattr(found, "__module__", None)
    real = f"{real_module}.{getattr(found, '__qualname__', name)}"
    if not isinstance(real_module, str) or _denied(real_module) or real in DENIED:
        raise _refusal(dotted, real)
    if isinstance(found, type | np.ufunc):
        return found
    if callable(found) and name.startswith(CYTHON_RECONSTRUCTOR):
        return found
    raise _refusal(dotted)


def _denied(module: str) -> bool:
    parts = module.split(".")
    return parts[0] not in TRUSTED_PACKAGES or not DENIED_MODULE_PARTS.isdisjoint(parts)


def _resolve(module: str, name: str) -> Any:
    try:
        return getattr(__import__(module, fromlist=[name]), name)
    except (ImportError, AttributeError):
        raise UnsafePickle(f"the artifact names {module}.{name}, which does not exist here") from None


def _refusal(dotted: str, real: str | None = None) -> UnsafePickle:
    where = f" (that is {real})" if real and real != dotted else ""
    return UnsafePickle(
        f"refused to load {dotted}{where}: a model artifact may name only classes of scikit-learn, "
        "numpy, scipy and pandas, numpy's ufuncs and the reconstructors skserve.unpickle lists; "
        f"if you trust this file and its code, set {UNSAFE_SETTING}=true"
    )
