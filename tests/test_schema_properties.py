"""Properties of the validation core, over many generated bodies: exact round trips, and no surprises."""

from __future__ import annotations

import contextlib
import json
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skserve import schema
from skserve.errors import InvalidInput, PayloadTooLarge
from skserve.features import Feature
from skserve.schema import parse_json, rows_of_values, rows_to_matrix, tensor_rows

NAMES = ["a", "b", "c"]
FEATURES = tuple(map(Feature, NAMES))
MAX_ROWS = 20

finite = st.floats(allow_nan=False, allow_infinity=False)
# Anything JSON can hold, nested a little.
json_values = st.recursive(
    st.none() | st.booleans() | finite | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=4),
    max_leaves=12,
)
not_numbers = st.one_of(
    st.none(), st.booleans(), st.text(max_size=5), st.lists(finite, max_size=2), st.just({})
)
matrices = st.integers(min_value=1, max_value=MAX_ROWS).flatmap(
    lambda n_rows: st.lists(st.lists(finite, min_size=3, max_size=3), min_size=n_rows, max_size=n_rows)
)


@settings(max_examples=100, derandomize=True)
@given(matrix=matrices)
def test_any_matrix_of_finite_floats_round_trips_exactly(matrix: list[list[float]]) -> None:
    rows = rows_to_matrix({"instances": matrix}, FEATURES, MAX_ROWS)
    assert rows.dtype == np.float64
    assert rows.shape == (len(matrix), 3)
    assert rows.tolist() == matrix


@settings(max_examples=100, derandomize=True)
@given(matrix=matrices, data=st.data())
def test_rows_as_objects_in_any_key_order_equal_rows_as_lists(matrix: list[list[float]], data: Any) -> None:
    order = data.draw(st.permutations(NAMES))
    named = [{name: row[NAMES.index(name)] for name in order} for row in matrix]
    mixed = [data.draw(st.sampled_from([row, obj])) for row, obj in zip(matrix, named, strict=True)]
    expected = rows_to_matrix({"instances": matrix}, FEATURES, MAX_ROWS)
    assert np.array_equal(rows_to_matrix({"instances": mixed}, FEATURES, MAX_ROWS), expected)


@settings(max_examples=100, derandomize=True)
@given(matrix=matrices)
def test_a_matrix_survives_the_trip_through_json_text(matrix: list[list[float]]) -> None:
    """What a client serialises is what the model gets, bit for bit."""
    body = json.dumps({"instances": matrix}).encode()
    rows = rows_to_matrix(parse_json(body), FEATURES, MAX_ROWS)
    assert rows.tobytes() == np.array(matrix, dtype=np.float64).tobytes()


@settings(max_examples=100, derandomize=True)
@given(matrix=matrices, bad=not_numbers, data=st.data())
def test_a_non_number_anywhere_is_refused_naming_its_row_and_feature(
    matrix: list[list[Any]], bad: Any, data: Any
) -> None:
    row = data.draw(st.integers(min_value=0, max_value=len(matrix) - 1))
    column = data.draw(st.integers(min_value=0, max_value=2))
    matrix[row][column] = bad
    as_objects = data.draw(st.booleans())
    instances = [dict(zip(NAMES, values, strict=True)) for values in matrix] if as_objects else matrix
    with pytest.raises(InvalidInput) as caught:
        rows_to_matrix({"instances": instances}, FEATURES, MAX_ROWS)
    assert caught.value.status == 400
    assert f"row {row}, feature {NAMES[column]!r}: expected a number" in caught.value.message


@settings(max_examples=50, derandomize=True)
@given(matrix=matrices, magnitude=st.integers(min_value=309, max_value=400), data=st.data())
def test_integers_beyond_float64_are_refused_not_made_infinite(
    matrix: list[list[Any]], magnitude: int, data: Any
) -> None:
    matrix[data.draw(st.integers(0, len(matrix) - 1))][data.draw(st.integers(0, 2))] = -(10**magnitude)
    with pytest.raises(InvalidInput, match="too large for a 64-bit float"):
        rows_to_matrix({"instances": matrix}, FEATURES, MAX_ROWS)


@settings(max_examples=100, derandomize=True)
@given(
    payload=json_values | st.fixed_dictionaries({"instances": st.lists(json_values, max_size=MAX_ROWS + 2)})
)
def test_any_json_value_gives_a_matrix_or_an_api_error_and_nothing_else(payload: Any) -> None:
    try:
        rows = rows_to_matrix(payload, FEATURES, MAX_ROWS)
    except (InvalidInput, PayloadTooLarge):
        return
    assert rows.shape[1] == 3
    assert np.isfinite(rows).all()


@settings(max_examples=100, derandomize=True)
@given(body=st.binary(max_size=64) | json_values.map(lambda value: json.dumps(value).encode()))
def test_any_bytes_parse_or_are_refused_with_invalid_input(body: bytes) -> None:
    with contextlib.suppress(InvalidInput):
        parse_json(body)


@settings(max_examples=100, derandomize=True)
@given(data=json_values, shape=json_values)
def test_any_tensor_gives_rows_or_invalid_input(data: Any, shape: Any) -> None:
    try:
        rows = tensor_rows(data, shape, 3)
    except InvalidInput:
        return
    # The structure is checked here; the row lengths and values are left to rows_of_values.
    assert len(rows) == shape[0] >= 1
    assert all(isinstance(row, list) for row in rows)


@settings(max_examples=100, derandomize=True)
@given(matrix=matrices)
def test_a_flat_tensor_and_its_nested_form_give_the_same_rows(matrix: list[list[float]]) -> None:
    shape = [len(matrix), 3]
    flat = [value for row in matrix for value in row]
    assert tensor_rows(flat, shape, 3) == tensor_rows(matrix, shape, 3) == matrix


TYPED = (
    Feature("length", nullable=True),
    Feature("colour", "category", nullable=True, categories=("blue", "green", "red")),
    Feature("grade", "category", categories=(1, 2, 3)),
    Feature("count", dtype="int64"),
)
TYPED_NAMES = [feature.name for feature in TYPED]
# Each typed feature's valid values, and as training presented them (NaN for missing).
typed_values = (
    st.none() | finite,
    st.none() | st.sampled_from(["blue", "green", "red"]),
    st.sampled_from([1, 2, 3, 1.0, 2.0, 3.0]),
    st.integers(min_value=-(2**53), max_value=2**53),
)
typed_rows = st.tuples(*typed_values).map(list)


def as_training_presented(row: list[Any]) -> list[Any]:
    length, colour, grade, count = row
    return [
        np.nan if length is None else float(length),
        np.nan if colour is None else colour,
        int(grade),
        float(count),
    ]


@settings(max_examples=100, derandomize=True)
@given(rows=st.lists(typed_rows, min_size=1, max_size=MAX_ROWS), data=st.data())
def test_valid_typed_rows_as_lists_or_objects_become_the_training_representation(
    rows: list[list[Any]], data: Any
) -> None:
    instances = [data.draw(st.sampled_from([row, dict(zip(TYPED_NAMES, row, strict=True))])) for row in rows]
    matrix = rows_of_values(instances, TYPED, MAX_ROWS)
    assert matrix.dtype == object
    expected = [as_training_presented(row) for row in rows]
    assert [[type(value) for value in row] for row in matrix.tolist()] == [
        [type(value) for value in row] for row in expected
    ]
    assert marked(matrix.tolist()) == marked(expected)


def marked(rows: list[list[Any]]) -> list[list[Any]]:
    """The rows with each NaN (which equals nothing) replaced by a marker that equals itself."""
    return [
        ["NaN" if isinstance(value, float) and math.isnan(value) else value for value in row] for row in rows
    ]


@settings(max_examples=200, derandomize=True)
@given(rows=st.lists(typed_rows, min_size=1, max_size=MAX_ROWS), bad=json_values, data=st.data())
def test_any_single_value_is_accepted_exactly_when_it_is_valid_and_else_named(
    rows: list[list[Any]], bad: Any, data: Any
) -> None:
    """The column checks judge a value as the per-value checks do, and a refusal names its place."""
    row = data.draw(st.integers(min_value=0, max_value=len(rows) - 1))
    column = data.draw(st.integers(min_value=0, max_value=len(TYPED) - 1))
    rows[row][column] = bad
    problem = schema._value_problem(TYPED[column], bad)
    if problem is None:
        assert rows_of_values(rows, TYPED, MAX_ROWS).shape == (len(rows), len(TYPED))
        return
    with pytest.raises(InvalidInput) as caught:
        rows_of_values(rows, TYPED, MAX_ROWS)
    assert caught.value.status == 400
    assert caught.value.message == f"row {row}, feature {TYPED_NAMES[column]!r}: {problem}"


# Columns as a CSV reader types them, each with values a feature refuses as well as ones it takes.
TYPED_COLUMNS = (
    *TYPED,
    Feature("colour_or_other", "category", categories=("blue", "green", "red"), accepts_unknown=True),
    Feature("grade_or_other", "category", nullable=True, categories=(1, 2, 3), accepts_unknown=True),
)
# Mostly values every number feature takes, so that a lone bad one is often the only one.
number_column_values = st.sampled_from(
    [1.0, 2.0, 3.0, -0.0, 7.0, 2.0**60, 1e300, 1.0, 2.0, 3.0, 0.5, 1e-300, math.nan, math.inf, -math.inf]
)
text_column_values = st.sampled_from(["blue", "green", "red", "blue", "pink", "", None, math.nan, 1.5])


@st.composite
def typed_column(draw: Any, feature: Feature, n_rows: int) -> np.ndarray:
    if feature.kind == "category" and not feature.numeric_categories:
        values = draw(st.lists(text_column_values, min_size=n_rows, max_size=n_rows))
        return np.array(values, dtype=object)
    if draw(st.booleans()):
        bound = st.integers(min_value=-(2**63), max_value=2**63 - 1)
        return np.array(draw(st.lists(bound, min_size=n_rows, max_size=n_rows)), dtype=np.int64)
    numbers = draw(st.lists(number_column_values, min_size=n_rows, max_size=n_rows))
    return np.array(numbers, dtype=np.float64)


def column_values(column: np.ndarray) -> list[Any]:
    """A typed column's values as /predict's rows hold them: Python values, None for missing."""
    return [
        None if value is None or (isinstance(value, float) and math.isnan(value)) else value
        for value in column.tolist()
    ]


@settings(max_examples=500, derandomize=True)
@given(data=st.data())
def test_typed_columns_give_the_matrix_of_their_rows_exactly_when_the_rows_are_valid(data: Any) -> None:
    """The vectorised twin accepts what rows_of_values accepts, and makes the identical matrix."""
    n_rows = data.draw(st.integers(min_value=1, max_value=6))
    features = data.draw(st.lists(st.sampled_from(TYPED_COLUMNS), min_size=1, max_size=3, unique=True))
    columns = [data.draw(typed_column(feature, n_rows)) for feature in features]
    rows = [list(row) for row in zip(*map(column_values, columns), strict=True)]
    matrix = schema.typed_columns_to_matrix(columns, features)
    try:
        expected = rows_of_values(rows, features, MAX_ROWS)
    except InvalidInput:
        assert matrix is None
        return
    assert matrix is not None
    assert matrix.dtype == expected.dtype
    assert [[type(value) for value in row] for row in matrix.tolist()] == [
        [type(value) for value in row] for row in expected.tolist()
    ]
    assert marked(matrix.tolist()) == marked(expected.tolist())
