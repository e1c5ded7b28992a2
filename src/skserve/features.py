"""The model's typed input schema, as its card records it: one source of truth for every protocol."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

Kind = Literal["number", "category"]
NUMBER: Kind = "number"
CATEGORY: Kind = "category"
KINDS: tuple[Kind, ...] = (NUMBER, CATEGORY)

CLASSIFICATION = "classification"
REGRESSION = "regression"
TASKS = (CLASSIFICATION, REGRESSION)

# How rows reach the estimator: a float64 matrix or an object array in feature order ("array"), or a
# pandas DataFrame with the columns and dtypes it was fitted on ("dataframe").
ARRAY_INPUT = "array"
DATAFRAME_INPUT = "dataframe"
INPUTS = (ARRAY_INPUT, DATAFRAME_INPUT)

Category = str | int | float

# The CSV spellings of a missing value, for training, packaging and bulk scoring alike (case-sensitive,
# after stripping spaces); JSON requests say null.
MISSING_SPELLINGS = ("", "NA", "N/A", "NaN", "nan", "null", "NULL", "None")


class CardError(ValueError):
    """The card's feature list is not one skserve can serve; the message names the entry."""


@dataclass(frozen=True)
class Feature:
    """One input column: a number or a category, and whether a missing value (JSON null) is accepted.

    `categories` are the values seen in training, in the model's order; `accepts_unknown` says whether
    the model takes a category outside them (else validation refuses it). `dtype` is the pandas dtype
    the estimator was fitted on, for DataFrame input; None for array input.
    """

    name: str
    kind: Kind = NUMBER
    nullable: bool = False
    categories: tuple[Category, ...] = ()
    accepts_unknown: bool = False
    dtype: str | None = None

    def to_card(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"name": self.name, "kind": self.kind, "nullable": self.nullable}
        if self.kind == CATEGORY:
            entry["categories"] = list(self.categories)
            entry["accepts_unknown"] = self.accepts_unknown
        if self.dtype is not None:
            entry["dtype"] = self.dtype
        return entry

    @classmethod
    def from_card(cls, entry: Any, index: int) -> Feature:
        """A feature from its card entry: an object, or a plain name (format 1: a number, never missing)."""
        if isinstance(entry, str):
            return cls(entry)
        where = f"features[{index}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise CardError(f'{where} must be a name or an object with a string "name"')
        kind = entry.get("kind", NUMBER)
        if kind not in KINDS:
            raise CardError(f"{where} ({entry['name']!r}): kind must be one of {list(KINDS)}, got {kind!r}")
        categories = entry.get("categories", [])
        if kind == CATEGORY and (not isinstance(categories, list) or not categories):
            raise CardError(
                f'{where} ({entry["name"]!r}): a category feature needs a non-empty "categories" list'
            )
        return cls(
            name=entry["name"],
            kind=kind,
            nullable=bool(entry.get("nullable", False)),
            categories=tuple(categories) if kind == CATEGORY else (),
            accepts_unknown=bool(entry.get("accepts_unknown", False)),
            dtype=entry.get("dtype"),
        )

    @cached_property  # asked for each request's values; the categories never change
    def numeric_categories(self) -> bool:
        """Whether the categories are numbers (then a JSON number is a valid value)."""
        return bool(self.categories) and all(
            isinstance(value, (int, float)) and not isinstance(value, bool) for value in self.categories
        )


def features_from_card(card: dict[str, Any]) -> tuple[Feature, ...]:
    """The typed features of a card of any format; raises CardError for a malformed list."""
    entries = card.get("features")
    if not isinstance(entries, list) or not entries:
        raise CardError('"features" must be a non-empty list')
    features = tuple(Feature.from_card(entry, index) for index, entry in enumerate(entries))
    names = [feature.name for feature in features]
    if len(set(names)) != len(names):
        raise CardError(f"feature names must be unique, got {names}")
    return features


def features_to_card(features: Sequence[Feature]) -> list[dict[str, Any]]:
    return [feature.to_card() for feature in features]


def is_plain_numeric(features: Sequence[Feature]) -> bool:
    """Every feature a number that must be present: rows are then a finite float64 matrix."""
    return all(feature.kind == NUMBER and not feature.nullable for feature in features)
