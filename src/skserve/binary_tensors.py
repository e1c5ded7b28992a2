"""The Open Inference Protocol's binary tensor data extension: raw little-endian bytes to values and back."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

from skserve.errors import InvalidInput
from skserve.v2_protocol import BYTES, FP64, INT64

# Row-major, little-endian, no padding; BYTES elements are each a 4-byte little-endian length and the bytes.
FIXED_WIDTH = {FP64: np.dtype("<f8"), INT64: np.dtype("<i8")}
LENGTH_PREFIX = struct.Struct("<I")


def decode(raw: bytes, datatype: str, count: int) -> list[Any]:
    """The `count` elements of a tensor's binary data, flat: floats or text, None for a missing value.

    A missing value is NaN in FP64 and an empty element in BYTES (training reads an empty CSV field as
    missing, so no category is the empty text); JSON data says null instead.

    Raises InvalidInput naming the inconsistency when the bytes do not hold exactly `count` elements.
    """
    if datatype == BYTES:
        return _decode_bytes(raw, count)
    dtype = FIXED_WIDTH[datatype]
    if len(raw) != count * dtype.itemsize:
        raise InvalidInput(
            f"binary_data_size is {len(raw)} bytes; {count} {datatype} values take {count * dtype.itemsize}"
        )
    values = np.frombuffer(raw, dtype)
    missing = np.isnan(values)
    if not missing.any():
        return values.tolist()  # type: ignore[no-any-return]
    return [None if gap else value for value, gap in zip(values.tolist(), missing.tolist(), strict=True)]


def _decode_bytes(raw: bytes, count: int) -> list[Any]:
    elements: list[Any] = []
    offset = 0
    while offset < len(raw):
        if len(elements) == count:
            raise InvalidInput(f"binary data has {len(raw) - offset} bytes left after its {count} elements")
        if offset + LENGTH_PREFIX.size > len(raw):
            raise InvalidInput(
                f"element {len(elements)} is cut short: its 4-byte length prefix runs past the end"
            )
        (length,) = LENGTH_PREFIX.unpack_from(raw, offset)
        offset += LENGTH_PREFIX.size
        if offset + length > len(raw):
            raise InvalidInput(
                f"element {len(elements)}'s length prefix says {length} bytes; "
                f"only {len(raw) - offset} remain"
            )
        try:
            elements.append(raw[offset : offset + length].decode("utf-8") or None)
        except UnicodeDecodeError:
            raise InvalidInput(f"element {len(elements)} is not UTF-8 text") from None
        offset += length
    if len(elements) != count:
        raise InvalidInput(f"binary data holds {len(elements)} BYTES elements; the shape needs {count}")
    return elements


def encode(values: Sequence[Any] | np.ndarray, datatype: str) -> bytes:
    """The binary data of a flat tensor: FP64 and INT64 as 8-byte little-endian, BYTES as UTF-8 text."""
    if datatype == BYTES:
        encoded = [str(value).encode() for value in values]
        return b"".join(LENGTH_PREFIX.pack(len(element)) + element for element in encoded)
    return np.asarray(values, dtype=FIXED_WIDTH[datatype]).tobytes()
