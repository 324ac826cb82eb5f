"""Validation of SQL identifiers and table references (values never go through here)."""

from __future__ import annotations

import dataclasses
import difflib
import re
import unicodedata
from collections.abc import Iterable

from vertex_imbalanced.errors import PipelineInputError, SchemaError

_DATASET_RE = re.compile(r"^[A-Za-z0-9_]{1,1024}$")
_TABLE_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_\-]{0,1023}$")
_PROJECT_RE = re.compile(r"^[a-z][a-z0-9\-]{4,28}[a-z0-9]$|^[a-z0-9\-.:]+$")


COLUMN_NAME_MAX = 300
"""BigQuery's longest column name, in characters."""
_COLUMN_CATEGORIES = ("L", "M", "N")  # letters, marks, numbers in any script
_COLUMN_EXACT_CATEGORIES = ("Pc", "Pd", "Zs")  # connectors (_), dashes, space separators
_COLUMN_SYMBOLS = frozenset("&%=+:'<>#|")
RESERVED_COLUMN_PREFIXES: tuple[str, ...] = (
    "_TABLE_",
    "_FILE_",
    "_PARTITION",
    "_ROW_TIMESTAMP",
    "__ROOT__",
    "_COLIDENTIFIER",
    "_CHANGE_SEQUENCE_NUMBER",
    "_CHANGE_TYPE",
    "_CHANGE_TIMESTAMP",
)
"""Prefixes BigQuery refuses in a column name (compared ignoring case, like its names)."""
_RENAMED_PREFIX = "_FIELD_"  # allowed by BigQuery, but a query renames the column (_field_1)


def _column_char_ok(char: str) -> bool:
    category = unicodedata.category(char)
    return (
        category[0] in _COLUMN_CATEGORIES
        or category in _COLUMN_EXACT_CATEGORIES
        or char in _COLUMN_SYMBOLS
    )


def suggest_column_name(name: str) -> str:
    """A name close to ``name`` that :func:`validate_column` accepts (for error messages).

    A run of refused characters becomes ``_`` between two other characters and disappears
    next to a space or at either end (``sepal length (cm)`` -> ``sepal length cm``, ``a.b``
    -> ``a_b``); a reserved prefix gets ``c`` in front; the result is cut to 300 characters.
    """
    text = str(name)
    out: list[str] = []
    i = 0
    while i < len(text):
        j = i
        while j < len(text) and not _column_char_ok(text[j]):
            j += 1
        if j == i:
            out.append(text[i])
            i += 1
            continue
        edge = i == 0 or j == len(text) or text[i - 1].isspace() or text[j].isspace()
        out.append("" if edge else "_")
        i = j
    result = "".join(out).strip() or "column"
    if result.upper().startswith((*RESERVED_COLUMN_PREFIXES, _RENAMED_PREFIX)):
        result = "c" + result
    return result[:COLUMN_NAME_MAX]


def column_name_problem(name: object) -> str | None:
    r"""Why ``name`` is not a column name BigQuery accepts, or None when it is.

    The rule is BigQuery's *flexible column names* (documented under "Column names" in
    "Specify a schema"): 1 to 300 characters, each a letter, mark or number of any script
    (Unicode ``\p{L}``, ``\p{M}``, ``\p{N}``), a connector such as ``_`` (``\p{Pc}``), a
    dash (``\p{Pd}``), a space (``\p{Zs}``) or one of ``& % = + : ' < > # |``; none of the
    reserved prefixes :data:`RESERVED_COLUMN_PREFIXES`. So ``my feature``, ``größe``,
    ``2nd-try`` and ``a&b`` are names, and ``a.b``, ``x(cm)``, ``a/b``, ``"q"``, ``@p``,
    ``a`b``, tabs and line breaks are not. ``_field_...`` is refused too: BigQuery accepts it
    but renames it in every query result (``_field_1``), so the splits would lose the column.

    Quotes of either SQL style (backquote, double quote) and the backslash are never part of
    a name, so a name written between backquotes (BigQuery) or double quotes (DuckDB) is
    always one identifier.
    """
    if not isinstance(name, str) or not name:
        return "a column name must be non-empty text"
    if len(name) > COLUMN_NAME_MAX:
        return f"it has {len(name)} characters; BigQuery allows at most {COLUMN_NAME_MAX}"
    bad = sorted({c for c in name if not _column_char_ok(c)})
    if bad:
        shown = " ".join(repr(c) for c in bad)
        return (
            f"BigQuery column names cannot contain {shown} (allowed: letters, marks and digits "
            "of any script, underscores, dashes, spaces and & % = + : ' < > # |)"
        )
    upper = name.upper()
    for prefix in RESERVED_COLUMN_PREFIXES:
        if upper.startswith(prefix):
            return f"BigQuery reserves the prefix {prefix} for its own columns"
    if upper.startswith(_RENAMED_PREFIX):
        return "BigQuery renames columns starting with _field_ in query results (_field_1)"
    return None


def validate_column(name: str) -> str:
    """Return ``name`` if BigQuery accepts it as a column name (see :func:`column_name_problem`).

    Raises:
        PipelineInputError: naming the column, what is wrong and a name that would do.
    """
    problem = column_name_problem(name)
    if problem is not None:
        if isinstance(name, str) and name:
            fix = f"; rename the column, e.g. to {suggest_column_name(name)!r}"
        else:
            fix = ""
        raise PipelineInputError(f"invalid column name {name!r}: {problem}{fix}")
    return name


def check_column_names(names: Iterable[str], table: str) -> list[str]:
    """Every problem of a table's column names, one line each (empty when all are fine).

    Each name must pass :func:`validate_column`, and no two may be equal ignoring case:
    BigQuery and DuckDB compare column names case-insensitively (``Column1`` is ``column1``).

    Args:
        names: the table's column names.
        table: the table, for the messages.
    """
    problems = []
    seen: dict[str, str] = {}
    for name in names:
        try:
            validate_column(name)
        except PipelineInputError as err:
            problems.append(f"table {table}: {err}")
            continue
        folded = name.casefold()
        if folded in seen:
            problems.append(
                f"table {table}: columns {seen[folded]!r} and {name!r} differ only in case; "
                "BigQuery and DuckDB treat them as one column: rename one"
            )
        else:
            seen[folded] = name
    return problems


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
