"""`skserve score`: predictions for a CSV of any length, chunk by chunk, validated as /predict validates."""

from __future__ import annotations

import argparse
import csv
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd

from skserve.errors import InvalidInput
from skserve.features import CATEGORY, NUMBER
from skserve.model import ArtifactError, LoadedModel, Prediction
from skserve.packaging import allow_unsafe_pickle, read_csv
from skserve.schema import rows_of_values, typed_columns_to_matrix

DEFAULT_CHUNK_ROWS = 10_000
DEFAULT_MODEL_DIR = Path("models")
FIRST_DATA_LINE = 2  # line 1 is the header
PREDICTION_COLUMN = "prediction"


class ScoringError(Exception):
    """The file cannot be scored (or a bad row stops the run); the message says where and why."""


@dataclass(frozen=True)
class BadRow:
    line: int
    problem: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.problem}"


@dataclass(frozen=True)
class Chunk:
    """One chunk as scored: its first line in the input, rows read, and the bad rows left out."""

    first_line: int
    rows: int
    bad: tuple[BadRow, ...]


def score_csv(
    model: LoadedModel,
    source: IO[bytes],
    sink: IO[str],
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    skip_bad_rows: bool = False,
) -> Iterator[Chunk]:
    """Score the CSV in `source` into `sink`, one chunk of at most `chunk_rows` rows at a time.

    Each chunk is validated as a /predict request of that many rows and scored in one model call;
    the output keeps the input's order. A bad row raises ScoringError naming its line, or with
    `skip_bad_rows` is left out and reported in the chunk yielded.
    """
    names = model.feature_names
    text_columns = {
        feature.name: "str"
        for feature in model.features
        if feature.kind == CATEGORY and not feature.numeric_categories
    }
    try:
        reader = read_csv(source, chunksize=chunk_rows, dtype=text_columns, skip_blank_lines=False)
        first_line = FIRST_DATA_LINE
        for frame in reader:
            if first_line == FIRST_DATA_LINE:
                _check_header(list(frame.columns), names)
            chunk = _score_chunk(model, frame[names], first_line, sink, skip_bad_rows)
            first_line += chunk.rows
            yield chunk
    except pd.errors.EmptyDataError:
        raise ScoringError("the file is empty: expected a header row naming the model's features") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise ScoringError(f"not a readable CSV: {str(error).splitlines()[0]}") from None


def _check_header(columns: list[str], names: list[str]) -> None:
    missing = [name for name in names if name not in columns]
    unknown = [column for column in columns if column not in names]
    if missing or unknown:
        problems = [
            f"{label} {found}" for label, found in (("missing", missing), ("unknown", unknown)) if found
        ]
        raise ScoringError(
            f"line 1: the header's columns must be the model's features {names}: " + "; ".join(problems)
        )


def _score_chunk(
    model: LoadedModel, frame: Any, first_line: int, sink: IO[str], skip_bad_rows: bool
) -> Chunk:
    # The columns as pandas typed them are checked whole; only a chunk they do not settle goes
    # through the per-row checks, which name each bad row.
    columns = [frame[name].to_numpy() for name in model.feature_names]
    rows = typed_columns_to_matrix(columns, model.features)
    bad: tuple[BadRow, ...] = ()
    if rows is None:
        rows, bad = _checked_rows(model, frame, first_line, skip_bad_rows)
        if rows is None:
            return Chunk(first_line, len(frame), bad)
    try:
        prediction = model.predict(rows)
    except InvalidInput as error:
        last = first_line + len(frame) - 1
        raise ScoringError(f"lines {first_line}-{last}: {error.message}") from None
    _write(model, prediction, sink, header=first_line == FIRST_DATA_LINE)
    return Chunk(first_line, len(frame), bad)


def _checked_rows(
    model: LoadedModel, frame: Any, first_line: int, skip_bad_rows: bool
) -> tuple[np.ndarray | None, tuple[BadRow, ...]]:
    """The chunk's valid rows as the model takes them (None if there are none) and its bad rows."""
    instances = _instances(model, frame)
    try:
        return rows_of_values(instances, model.features, len(instances)), ()
    except InvalidInput:
        # Rows checked one by one only in a chunk that has a bad one, to name each and its line.
        verdicts = [_problem(model, row) for row in instances]
        bad = tuple(BadRow(first_line + index, problem) for index, problem in enumerate(verdicts) if problem)
        if not skip_bad_rows:
            raise ScoringError(f"{bad[0]} (--skip-bad-rows scores the other rows)") from None
        good = [row for row, problem in zip(instances, verdicts, strict=True) if not problem]
        if not good:
            return None, bad
        return rows_of_values(good, model.features, len(good)), bad


def _instances(model: LoadedModel, frame: Any) -> list[list[Any]]:
    """The chunk's rows as /predict's values: numbers, strings, and None for a missing value."""
    if all(pd.api.types.is_numeric_dtype(dtype) for dtype in frame.dtypes):
        matrix = frame.to_numpy(dtype=np.float64)
        if not np.isnan(matrix).any():  # the common case: a plain matrix, converted in one C call
            rows: list[list[Any]] = matrix.tolist()
            return rows
    frame = frame.copy()
    for feature in model.features:
        column = frame[feature.name]
        if feature.kind == NUMBER and not pd.api.types.is_numeric_dtype(column.dtype):
            # Numbers among text stay numbers; the text stays text, for validation to name.
            numbers = pd.to_numeric(column, errors="coerce")
            frame[feature.name] = numbers.astype(object).where(numbers.notna() | column.isna(), column)
    values = frame.to_numpy(dtype=object, copy=True)
    values[pd.isna(values)] = None
    rows = values.tolist()
    return rows


def _problem(model: LoadedModel, row: list[Any]) -> str:
    """What validation says of one row (without its "row 0" prefix), or "" when it is valid."""
    try:
        rows_of_values([row], model.features, 1)
    except InvalidInput as error:
        return error.message.removeprefix("row 0, ").removeprefix("row 0: ")
    return ""


def _write(model: LoadedModel, prediction: Prediction, sink: IO[str], *, header: bool) -> None:
    """Rows of the prediction and, for a classifier, one probability per class; floats as repr,
    which reads back exactly. The csv module formats Python floats in C: twice DataFrame.to_csv's speed.
    """
    writer = csv.writer(sink, lineterminator="\n")
    if prediction.probabilities is None:
        if header:
            writer.writerow([PREDICTION_COLUMN])
        writer.writerows(zip(prediction.labels))
        return
    if header:
        writer.writerow([PREDICTION_COLUMN, *(f"probability_{name}" for name in model.class_names)])
    writer.writerows(zip(prediction.labels, *prediction.probabilities.T.tolist(), strict=True))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=Path, help="CSV with a header row naming the model's features")
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=DEFAULT_MODEL_DIR,
        help=f"artifact directory (default: {DEFAULT_MODEL_DIR}/)",
    )
    parser.add_argument("--output", type=Path, help="predictions CSV to write (default: standard output)")
    parser.add_argument(
        "--skip-bad-rows",
        action="store_true",
        help="leave invalid rows out and report them, instead of stopping",
    )
    parser.add_argument(
        "--chunk-rows",
        type=int,
        default=DEFAULT_CHUNK_ROWS,
        help=f"rows per chunk (default: {DEFAULT_CHUNK_ROWS})",
    )


def run(args: argparse.Namespace) -> int:
    if args.chunk_rows < 1:
        print("skserve score: error: --chunk-rows must be at least 1", file=sys.stderr)
        return 2
    try:
        model = LoadedModel.load(args.model_dir, allow_unsafe_pickle=allow_unsafe_pickle())
        bad = _score_file(model, args.input, args.output, args.chunk_rows, args.skip_bad_rows)
    except (ArtifactError, ScoringError) as error:
        print(f"skserve score: error: {error}", file=sys.stderr)
        return 2
    for row in bad:
        print(f"skserve score: skipped {row}", file=sys.stderr)
    return 0


def _score_file(
    model: LoadedModel, path: Path, output: Path | None, chunk_rows: int, skip: bool
) -> list[BadRow]:
    try:
        source = path.open("rb")
    except OSError as error:
        raise ScoringError(f"cannot read {path}: {error.strerror}") from None
    with source, _output(output) as sink:
        progress = _progress(source) if sys.stderr.isatty() else None
        bad: list[BadRow] = []
        for chunk in score_csv(model, source, sink, chunk_rows=chunk_rows, skip_bad_rows=skip):
            bad.extend(chunk.bad)
            if progress is not None:
                progress(chunk.first_line + chunk.rows - FIRST_DATA_LINE)
        if progress is not None:
            print(file=sys.stderr)
    return bad


@contextmanager
def _output(path: Path | None) -> Iterator[IO[str]]:
    """The predictions file, renamed into place only when the run succeeds; stdout when None."""
    if path is None:
        yield sys.stdout
        sys.stdout.flush()
        return
    temp = path.with_name(f".{path.name}.tmp")
    try:
        stream = temp.open("w", encoding="utf-8", newline="", buffering=1 << 20)
    except OSError as error:
        raise ScoringError(f"cannot write {path}: {error.strerror}") from None
    try:
        with stream:
            yield stream
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def _progress(source: IO[bytes]) -> Callable[[int], None]:
    total = os.fstat(source.fileno()).st_size or 1

    def show(rows: int) -> None:
        done = min(source.tell() / total, 1.0)
        bar = "#" * int(done * 30)
        print(f"\r[{bar:<30}] {done:4.0%} {rows:,} rows", end="", file=sys.stderr, flush=True)

    return show
