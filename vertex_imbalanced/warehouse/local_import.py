"""Local sources for ``run_local.py``: the run's work database, and every check of the input.

A local run never writes into the user's data. What the user names is copied into a work
database of the run, ``<work_dir>/source.duckdb`` (table ``source``), which also receives the
split tables:

- a CSV file is imported with DuckDB's ``read_csv_auto``; the missing-value markers
  (:data:`~vertex_imbalanced.config.DEFAULT_NA_VALUES` unless changed) read as NULL, and a
  label DuckDB would type BOOLEAN (``yes``/``no``) keeps its text;
- a Parquet file is imported as is;
- a DuckDB table (``duckdb:///abs/file.db?table=[schema.]name``, parsed by
  :func:`~vertex_imbalanced.reading.sources.duckdb_source.parse_duckdb_uri`) is copied from
  the user's file, which is attached read-only (its bytes never change);
- no source: the deterministic demo table is written into ``<work_dir>/demo.duckdb``.

Files are first written under a temporary name (:class:`StagedSource`); :func:`check_source`
then finds every problem of the table at once (missing or unusable columns, empty columns,
label values) and only an accepted table is moved into place, so a refused input leaves
nothing behind. Feature roles come from the table's Arrow schema and
:func:`vertex_imbalanced.reading.schema.infer_feature_spec`; classes from
:func:`vertex_imbalanced.warehouse.prepare.check_labels` (the rules the prepare step applies).
"""

from __future__ import annotations

import dataclasses
import difflib
import urllib.parse
from collections.abc import Mapping, Sequence
from pathlib import Path

import duckdb
import pyarrow as pa

from vertex_imbalanced.config import DEFAULT_NA_VALUES, FeatureSpec
from vertex_imbalanced.errors import PipelineInputError
from vertex_imbalanced.reading.schema import (
    bigquery_type_name,
    is_categorical_type,
    is_label_type,
    is_numeric_type,
    is_string_type,
)
from vertex_imbalanced.reading.sources.duckdb_source import duckdb_uri, parse_duckdb_uri
from vertex_imbalanced.warehouse.duckdb_settings import connect as connect_duckdb
from vertex_imbalanced.warehouse.identifiers import validate_column

SOURCE_DB = "source.duckdb"
SOURCE_TABLE = "source"
ROW_KEY = "row_key"
DEMO_DB = "demo.duckdb"
DEMO_TABLE = "demo"
FILE_READERS = {".csv": "read_csv_auto", ".parquet": "read_parquet"}
SOURCE_FORMS = "a .csv or .parquet file, or duckdb:///absolute/path.db?table=[schema.]name"
STAGING_SUFFIX = ".staging"
NUMERIC_TEXT_SHARE = 0.5
"""A text column is reported when more than this share of its values are numbers."""


def _quote(name: str) -> str:
    """A DuckDB identifier, quoted (any column name the table holds)."""
    return '"' + name.replace('"', '""') + '"'


# ----------------------------------------------------------------------------- staging
@dataclasses.dataclass
class StagedSource:
    """A table written under a temporary name in the work directory, not yet accepted.

    Attributes:
        staging: the temporary database file holding ``table``.
        final: where :meth:`commit` moves it.
        table: the table in it.
        description: what the user named, for messages and the summary.
    """

    staging: Path
    final: Path
    table: str
    description: str

    def connect(self) -> duckdb.DuckDBPyConnection:
        """A read-only connection to the staged database."""
        return connect_duckdb(str(self.staging), read_only=True)

    def commit(self) -> str:
        """Move the staged database into place; return the table's DuckDB URI."""
        self.staging.replace(self.final)
        return duckdb_uri(self.final, self.table)

    def discard(self) -> None:
        """Delete the staged database (a refused input leaves nothing behind)."""
        self.staging.unlink(missing_ok=True)
        Path(str(self.staging) + ".wal").unlink(missing_ok=True)


def _staging(work_dir: Path, name: str) -> tuple[Path, Path]:
    final = Path(work_dir) / name
    staging = final.with_name(final.name + STAGING_SUFFIX)
    staging.unlink(missing_ok=True)
    return staging, final


def _csv_options(path: Path, na_values: Sequence[str], label: str | None) -> dict:
    """``read_csv_auto`` options: NULL markers, and the label kept as text if sniffed BOOLEAN."""
    options: dict = {"nullstr": list(dict.fromkeys(["", *na_values]))}
    with connect_duckdb() as con:
        types = dict(
            (row[0], row[1])
            for row in con.execute(
                "DESCRIBE SELECT * FROM read_csv_auto(?, nullstr=?)",
                [str(path), options["nullstr"]],
            ).fetchall()
        )
    if label is not None and types.get(label) == "BOOLEAN":
        options["types"] = {label: "VARCHAR"}
    return options


def import_file(
    path: str | Path,
    work_dir: str | Path,
    *,
    add_key: bool,
    na_values: Sequence[str] = DEFAULT_NA_VALUES,
    label: str | None = None,
) -> str:
    """Load a CSV or Parquet file into ``<work_dir>/source.duckdb``, table ``source``.

    The database is written under a temporary name and renamed into place, so a failed
    import leaves no half-written file (and replaces the previous import only on success).
    Arguments and errors as :func:`load_file`.

    Returns:
        The DuckDB URI of the imported table.
    """
    staging, final = _staging(Path(work_dir), SOURCE_DB)
    load_file(path, staging, add_key=add_key, na_values=na_values, label=label)
    return StagedSource(staging, final, SOURCE_TABLE, str(path)).commit()


def load_file(
    path: str | Path,
    db: str | Path,
    *,
    add_key: bool,
    na_values: Sequence[str] = DEFAULT_NA_VALUES,
    label: str | None = None,
) -> None:
    """Load a CSV or Parquet file into a new DuckDB file ``db``, table ``source``.

    Args:
        path: ``.csv`` (types detected by DuckDB's ``read_csv_auto``) or ``.parquet`` file.
        db: database file to create (must not exist).
        add_key: add a ``row_key`` VARCHAR column numbering the rows ``"1", "2", ...`` in file
            order (the deterministic split needs a unique key).
        na_values: CSV text read as NULL (the empty field always is).
        label: the label column; in a CSV, a label DuckDB would type BOOLEAN keeps its text
            (``yes``/``no`` stay the class names).

    Raises:
        PipelineInputError: the file does not exist, has another suffix, or DuckDB cannot read
            it (names the file and DuckDB's reason).
    """
    path = Path(path)
    reader = FILE_READERS.get(path.suffix.lower())
    if reader is None:
        raise PipelineInputError(f"unknown source file {str(path)!r}: use {SOURCE_FORMS}")
    if not path.is_file():
        raise PipelineInputError(f"source file {str(path)!r} does not exist")
    key = f", CAST(row_number() OVER () AS VARCHAR) AS {ROW_KEY}" if add_key else ""
    try:
        params: list = [str(path)]
        call = f"{reader}(?)"
        if reader == "read_csv_auto":
            options = _csv_options(path, na_values, label)
            call = f"{reader}(?, {', '.join(f'{name}=?' for name in options)})"
            params += list(options.values())
        with connect_duckdb(str(db)) as con:
            con.execute(f"CREATE TABLE {SOURCE_TABLE} AS SELECT *{key} FROM {call}", params)
    except duckdb.Error as err:
        Path(db).unlink(missing_ok=True)
        raise PipelineInputError(f"cannot read source file {str(path)!r}: {err}") from err


def copy_duckdb_table(uri: str, db: str | Path) -> None:
    """Copy a table of the user's DuckDB file into a new database ``db``, table ``source``.

    The user's file is attached read-only: it is never written (its bytes stay the same).

    Raises:
        PipelineInputError: bad URI, missing file or table, or a file DuckDB cannot open
            (e.g. another process holds it open for writing).
    """
    path, ref = parse_duckdb_uri(uri)
    if not Path(path).is_file():
        raise PipelineInputError(f"DuckDB file {path} does not exist ({uri})")
    try:
        with connect_duckdb(str(db)) as con:
            con.execute("ATTACH ? AS user_source (READ_ONLY)", [path])
            found = con.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_catalog = "
                "'user_source' AND table_schema = ? AND table_name = ?",
                [ref.dataset or "main", ref.table],
            ).fetchone()[0]
            if not found:
                raise PipelineInputError(f"table {ref} does not exist in {path} ({uri})")
            schema = _quote(ref.dataset or "main")
            con.execute(
                f"CREATE TABLE {SOURCE_TABLE} AS "
                f"SELECT * FROM user_source.{schema}.{_quote(ref.table)}"
            )
            con.execute("DETACH user_source")
    except duckdb.Error as err:
        Path(db).unlink(missing_ok=True)
        raise PipelineInputError(f"cannot read DuckDB file {path} ({uri}): {err}") from err
    except PipelineInputError:
        Path(db).unlink(missing_ok=True)
        raise


def split_source(source: str) -> tuple[str, Path | None]:
    """(``"duckdb"`` or ``"file"``, file path or None) of a ``--source`` value.

    Raises:
        PipelineInputError: neither form.
    """
    parsed = urllib.parse.urlsplit(source)
    if parsed.scheme == "duckdb":
        return "duckdb", None
    if parsed.scheme in ("", "file") and Path(parsed.path).suffix.lower() in FILE_READERS:
        return "file", Path(urllib.parse.unquote(parsed.path))
    raise PipelineInputError(f"unknown --source {source!r}: use {SOURCE_FORMS}")


def stage_source(
    source: str,
    work_dir: str | Path,
    *,
    key: str | None,
    label: str | None = None,
    na_values: Sequence[str] = DEFAULT_NA_VALUES,
) -> StagedSource:
    """Copy the user's ``--source`` into a staged work database (see the module docstring).

    Args:
        source: a ``.csv`` / ``.parquet`` path (or ``file:`` URL), or a DuckDB URI.
        work_dir: existing directory of the run.
        key: the key column; a file without one gets ``row_key``.
        label: the label column (a CSV's yes/no label keeps its text).
        na_values: CSV missing-value markers.

    Raises:
        PipelineInputError: unknown form, bad URI, missing file or table, unreadable file.
    """
    kind, path = split_source(source)
    final = Path(work_dir).resolve() / SOURCE_DB
    named = Path(parse_duckdb_uri(source).path if kind == "duckdb" else path).resolve()
    if named in (final, final.with_name(final.name + STAGING_SUFFIX)):
        raise PipelineInputError(
            f"--source {source!r} is the work database this run replaces; copy it elsewhere or "
            "pass another --output-dir"
        )
    staging, final = _staging(Path(work_dir), SOURCE_DB)
    if kind == "duckdb":
        copy_duckdb_table(source, staging)
    else:
        load_file(path, staging, add_key=not key, na_values=na_values, label=label)
    return StagedSource(staging, final, SOURCE_TABLE, source)


def stage_demo(work_dir: str | Path, rows: int, seed: int) -> StagedSource:
    """Write the demo table into a staged ``<work_dir>/demo.duckdb``.

    Raises:
        PipelineInputError: ``rows`` < 1.
    """
    from vertex_imbalanced.warehouse.demo_data import write_demo_duckdb

    if rows <= 0:
        raise PipelineInputError(f"--rows must be > 0, got {rows}")
    staging, final = _staging(Path(work_dir), DEMO_DB)
    write_demo_duckdb(staging, rows=rows, seed=seed, table=DEMO_TABLE)
    return StagedSource(staging, final, DEMO_TABLE, f"demo data ({rows} rows)")


# ----------------------------------------------------------------------------- checks
@dataclasses.dataclass(frozen=True)
class DataRequest:
    """What the user asked of the table (``run_local.py`` options and feature-config file).

    Attributes:
        label, key: the label and row-key columns (None: not given).
        features: feature columns whose roles come from their types (None: see below).
        numeric, categorical: roles fixed by a feature-config file.
        ignored: columns left out.
        classes: class names in id order (empty: inferred from the train split).
        label_policy: ``error`` or ``skip`` for NULL / unknown labels.
        na_values: CSV missing-value markers (used at import; kept in the spec).
        split_ratios: train, validation, test shares (the train split decides the classes).

    Without ``features``, ``numeric`` or ``categorical`` every other column (not label, key
    or ignored) is a feature with the role its type gives.
    """

    label: str | None
    key: str | None
    features: tuple[str, ...] | None = None
    numeric: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()
    ignored: tuple[str, ...] = ()
    classes: tuple[str, ...] = ()
    label_policy: str = "error"
    na_values: tuple[str, ...] = DEFAULT_NA_VALUES
    split_ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)


@dataclasses.dataclass(frozen=True)
class SourceCheck:
    """Outcome of :func:`check_source`.

    Attributes:
        spec: the full feature spec (every role, the classes) or None when there are problems.
        problems: one line per problem that stops the run.
        warnings: one line per thing the user should know (the run goes on).
        label_counts: rows per class in the whole table (empty if the label is unusable).
        skipped: rows whose label is NULL or outside the classes (``label_policy`` skip).
        types: column -> its BigQuery type name (``FLOAT64``, ``STRING``, ``BOOL``, ...).
        id_like: columns left out because they look like row ids -> train rows
            (:mod:`vertex_imbalanced.warehouse.data_checks`); they are in ``spec.ignored``.
    """

    spec: FeatureSpec | None
    problems: tuple[str, ...]
    warnings: tuple[str, ...]
    label_counts: dict[str, int] = dataclasses.field(default_factory=dict)
    skipped: int = 0
    types: dict[str, str] = dataclasses.field(default_factory=dict)
    id_like: dict[str, int] = dataclasses.field(default_factory=dict)


def _missing(name: str, option: str, names: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"{option}: the table has no column {name!r}{hint} (columns: {', '.join(names)})"


def _named_columns(request: DataRequest, names: Sequence[str], problems: list[str]) -> None:
    """Problems of the named columns: required ones not given, names not in the table."""
    if not request.label:
        problems.append("--label: required (the label column)")
    if not request.key:
        problems.append("--key: required (a unique row key column)")
    options = [
        ("--label", [request.label] if request.label else []),
        ("--key", [request.key] if request.key else []),
        ("--features", list(request.features or ())),
        ("feature config 'numeric'", list(request.numeric)),
        ("feature config 'categorical'", list(request.categorical)),
        ("--ignore", list(request.ignored)),
    ]
    for option, columns in options:
        problems.extend(_missing(c, option, names) for c in columns if c not in names)


def _roles(
    request: DataRequest, schema: pa.Schema, problems: list[str]
) -> tuple[list[str], list[str]]:
    """(numeric, categorical) feature columns; unusable types and names become problems."""
    taken = {request.label, request.key, *request.ignored}
    fixed = {**dict.fromkeys(request.numeric, "numeric")}
    fixed.update(dict.fromkeys(request.categorical, "categorical"))
    if request.features is not None or fixed:
        chosen = [*(request.features or ()), *fixed]
    else:
        chosen = [n for n in schema.names if n not in taken]
    numeric: list[str] = []
    categorical: list[str] = []
    for name in dict.fromkeys(chosen):
        if name not in schema.names or name in (request.label, request.key):
            continue
        t = schema.field(name).type
        try:
            validate_column(name)
        except PipelineInputError as err:
            problems.append(f"{err}, or leave it out with --ignore {name!r}")
            continue
        role = fixed.get(name) or ("categorical" if is_string_type(t) else "numeric")
        fits = is_numeric_type(t) if role == "numeric" else is_categorical_type(t)
        if not (is_numeric_type(t) or is_string_type(t)):
            problems.append(
                f"column {name!r} has unsupported type {bigquery_type_name(t)} ({t}); "
                f"leave it out with --ignore {name}"
            )
        elif not fits:
            problems.append(
                f"column {name!r} is {bigquery_type_name(t)} and cannot be {role}; "
                "change its role in the feature config"
            )
        else:
            (numeric if role == "numeric" else categorical).append(name)
    if not numeric and not categorical and not problems:
        problems.append("the table has no feature columns besides the label and the key")
    return numeric, categorical


def _empty_columns(
    con: duckdb.DuckDBPyConnection, table: str, columns: Sequence[str], problems: list[str]
) -> int:
    """Rows of the table; a problem per listed column that is NULL in every row."""
    counts = ", ".join(f"count({_quote(c)})" for c in columns)
    row = con.execute(f"SELECT count(*){', ' + counts if counts else ''} FROM {table}").fetchone()
    rows = row[0]
    if rows == 0:
        problems.append("the table is empty")
        return 0
    for name, n in zip(columns, row[1:], strict=True):
        if n == 0:
            problems.append(
                f"column {name!r} is empty (NULL in all {rows} rows); leave it out with "
                f"--ignore {name}"
            )
    return rows


def numeric_text_warnings(
    con: duckdb.DuckDBPyConnection, table: str, columns: Sequence[str]
) -> list[str]:
    """One line per text column whose values are mostly numbers (a categorical feature else).

    A value counts as a number if DuckDB reads it as a DOUBLE, directly or with its decimal
    comma replaced by a point (``1,5``: a ``;``-separated CSV from a decimal-comma locale).
    The line names the column, the share, and the most frequent values that are not numbers
    (missing-value markers ``--na-values`` does not list yet, e.g. ``?``).
    """
    lines = []
    for name in columns:
        c = _quote(name)
        n, plain, comma = con.execute(
            f"SELECT count({c}), count(TRY_CAST({c} AS DOUBLE)), "
            f"count(TRY_CAST(replace({c}, ',', '.') AS DOUBLE)) FROM {table}"
        ).fetchone()
        numbers = max(plain, comma)
        if not n or numbers <= NUMERIC_TEXT_SHARE * n:
            continue
        line = f"column {name!r} is text but {numbers} of its {n} values are numbers"
        if comma > plain:
            example = con.execute(
                f"SELECT {c} FROM {table} WHERE TRY_CAST({c} AS DOUBLE) IS NULL AND "
                f"TRY_CAST(replace({c}, ',', '.') AS DOUBLE) IS NOT NULL LIMIT 1"
            ).fetchone()[0]
            line += (
                f" with a decimal comma (e.g. {example!r}); it would be a categorical feature: "
                "write the file with decimal points, or leave it out with --ignore " + name
            )
        others = con.execute(
            f"SELECT {c}, count(*) FROM {table} WHERE {c} IS NOT NULL AND "
            f"TRY_CAST(replace({c}, ',', '.') AS DOUBLE) IS NULL GROUP BY 1 ORDER BY 2 DESC, 1 "
            "LIMIT 3"
        ).fetchall()
        if others:
            listed = ", ".join(f"{v!r} ({k} rows)" for v, k in others)
            line += (
                f"; not numbers: {listed}: if they mean 'missing', add them to --na-values "
                "(and the column becomes numeric)"
            )
        lines.append(line)
    return lines


def _label_check(
    staged: StagedSource,
    request: DataRequest,
    schema: pa.Schema,
    problems: list[str],
    warnings: list[str],
) -> tuple[tuple[str, ...], dict[str, int], int]:
    """(classes, rows per class, skipped rows); label problems and warnings appended."""
    from vertex_imbalanced.warehouse.engines import DuckDBWarehouse
    from vertex_imbalanced.warehouse.prepare import (
        LABEL_FIX,
        check_labels,
        label_stats,
        split_boundaries,
    )

    label_type = schema.field(request.label).type
    if not is_label_type(label_type):
        problems.append(
            f"--label: column {request.label!r} is {bigquery_type_name(label_type)}; labels "
            "must be text, integers or booleans"
        )
        return (), {}, 0
    try:
        bounds = split_boundaries(request.split_ratios)
        spec = FeatureSpec(
            label=request.label,
            key=request.key,
            classes=request.classes,
            label_policy=request.label_policy,
        )
        with DuckDBWarehouse(staged.staging, read_only=True) as warehouse:
            stats = label_stats(warehouse, staged.table, spec, bounds)
        checked = check_labels(staged.description, stats, spec, label_type)
    except PipelineInputError as err:
        problems.append(str(err))
        return (), {}, 0
    if request.label_policy == "error":
        problems.extend(f"{line}: {LABEL_FIX}" for line in checked.problems)
    counts = dict.fromkeys(checked.classes, 0)
    train: dict[str, int] = dict.fromkeys(checked.classes, 0)
    for row in stats:
        if row["label_value"] in counts:
            counts[row["label_value"]] += row["row_count"]
            if row["split"] == "train":
                train[row["label_value"]] += row["row_count"]
    present = [c for c, n in train.items() if n]
    if len(present) < 2 and not problems:
        problems.append(
            f"--label: the train split has {len(present)} class(es) {present} in column "
            f"{request.label!r}; a classifier needs at least two"
        )
    for name, n in train.items():
        if n == 0:
            warnings.append(f"class {name!r} has no training rows ({counts[name]} rows in all)")
    return checked.classes, counts, sum(checked.skipped.values())


def check_source(staged: StagedSource, request: DataRequest) -> SourceCheck:
    """Every problem of the staged table for this request, found in one pass.

    Checks, each reported once per column or value: the label and key are given and exist,
    every named column exists (with the closest name), feature names are usable and their
    types fit their roles, no feature column and not the table is empty, the label's type and
    values (NULLs, values outside the declared classes, at least two classes in the train
    split). Warnings: text columns holding mostly numbers, classes without training rows.

    Returns:
        The full spec (roles of every feature, classes in id order) when there is no
        problem; the problems and warnings as lines.
    """
    problems: list[str] = []
    warnings: list[str] = []
    with staged.connect() as con:
        schema = con.sql(f"SELECT * FROM {_quote(staged.table)} LIMIT 0").to_arrow_table().schema
        names = list(schema.names)
        _named_columns(request, names, problems)
        if request.key and request.key in names:
            try:
                validate_column(request.key)
            except PipelineInputError as err:
                problems.append(f"--key: {err}")
        label_ok = bool(request.label) and request.label in names
        if label_ok:
            try:
                validate_column(request.label)
            except PipelineInputError as err:
                problems.append(f"--label: {err}")
                label_ok = False
        numeric, categorical = _roles(request, schema, problems)
        table = _quote(staged.table)
        rows = _empty_columns(con, table, [*numeric, *categorical], problems)
        text = [c for c in categorical if is_string_type(schema.field(c).type)]
        warnings += numeric_text_warnings(con, table, text)
    classes: tuple[str, ...] = ()
    counts: dict[str, int] = {}
    skipped = 0
    id_like: dict[str, int] = {}
    if label_ok and request.key in names and rows:
        classes, counts, skipped = _label_check(staged, request, schema, problems, warnings)
        inferred = request.features is None and not request.numeric and not request.categorical
        features = [*numeric, *categorical] if inferred else []
        id_like = _key_and_id_checks(staged, request, schema, features, warnings, problems)
    if problems:
        return SourceCheck(None, tuple(problems), tuple(warnings))
    spec = FeatureSpec(
        label=request.label,
        numeric=tuple(c for c in numeric if c not in id_like),
        categorical=tuple(c for c in categorical if c not in id_like),
        key=request.key,
        classes=classes,
        ignored=(*request.ignored, *id_like),
        label_policy=request.label_policy,
        na_values=request.na_values,
    )
    types = {field.name: bigquery_type_name(field.type) for field in schema}
    return SourceCheck(spec, (), tuple(warnings), counts, skipped, types, id_like)


def _key_and_id_checks(
    staged: StagedSource,
    request: DataRequest,
    schema: pa.Schema,
    features: Sequence[str],
    warnings: list[str],
    problems: list[str],
) -> dict[str, int]:
    """Key warnings and the id-like columns among ``features`` (the inferred ones).

    Returns:
        ``{column: train rows}`` of the id-like columns (a warning line each); a problem when
        every feature is id-like.
    """
    from vertex_imbalanced.warehouse.data_checks import (
        id_like_columns,
        id_like_line,
        key_stats,
        key_warnings,
    )
    from vertex_imbalanced.warehouse.engines import DuckDBWarehouse
    from vertex_imbalanced.warehouse.prepare import label_stats, split_boundaries

    try:
        bounds = split_boundaries(request.split_ratios)
    except PipelineInputError:
        return {}  # reported by the label check
    spec = FeatureSpec(label=str(request.label), key=request.key)
    with DuckDBWarehouse(staged.staging, read_only=True) as warehouse:
        keys = key_stats(warehouse, staged.table, str(request.key))
        stats = label_stats(warehouse, staged.table, spec, bounds, keys.null_keys > 0)
        keys = keys.with_splits(stats)
        warnings += key_warnings(staged.description, str(request.key), keys)
        id_like = id_like_columns(
            warehouse, staged.table, schema, features, str(request.key), bounds[0]
        )
    for name, rows in id_like.items():
        warnings.append(id_like_line(name, bigquery_type_name(schema.field(name).type), rows))
    if id_like and not set(features) - set(id_like):
        problems.append(
            f"every feature column looks like a row id ({', '.join(map(repr, id_like))}); "
            "list the features with --features or in a feature config"
        )
    return id_like


def describe_roles(
    spec: FeatureSpec,
    types: Mapping[str, str] | None = None,
    id_like: Mapping[str, int] | None = None,
) -> list[str]:
    """One line per column and its role: label, key, numeric, categorical, ignored.

    Args:
        spec: the roles.
        types: column -> type name, shown after the name when given (``Age (INT64)``).
        id_like: ignored columns that look like row ids (``SourceCheck.id_like``): their
            line says so.
    """

    def typed(name: str) -> str:
        if not types or name not in types:
            return name
        return f"{name} ({types[name]})"

    lines = [f"label: {typed(spec.label)}", f"key: {typed(spec.key)}"]
    lines += [f"numeric: {typed(c)}" for c in spec.numeric]
    lines += [f"categorical: {typed(c)}" for c in spec.categorical]
    lines += [
        f"ignored: {c} (looks like a row id)" if c in (id_like or {}) else f"ignored: {c}"
        for c in spec.ignored
    ]
    return lines
