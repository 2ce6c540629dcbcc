"""Reading delimited text files so that every way a file can be broken gets a clear error.

pandas alone would guess: a latin-1 file read as UTF-8 becomes mojibake or a traceback,
a truncated last line becomes NaNs, a wrong delimiter becomes one wide column. Each of those
is turned here into a DataError naming the file, line, column and rule.
"""
from __future__ import annotations

import csv
import io
import re
import warnings
from pathlib import Path

import pandas as pd
from pandas.api.types import is_numeric_dtype

from features.errors import DataError

# Separators tried when the declared one is absent, to say what the file looks like.
_CANDIDATE_SEPARATORS = [",", ";", "\t", "|", "::"]
# pandas needs a one-character separator for its fast parser; "::" is mapped to this.
_UNIT_SEPARATOR = "\x1f"


def read_text(path: Path, encoding: str) -> str:
    """Decode a whole file strictly: undecodable bytes are an error, never replacement chars."""
    raw = Path(path).read_bytes()
    if not raw.strip():
        raise DataError(path, "non-empty file", "the file is empty")
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise DataError(
            path,
            "encoding",
            f"byte 0x{raw[err.start]:02x} is not valid {encoding}; the file is in another "
            "encoding (MovieLens 1M and 100K files are latin-1): set the encoding to match",
            line=line,
        ) from None
    return text.removeprefix("\ufeff")


def guess_separator(line: str) -> str | None:
    """The candidate separator that appears in a line, if any."""
    for sep in _CANDIDATE_SEPARATORS:
        if sep in line:
            return sep
    return None


def _check_separator(path: Path, lines: list[str], sep: str, expected_fields: int, first: int) -> None:
    sample = lines[first] if len(lines) > first else lines[0]
    if expected_fields > 1 and sep not in sample:
        seen = guess_separator(sample)
        looks = f"; it looks {seen!r}-separated" if seen else ""
        raise DataError(
            path,
            "delimiter",
            f"expected fields separated by {sep!r} but line {first + 1} has none{looks}",
            line=first + 1,
        )


def _check_last_line(path: Path, text: str, sep: str, expected_fields: int) -> None:
    """A file cut mid-line ends without a newline and with too few fields."""
    if text.endswith(("\n", "\r")):
        return
    last = text.rsplit("\n", 1)[-1]
    fields = len(next(csv.reader([last], delimiter=sep))) if len(sep) == 1 else last.count(sep) + 1
    if fields < expected_fields:
        raise DataError(
            path,
            "complete last line",
            f"the last line has {fields} of {expected_fields} fields and no line end: "
            "the file looks truncated",
            line=text.count("\n") + 1,
        )


def to_numbers(values: pd.Series, path: Path, column: str, first_line: int | None) -> pd.Series:
    """Numbers from a parsed column; the first non-number is reported with its row and line."""
    if is_numeric_dtype(values):
        return values
    numbers = pd.to_numeric(values, errors="coerce")
    bad = numbers.isna() & values.notna()
    if bad.any():
        row = int(bad.to_numpy().nonzero()[0][0])
        raise DataError(
            path,
            "numeric",
            f"value {values.iloc[row]!r} is not a number ({int(bad.sum())} such row(s))",
            column=column,
            row=row,
            line=None if first_line is None else first_line + row,
        )
    return numbers


def read_delimited(
    path: Path,
    columns: list[str],
    *,
    sep: str = ",",
    encoding: str = "utf-8",
    header: bool = True,
    numeric: list[str] | tuple[str, ...] = (),
    text: list[str] | tuple[str, ...] = (),
) -> tuple[pd.DataFrame, int]:
    """Read a delimited text file into a frame holding exactly ``columns``.

    Args:
        path: the file.
        columns: columns required (with a header) or the names of the fields (without one).
        sep: field separator; multi-character separators such as MovieLens' ``::`` work.
        encoding: the file's encoding, decoded strictly.
        header: whether the first line names the columns.
        numeric: columns that must hold numbers (empty fields stay null for validation).
        text: columns read as written even under a header (string ids: ``007`` stays).

    Returns:
        The frame and the file line number of its first data row.
    """
    path = Path(path)
    text = read_text(path, encoding)
    lines = text.splitlines()
    first_line = 2 if header else 1
    header_names = next(csv.reader([lines[0]], delimiter=sep)) if header and len(sep) == 1 else None
    expected = len(header_names) if header_names and len(header_names) > 1 else len(columns)
    _check_separator(path, lines, sep, expected, first_line - 1)
    _check_last_line(path, text, sep, expected)
    if len(sep) > 1:
        text, sep = text.replace(sep, _UNIT_SEPARATOR), _UNIT_SEPARATOR
    try:
        with warnings.catch_warnings():
            # pandas only warns when the first data line has more fields than the header.
            warnings.simplefilter("error", pd.errors.ParserWarning)
            frame = pd.read_csv(
                io.StringIO(text.rstrip("\r\n") + "\n"),
                sep=sep,
                header=0 if header else None,
                names=None if header else columns,
                # Without this, a line with one field too many silently becomes the index and
                # every column shifts left.
                index_col=False,
                # Blank lines stay rows (of nulls, which validation reports), so that row r is
                # always line first_line + r.
                skip_blank_lines=False,
                # Only an empty field is null: "NA" or "None" may be a tag or a title.
                keep_default_na=False,
                na_values=[""],
                # Ids and text stay as written; numbers are checked column by column below.
                dtype={c: "string" for c in columns if c not in numeric} if not header else {c: "string" for c in text} or None,
            )
    except pd.errors.ParserWarning:
        raise DataError(
            path, "field count", f"line {first_line} has more fields than {expected}", line=first_line
        ) from None
    except pd.errors.EmptyDataError:
        raise DataError(path, "non-empty file", "the file has no rows") from None
    except pd.errors.ParserError as err:
        found = re.search(r"line (\d+)", str(err))
        line = int(found.group(1)) if found else None
        raise DataError(path, "field count", str(err).strip(), line=line) from None
    return select_columns(frame, path, columns, numeric, first_line), first_line


def select_columns(
    frame: pd.DataFrame, path: Path, columns: list[str], numeric, first_line: int | None
) -> pd.DataFrame:
    """The required columns of a parsed table, numbers checked; an error for what is missing."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(
            path,
            "required columns",
            f"missing column(s) {missing}; the file has {list(frame.columns)}",
            column=missing[0],
            line=None if first_line is None else 1,
        )
    if frame.empty:
        raise DataError(path, "non-empty file", "the file has no data rows")
    frame = frame[columns].copy()
    for column in numeric:
        frame[column] = to_numbers(frame[column], path, column, first_line)
    return frame
