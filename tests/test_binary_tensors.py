"""The binary tensor data codec, checked against tritonclient's own encoding of the same tensors."""

from __future__ import annotations

import numpy as np
import pytest
from tritonclient.utils import deserialize_bytes_tensor, serialize_byte_tensor

from skserve.binary_tensors import decode, encode
from skserve.errors import InvalidInput

TEXT = ["Biscoe", "", "Dream ✓", "Torgersen"]


def triton_bytes(values: list[str]) -> bytes:
    """How tritonclient writes a BYTES tensor for binary_data=True."""
    serialized = serialize_byte_tensor(np.array([value.encode() for value in values], dtype=np.object_))
    raw: bytes = serialized.item()
    return raw


def test_bytes_decode_as_tritonclient_encodes_them_and_empty_is_a_missing_value() -> None:
    assert decode(triton_bytes(TEXT), "BYTES", len(TEXT)) == ["Biscoe", None, "Dream ✓", "Torgersen"]


def test_bytes_encode_as_tritonclient_decodes_them() -> None:
    assert deserialize_bytes_tensor(encode(TEXT, "BYTES")).tolist() == [value.encode() for value in TEXT]


def test_fp64_is_little_endian_and_nan_is_a_missing_value() -> None:
    raw = np.array([1.5, np.nan, -2.0], dtype="<f8").tobytes()
    assert decode(raw, "FP64", 3) == [1.5, None, -2.0]
    assert encode([1.5, -2.0], "FP64") == np.array([1.5, -2.0], dtype="<f8").tobytes()


def test_int64_encodes_little_endian() -> None:
    assert encode([1, -3], "INT64") == np.array([1, -3], dtype="<i8").tobytes()


@pytest.mark.parametrize(
    ("raw", "datatype", "count", "message"),
    [
        (b"\x00" * 16, "FP64", 3, "binary_data_size is 16 bytes; 3 FP64 values take 24"),
        (b"\x00" * 17, "FP64", 2, "binary_data_size is 17 bytes; 2 FP64 values take 16"),
        (triton_bytes(TEXT), "BYTES", 5, "binary data holds 4 BYTES elements; the shape needs 5"),
        (triton_bytes(TEXT), "BYTES", 3, "binary data has 13 bytes left after its 3 elements"),
        (triton_bytes(["ab"])[:-1], "BYTES", 1, "element 0's length prefix says 2 bytes; only 1 remain"),
        (
            triton_bytes(["ab"]) + b"\x01\x00",
            "BYTES",
            2,
            "element 1 is cut short: its 4-byte length prefix runs past the end",
        ),
        (b"\xff\xff\xff\xff", "BYTES", 1, "element 0's length prefix says 4294967295 bytes; only 0 remain"),
        (triton_bytes(["ok"]) + b"\x02\x00\x00\x00\xff\xfe", "BYTES", 2, "element 1 is not UTF-8 text"),
    ],
)
def test_inconsistent_binary_data_is_refused_naming_the_problem(
    raw: bytes, datatype: str, count: int, message: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        decode(raw, datatype, count)
    assert caught.value.message == message
