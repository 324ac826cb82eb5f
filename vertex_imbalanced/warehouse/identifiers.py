"""Validation of SQL identifiers and table references (values never go through here)."""

from __future__ import annotations

import dataclasses
import difflib
import re

from vertex_imbalanced.errors import PipelineInputError, SchemaError

_COLUMN_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,299}$")
_DATASET_RE = re.compile(r"^[A-Za-z0-9_]{1,1024}$")
_TABLE_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_\-]{0,1023}$")
_PROJECT_RE = re.compile(r"^[a-z][a-z0-9\-]{4,28}[a-z0-9]$|^[a-z0-9\-.:]+$")


def validate_column(name: str) -> str:
    """Return ``name`` if it is a safe column identifier.

    Raises:
        PipelineInputError: if the name could break out of an identifier (quotes, ``;``...).
    """
    if not isinstance(name, str) or not _COLUMN_RE.match(name):
        raise PipelineInputError(
            f"invalid column name {name!r}: use letters, digits and underscores, "
            "starting with a letter or underscore"
        )
    return name


@dataclasses.dataclass(frozen=True)
class TableRef:
    """A BigQuery table ``project.dataset.table`` (project optional for DuckDB)."""

    project: str | None
    dataset: str | None
    table: str

    @classmethod
    def parse(cls, ref: str) -> TableRef:
        """Parse ``[bq://]project.dataset.table``, ``dataset.table`` or ``table``.

        Raises:
            PipelineInputError: if any part is not a valid identifier.
        """
        if not isinstance(ref, str) or not ref:
            raise PipelineInputError(f"invalid table reference {ref!r}")
        text = ref.removeprefix("bq://")
        parts = text.split(".")
        if len(parts) > 3:
            raise PipelineInputError(f"invalid table reference {ref!r}: too many dots")
        parts = [None] * (3 - len(parts)) + parts
        project, dataset, table = parts
        if project is not None and not _PROJECT_RE.match(project):
            raise PipelineInputError(f"invalid project id {project!r} in table reference {ref!r}")
        if dataset is not None and not _DATASET_RE.match(dataset):
            raise PipelineInputError(f"invalid dataset {dataset!r} in table reference {ref!r}")
        if not _TABLE_RE.match(table or ""):
            raise PipelineInputError(f"invalid table name {table!r} in table reference {ref!r}")
        return cls(project, dataset, table)

    def with_table(self, table: str) -> TableRef:
        """Return a reference to another table in the same dataset."""
        return TableRef.parse(".".join(p for p in (self.project, self.dataset, table) if p))

    @property
    def bigquery(self) -> str:
        """Backquoted BigQuery form, e.g. ```p.d.t```."""
        return "`" + ".".join(p for p in (self.project, self.dataset, self.table) if p) + "`"

    @property
    def duckdb(self) -> str:
        """Double-quoted DuckDB form (dataset becomes a schema; project is dropped)."""
        return ".".join(f'"{p}"' for p in (self.dataset, self.table) if p)

    def __str__(self) -> str:
        return ".".join(p for p in (self.project, self.dataset, self.table) if p)


def require_columns(table: str, wanted: list[str], available: list[str]) -> None:
    """Raise a SchemaError naming the first missing column and the closest existing name."""
    for name in wanted:
        if name not in available:
            close = difflib.get_close_matches(name, available, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise SchemaError(
                f"table {table} has no column {name!r}{hint} (columns: {', '.join(available)})"
            )
