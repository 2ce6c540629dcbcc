"""Errors for input that cannot be used, each naming file, column, row and rule."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


class DataError(Exception):
    """An input file breaks a rule of the data contract.

    Args:
        file: the file the problem was found in.
        rule: short name of the broken rule (e.g. ``numeric``, ``required columns``).
        message: what is wrong, in words a person can act on.
        column: the column concerned, where there is one.
        row: 0-based data row (header excluded), where there is one.
        line: 1-based line of the file, where there is one.
    """

    def __init__(
        self,
        file: str | Path,
        rule: str,
        message: str,
        *,
        column: str | None = None,
        row: int | None = None,
        line: int | None = None,
    ) -> None:
        self.file = str(file)
        self.rule = rule
        self.message = message
        self.column = column
        self.row = row
        self.line = line
        super().__init__(str(self))

    def __str__(self) -> str:
        where = [self.file]
        if self.line is not None:
            where.append(f"line {self.line}")
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.column is not None:
            where.append(f"column '{self.column}'")
        return f"{', '.join(where)}: [{self.rule}] {self.message}"


class ChecksumError(DataError):
    """A mirrored or downloaded file does not match its pinned sha256."""


@dataclass
class Problem:
    """One broken validation rule, summarised for a person."""

    rule: str
    column: str | None
    count: int
    examples: list[dict] = field(default_factory=list)
    fraction: float | None = None

    def line(self) -> str:
        share = f" ({self.fraction:.2%})" if self.fraction is not None else ""
        col = self.column or "(table)"
        text = f"  - {self.rule}: column {col}, {self.count} row(s){share}"
        if self.examples:
            shown = "; ".join(_format_example(e) for e in self.examples)
            text += f"\n      e.g. {shown}"
        return text


def _format_example(example: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in example.items())


class ValidationFailed(Exception):
    """A table broke one or more validation rules; nothing downstream was written."""

    def __init__(self, table: str, file: str, problems: list[Problem], docs: str | None = None):
        self.table = table
        self.file = file
        self.problems = problems
        self.docs = docs
        super().__init__(self.summary())

    def summary(self) -> str:
        head = f"{self.file}: {self.table} failed {len(self.problems)} validation rule(s)"
        lines = [head, *(p.line() for p in self.problems)]
        if self.docs:
            lines.append(f"  Data Docs: {self.docs}")
        return "\n".join(lines)
