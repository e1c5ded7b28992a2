"""The pure validation core: what a /predict body must look like, and what it becomes."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from skserve import schema
from skserve.errors import InvalidInput, PayloadTooLarge
from skserve.features import Feature
from skserve.schema import parse_json, rows_of_values, rows_to_matrix, tensor_rows

FEATURES = tuple(map(Feature, "abc"))


def matrix(payload: Any, max_rows: int = 100) -> np.ndarray:
    return rows_to_matrix(payload, FEATURES, max_rows)


def test_list_rows_become_a_float_matrix() -> None:
    rows = matrix({"instances": [[1, 2.5, -3], [0, 0, 1e300]]})
    assert rows.dtype == np.float64
    assert rows.tolist() == [[1.0, 2.5, -3.0], [0.0, 0.0, 1e300]]


def test_object_rows_are_put_in_the_model_feature_order() -> None:
    rows = matrix({"instances": [{"c": 3, "a": 1, "b": 2}, [4, 5, 6]]})
    assert rows.tolist() == [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ([[1, 2, 3]], "expected a JSON object"),
        ("rows", "got a string"),
        ({}, 'missing key "instances"'),
        ({"instance": [[1, 2, 3]]}, "unexpected keys ['instance']"),
        ({"instances": [[1, 2, 3]], "extra": 1}, "unexpected keys ['extra']"),
        ({"instances": {"a": 1}}, '"instances" must be an array of rows, got an object'),
        ({"instances": None}, "got null"),
        ({"instances": []}, '"instances" is empty'),
        ({"instances": [[1, 2]]}, "row 0: expected 3 values in the order ['a', 'b', 'c'], got 2"),
        ({"instances": [[1, 2, 3], [1, 2, 3, 4]]}, "row 1: expected 3 values"),
        ({"instances": [5]}, "row 0: expected an array or an object, got a number"),
        ({"instances": [[1, [2], 3]]}, "row 0, feature 'b': expected a number, got an array"),
        ({"instances": [[1, "2", 3]]}, "row 0, feature 'b': expected a number, got a string"),
        ({"instances": [[1, 2, True]]}, "row 0, feature 'c': expected a number, got a boolean"),
        ({"instances": [[None, 2, 3]]}, "row 0, feature 'a': expected a number, got null"),
        ({"instances": [{"a": 1, "b": 2}]}, "row 0: missing features ['c']"),
        ({"instances": [{"a": 1, "b": 2, "c": 3, "d": 4}]}, "row 0: unknown features ['d']"),
        ({"instances": [{"a": 1, "b": 2, "x": 3}]}, "missing features ['c']; unknown features ['x']"),
        (
            {"instances": [{"a": 1, "b": 2, "c": 3, **{f"{i:02d}" + "x" * 100: 0 for i in range(7)}}]},
            f"unknown features {[f'{i:02d}' + 'x' * 38 for i in range(5)]} and 2 more",
        ),
        ({"instances": [[1, 2, 10**400]]}, "too large for a 64-bit float"),
        ({"instances": [[1, 2, 3], [1, 2, float("inf")]]}, "row 1, feature 'c': value is too large"),
    ],
)
def test_refuses_malformed_payloads_naming_the_problem(payload: Any, message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        matrix(payload)
    assert message in caught.value.message
    assert caught.value.status == 400


def test_refuses_more_rows_than_the_limit_with_413() -> None:
    with pytest.raises(PayloadTooLarge, match="3 rows sent; at most 2") as caught:
        matrix({"instances": [[1, 2, 3]] * 3}, max_rows=2)
    assert caught.value.status == 413


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"instances": [[NaN, 1, 2]]}', "contains NaN"),
        (b'{"instances": [[Infinity, 1, 2]]}', "contains Infinity"),
        (b'{"instances": [[-Infinity, 1, 2]]}', "contains -Infinity"),
        (b'{"instances": [[1, 2, 3]]', "not valid JSON"),
        (b"", "not valid JSON"),
        (b"\xff\xfe\xfd", "not UTF-8"),
        (b'{"x": "\xc3\x28"}', "not UTF-8"),
        (b"[" * 100_000 + b"]" * 100_000, "nests JSON too deeply"),
        (b"1" * 5000, "not valid JSON"),
    ],
)
def test_parse_json_refuses_what_is_not_strict_json(body: bytes, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_json(body)


def test_parse_json_accepts_strict_json() -> None:
    assert parse_json(b'{"instances": [[1, 2.5e3, -0.0]]}') == {"instances": [[1, 2500.0, -0.0]]}


@pytest.mark.parametrize(
    ("data", "shape"),
    [
        ([1, 2, 3, 4, 5, 6], [2, 3]),
        ([[1, 2, 3], [4, 5, 6]], [2, 3]),
    ],
)
def test_tensor_data_flat_or_nested_gives_the_same_rows(data: Any, shape: Any) -> None:
    assert tensor_rows(data, shape, 3) == [[1, 2, 3], [4, 5, 6]]


def test_tensor_rows_leave_values_to_the_row_checks() -> None:
    rows = tensor_rows([1, "x", None], [1, 3], 3)
    with pytest.raises(InvalidInput, match="row 0, feature 'b': expected a number, got a string"):
        rows_of_values(rows, FEATURES, 10)


@pytest.mark.parametrize(
    ("data", "shape", "message"),
    [
        ([1, 2, 3], None, '"shape" must be an array of non-negative integers [n, 3]'),
        ([1, 2, 3], [1, "3"], '"shape" must be an array of non-negative integers'),
        ([1, 2, 3], [1, 3.0], '"shape" must be an array of non-negative integers'),
        ([1, 2, 3], [True, 3], '"shape" must be an array of non-negative integers'),
        ([1, 2, 3], [-1, 3], '"shape" must be an array of non-negative integers'),
        ([1, 2, 3], [3], '"shape" must be [n, 3] (n rows of the model\'s 3 features), got [3]'),
        ([1, 2, 3], [1, 1, 3], "got [1, 1, 3]"),
        ([1, 2, 3, 4], [1, 4], "got [1, 4]"),
        ([], [0, 3], '"shape" [0, 3] has no rows'),
        ({"a": 1}, [1, 3], '"data" must be an array, got an object'),
        ("1,2,3", [1, 3], '"data" must be an array, got a string'),
        ([1, 2, 3, 4], [1, 3], '"data" holds 4 values; shape [1, 3] needs 3'),
        ([1, 2, 3], [2, 3], '"data" holds 3 values; shape [2, 3] needs 6'),
        ([[1, 2, 3]], [2, 3], '"data" holds 1 rows; shape [2, 3] needs 2'),
        ([[1, 2, 3], 4, 5, 6], [2, 3], '"data" holds 4 rows'),
        ([[1, 2, 3], 4], [2, 3], '"data" mixes rows and values: item 1 is a number'),
    ],
)
def test_tensor_rows_refuse_shapes_and_data_that_disagree(data: Any, shape: Any, message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        tensor_rows(data, shape, 3)
    assert message in caught.value.message


def test_parse_json_reads_numbers_to_the_same_float64_values_as_the_standard_library() -> None:
    """orjson parses first; no value may change by a bit, big integers included."""
    rng = np.random.default_rng(5)
    values = [repr(float(v)) for v in rng.standard_normal(300) * 10.0 ** rng.integers(-300, 300, 300)]
    values += [f"{float(v):.4g}" for v in rng.standard_normal(300)]
    values += ["0", "-0", "-0.0", "1E5", "123456789012345678901234567890", "-9223372036854775809", "1e-400"]
    body = ("[" + ",".join(values) + "]").encode()
    parsed = np.array(parse_json(body), dtype=np.float64)
    assert parsed.tobytes() == np.array(json.loads(body), dtype=np.float64).tobytes()
    with pytest.raises(InvalidInput, match="value is too large for a 64-bit float"):
        matrix(parse_json(b'{"instances": [[1e400, 1, 2]]}'))


@pytest.mark.parametrize(
    "instances",
    [
        [[1, 2, 3], [4.5, -0.0, 6]],
        [[1, 2, True]],
        [[1, 2, None]],
        [[1, 2, "3"]],
        [[1, 2, [3]]],
        [[1, 2]],
        [[1, 2, 3, 4]],
        [[1, 2, 3], {"a": 1, "b": 2, "c": 3}],
        [[1, 2, 3], "row"],
        [[1, 2, 10**400]],
    ],
)
def test_rows_of_plain_lists_are_judged_as_the_column_checks_judge_them(
    instances: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fast check of list rows of numbers accepts exactly what the typed checks accept, to the bit."""
    outcomes = []
    for fast in (True, False):
        monkeypatch.setattr(schema, "_plain_floats", lambda features, fast=fast: fast)
        try:
            outcomes.append(rows_of_values(instances, FEATURES, 100).tobytes())
        except InvalidInput as error:
            outcomes.append(error.message)
    assert outcomes[0] == outcomes[1] or not any(isinstance(outcome, bytes) for outcome in outcomes)


# A model's typed features: numbers and categories, some of which may be missing.
TYPED = (
    Feature("length", nullable=True),
    Feature("colour", "category", nullable=True, categories=("blue", "green", "red")),
    Feature("grade", "category", categories=(1, 2, 3)),
    Feature("count", dtype="int64"),
    Feature("tag", "category", categories=tuple(f"t{i}" for i in range(8)), accepts_unknown=True),
)


def test_typed_rows_become_an_object_array_as_training_presented_them() -> None:
    rows = rows_of_values(
        [[1, "red", 2.0, 3, "t9"], {"length": None, "colour": None, "grade": 3, "count": 4.0, "tag": "t1"}],
        TYPED,
        10,
    )
    assert rows.dtype == object
    assert rows.shape == (2, 5)
    first, second = rows.tolist()
    assert first == [1.0, "red", 2, 3.0, "t9"]
    assert [type(value) for value in first] == [float, str, int, float, str]  # the card's 2 for 2.0
    assert np.isnan(second[0])
    assert np.isnan(second[1])
    assert second[2:] == [3, 4.0, "t1"]


def test_numbers_that_may_be_missing_become_a_float_matrix_with_nan() -> None:
    features = (Feature("a", nullable=True), Feature("b"))
    rows = rows_of_values([[None, 1], {"a": 2.5, "b": -3}], features, 10)
    assert rows.dtype == np.float64
    assert np.array_equal(rows, [[np.nan, 1.0], [2.5, -3.0]], equal_nan=True)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (["1", "red", 2, 3, "t1"], "row 0, feature 'length': expected a number or null, got a string"),
        ([True, "red", 2, 3, "t1"], "row 0, feature 'length': expected a number or null, got a boolean"),
        ([1, 5, 2, 3, "t1"], "row 0, feature 'colour': expected a category as text or null, got a number"),
        (
            [1, False, 2, 3, "t1"],
            "row 0, feature 'colour': expected a category as text or null, got a boolean",
        ),
        (
            [1, "purple", 2, 3, "t1"],
            "row 0, feature 'colour': expected one of its categories ['blue', 'green', 'red'], got 'purple'",
        ),
        (
            [1, "p" * 100, 2, 3, "t1"],
            "row 0, feature 'colour': expected one of its categories ['blue', 'green', 'red'], "
            f"got '{'p' * 40}...'",
        ),
        ([1, "red", "2", 3, "t1"], "row 0, feature 'grade': expected a category as a number, got a string"),
        ([1, "red", True, 3, "t1"], "row 0, feature 'grade': expected a category as a number, got a boolean"),
        ([1, "red", None, 3, "t1"], "row 0, feature 'grade': expected a category as a number, got null"),
        ([1, "red", 4, 3, "t1"], "row 0, feature 'grade': expected one of its categories [1, 2, 3], got 4"),
        (
            [1, "red", 2, None, "t1"],
            "row 0, feature 'count': expected an integer (the model was fitted on int64), got null",
        ),
        (
            [1, "red", 2, 2.5, "t1"],
            "row 0, feature 'count': expected an integer (the model was fitted on int64), "
            "got a number with a fraction",
        ),
        ([1, "red", 2, 10**400, "t1"], "row 0, feature 'count': value is too large for a 64-bit float"),
        ([1, "red", 2, 3, 7], "row 0, feature 'tag': expected a category as text, got a number"),
        ([1, "red", 2, 3, None], "row 0, feature 'tag': expected a category as text, got null"),
        ([1, "red", 2, 3, ["t1"]], "row 0, feature 'tag': expected a category as text, got an array"),
    ],
)
def test_refuses_each_wrong_typed_value_naming_row_feature_expected_and_got(
    row: list[Any], message: str
) -> None:
    good = [0.5, "blue", 1, 1, "t0"]
    with pytest.raises(InvalidInput) as caught:
        rows_of_values([good, good, row], TYPED, 10)
    assert caught.value.status == 400
    assert caught.value.message == message.replace("row 0", "row 2")


def test_an_unknown_category_lists_a_few_known_ones() -> None:
    many = (Feature("city", "category", categories=tuple(f"c{i}" for i in range(12))),)
    with pytest.raises(InvalidInput) as caught:
        rows_of_values([["c0"], ["x"]], many, 10)
    assert caught.value.message == (
        "row 1, feature 'city': expected one of its categories ['c0', 'c1', 'c2', 'c3', 'c4'] and 7 more, "
        "got 'x'"
    )


def test_the_first_wrong_value_in_row_order_is_named() -> None:
    with pytest.raises(InvalidInput, match="row 1, feature 'grade'"):
        rows_of_values([[1, "red", 2, 3, "t1"], [1, "red", 9, 3, "t1"], ["x", "red", 2, 3, "t1"]], TYPED, 10)
