"""Arrow column types -> feature roles and tf dtypes; schema checks before any data is read.

BigQuery types arrive over the Storage Read API as Arrow types:

| BigQuery   | Arrow                  | role allowed            | tensor in the dataset              |
|------------|------------------------|-------------------------|------------------------------------|
| INT64      | int64                  | numeric, categorical, label | float32 / string / int64 label |
| FLOAT64    | double                 | numeric                 | float32 (NULL -> NaN)              |
| NUMERIC    | decimal128             | numeric                 | float32                            |
| BOOL       | bool                   | numeric, categorical, label | float32 0/1 / "true","false"   |
| STRING     | string                 | categorical, label      | string (NULL -> "")                |
| DATE       | date32                 | numeric                 | float32 days since 1970-01-01      |
| TIMESTAMP  | timestamp[us, tz=UTC]  | numeric                 | float32 days since epoch           |
| STRUCT, ARRAY, BYTES, GEOGRAPHY, JSON | -     | unsupported (SchemaError naming the column) |
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

from vertex_imbalanced.config import FeatureSpec
from vertex_imbalanced.errors import LabelError, SchemaError
from vertex_imbalanced.warehouse.identifiers import require_columns


def is_numeric_type(t: pa.DataType) -> bool:
    """True for types read as a float32 numeric feature."""
    return (
        pa.types.is_integer(t)
        or pa.types.is_floating(t)
        or pa.types.is_boolean(t)
        or pa.types.is_decimal(t)
        or pa.types.is_date(t)
        or pa.types.is_timestamp(t)
    )


def is_string_type(t: pa.DataType) -> bool:
    """True for string columns (regular or large)."""
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def is_categorical_type(t: pa.DataType) -> bool:
    """True for types usable as a categorical feature (one-hot via string lookup)."""
    return is_string_type(t) or pa.types.is_integer(t) or pa.types.is_boolean(t)


def is_label_type(t: pa.DataType) -> bool:
    """True for label column types: STRING, INT64 (any integer) or BOOL."""
    return is_string_type(t) or pa.types.is_integer(t) or pa.types.is_boolean(t)


def _is_unsupported(t: pa.DataType) -> bool:
    return not (is_numeric_type(t) or is_string_type(t))


def bigquery_type_name(t: pa.DataType) -> str:
    """Best-effort BigQuery name of an Arrow type, for error messages."""
    if pa.types.is_struct(t):
        return "STRUCT"
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return "ARRAY"
    if pa.types.is_floating(t):
        return "FLOAT64"
    if pa.types.is_integer(t):
        return "INT64"
    if is_string_type(t):
        return "STRING"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return "BYTES"
    if pa.types.is_boolean(t):
        return "BOOL"
    if pa.types.is_date(t):
        return "DATE"
    if pa.types.is_timestamp(t):
        return "TIMESTAMP"
    if pa.types.is_decimal(t):
        return "BIGNUMERIC" if pa.types.is_decimal256(t) else "NUMERIC"
    return str(t).upper()


def check_feature_types(
    description: str, schema: pa.Schema, numeric: Sequence[str], categorical: Sequence[str]
) -> None:
    """Check that feature columns (present in ``schema``) have a type fit for their role.

    The one rule for training, evaluation, scoring and monitoring.

    Raises:
        SchemaError: a numeric feature whose type is not numeric (e.g. STRING), or a categorical
            one that is not STRING, INT64 or BOOL; the message names the column and the table.
    """
    for name in numeric:
        t = schema.field(name).type
        if not is_numeric_type(t):
            raise SchemaError(
                f"column {name!r} of {description} is {bigquery_type_name(t)} but is listed as "
                "numeric (the model reads it as a number); list it as categorical or cast it "
                "in SQL"
            )
    for name in categorical:
        t = schema.field(name).type
        if not is_categorical_type(t):
            raise SchemaError(
                f"column {name!r} of {description} is {bigquery_type_name(t)} but is listed as "
                "categorical (the model reads it as a category); use STRING, INT64 or BOOL"
            )


def check_schema(description: str, schema: pa.Schema, spec: FeatureSpec) -> None:
    """Check that every column the spec reads exists and has a type fit for its role.

    Raises:
        SchemaError: a column is missing (with the closest name), unsupported (STRUCT/ARRAY/...),
            or has a type its role cannot use (e.g. STRING listed as numeric).
        LabelError: the label column is not STRING, INT64 or BOOL (e.g. a FLOAT64 label).
    """
    names = list(schema.names)
    require_columns(description, list(spec.read_columns), names)
    for name in spec.read_columns:
        t = schema.field(name).type
        if _is_unsupported(t):
            raise SchemaError(
                f"column {name!r} of {description} has unsupported type {bigquery_type_name(t)} "
                f"({t}); supported: INT64, FLOAT64, NUMERIC, BOOL, STRING, DATE, TIMESTAMP"
            )
    check_feature_types(description, schema, spec.numeric, spec.categorical)
    label_type = schema.field(spec.label).type
    if not is_label_type(label_type):
        raise LabelError(
            f"label column {spec.label!r} of {description} is {bigquery_type_name(label_type)}; "
            "labels must be STRING, INT64 or BOOL (classes are their distinct values)"
        )
    if spec.weight is not None and not is_numeric_type(schema.field(spec.weight).type):
        raise SchemaError(f"weight column {spec.weight!r} of {description} is not numeric")


def infer_feature_spec(
    schema: pa.Schema,
    label: str,
    *,
    key: str | None = None,
    ignored: tuple[str, ...] = (),
    classes: tuple[str, ...] = (),
) -> FeatureSpec:
    """Default feature roles from the schema: strings categorical, other scalars numeric.

    The label, key and ignored columns are left out; unsupported columns must be listed in
    ``ignored`` (an error names them otherwise).
    """
    require_columns("the table", [label, *([key] if key else []), *ignored], list(schema.names))
    numeric: list[str] = []
    categorical: list[str] = []
    for field in schema:
        if field.name in {label, key, *ignored}:
            continue
        if is_string_type(field.type):
            categorical.append(field.name)
        elif is_numeric_type(field.type):
            numeric.append(field.name)
        else:
            raise SchemaError(
                f"column {field.name!r} has unsupported type {bigquery_type_name(field.type)}; "
                "list it under 'ignored' in the feature config"
            )
    return FeatureSpec(
        label=label,
        numeric=tuple(numeric),
        categorical=tuple(categorical),
        key=key,
        ignored=tuple(ignored),
        classes=classes,
    )
