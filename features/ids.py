"""Ids as the source has them: integers (MovieLens) or strings (a shop's ``C00017`` and
``SKU-4411-B``), per column, as ``data.tabular.ids`` says.

Every edge keeps them as given: validation messages, the validated tables, Feast's entities
and online rows, the bundle, the service's requests and answers, the event log. Inside the
models an id is a dense index (``models.interactions``). A string id is read as text, never
as a number, so ``007`` stays ``007``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from flows.config import IdKind

# GE's names of the column types each kind admits: pandas' nullable integers, or str values
# (row by row in an object column, so a stray number is named with its row).
TYPE_NAMES = {"int": ["Int64Dtype", "int64"], "str": ["str", "StringDtype"]}
RULES = {"int": "integer ids", "str": "string ids"}


def ingested(values, kind: IdKind):
    """An ingested (nullable) id column: ``Int64``, or the values as read (object, nulls as
    None) for strings, so that validation, not parsing, names a value that is not one."""
    if kind == "int":
        return pd.array(values, dtype="Int64")
    column = pd.Series(values, dtype=object)
    return column.where(column.notna(), None).to_numpy(dtype=object)


def strict(values: pd.Series, kind: IdKind) -> pd.Series:
    """A validated id column: ``int64``, or ``object`` holding ``str``."""
    return values.astype("int64") if kind == "int" else values.map(str).astype(object)


def kind_of(values) -> IdKind:
    """The kind of a validated id column or array."""
    dtype = values.dtype if hasattr(values, "dtype") else np.asarray(values).dtype
    return "int" if pd.api.types.is_integer_dtype(dtype) else "str"


def as_array(values, kind: IdKind) -> np.ndarray:
    """Ids as a numpy array that sorts, searches and saves without pickling: ``int64`` or
    unicode."""
    return np.asarray(values, dtype=np.int64 if kind == "int" else str)


def plain(values) -> np.ndarray:
    """Ids as table columns hold them: ``int64``, or objects holding ``str``."""
    values = np.asarray(values)
    return values.astype(np.int64) if kind_of(values) == "int" else values.astype(str).astype(object)


def python_ids(values) -> list:
    """Ids as Python values (``int`` or ``str``), as Feast's entity rows and JSON take them."""
    return plain(values).tolist()
