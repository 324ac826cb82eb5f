"""The data-preparation step: validate the source, split it, downsample + weight the train split.

Everything is checked before any table is written (table, columns, types, emptiness, labels);
the three output tables are then written atomically (one DuckDB transaction; on BigQuery the
tables written so far are deleted on failure). Validation and test keep the original class
distribution and have no weight column; the train table gets ``sample_weight``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from vertex_imbalanced.config import WEIGHT_COLUMN, FeatureSpec, ImbalanceConfig
from vertex_imbalanced.errors import LabelError, PipelineInputError, SchemaError
from vertex_imbalanced.reading.schema import (
    bigquery_type_name,
    check_schema,
    infer_feature_spec,
    is_string_type,
)
from vertex_imbalanced.warehouse import rebalance as imb
from vertex_imbalanced.warehouse.data_checks import (
    KeyStats,
    id_like_columns,
    id_like_line,
    key_stats,
    key_warnings,
    numeric_text_warnings,
    without_null_key_spread,
)
from vertex_imbalanced.warehouse.engines import (
    Warehouse,
    check_split_key,
    load_sql,
    open_warehouse,
    render,
    source_table,
)
from vertex_imbalanced.warehouse.identifiers import TableRef

_LOG = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
SPLIT_BUCKETS = 10_000
"""Hash buckets of the split (sql/split.sql): ratios are honoured to 1/10000."""
KEEP_SALT = "keep:"
"""Prefix of the key for the downsampling hash, so keeping is independent of the split."""


@dataclasses.dataclass(frozen=True)
class PreparedData:
    """Output of :func:`prepare_data`, passed between components as JSON.

    Attributes:
        train_uri: downsampled, weighted train table (has ``WEIGHT_COLUMN``).
        validation_uri: validation table (original distribution, no weight column).
        test_uri: test table (original distribution, no weight column).
        classes: class names in class-id order.
        spec: feature spec of the source columns (features inferred if none were given).
        split_counts: rows per split and class in the source, before downsampling.
        imbalance: ``ImbalanceReport.to_dict()`` of the train table.
        skipped_labels: rows left out per split because their label is NULL or outside the
            classes (``label_policy="skip"``; all zero under ``"error"``).
        feature_statistics: statistics of the un-downsampled train split
            (:func:`vertex_imbalanced.monitoring.statistics.training_statistics`), stored with
            the model as the skew/drift baseline; None when not computed.
        data_checks: what :mod:`vertex_imbalanced.warehouse.data_checks` found: ``key``
            (``KeyStats.to_dict()``: rows, distinct keys, NULL keys and where they went),
            ``id_like`` (column -> train rows, left out of inferred features) and ``warnings``
            (the lines logged).
    """

    train_uri: str
    validation_uri: str
    test_uri: str
    classes: tuple[str, ...]
    spec: FeatureSpec
    split_counts: dict[str, dict[str, int]]
    imbalance: dict[str, Any]
    skipped_labels: dict[str, int] = dataclasses.field(default_factory=dict)
    feature_statistics: dict[str, Any] | None = None
    data_checks: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def imbalance_report(self) -> imb.ImbalanceReport:
        """The imbalance report as a dataclass."""
        return imb.ImbalanceReport.from_dict(self.imbalance)

    def uri(self, split: str) -> str:
        """URI of ``train``, ``validation`` or ``test``."""
        return {"train": self.train_uri, "validation": self.validation_uri, "test": self.test_uri}[
            split
        ]

    def to_json(self) -> str:
        """Serialise as JSON."""
        data = dataclasses.asdict(self)
        data["classes"] = list(self.classes)
        data["spec"] = self.spec.to_dict()
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> PreparedData:
        """Inverse of :meth:`to_json`."""
        data = json.loads(text)
        data["classes"] = tuple(data["classes"])
        data["spec"] = FeatureSpec.from_dict(data["spec"])
        return cls(**data)

    @classmethod
    def read(cls, path: str | Path) -> PreparedData:
        """Load the JSON file a prepare step wrote (how the other steps receive it).

        Raises:
            PipelineInputError: the file is missing, not JSON, or lacks a field (named).
        """
        try:
            return cls.from_json(Path(path).read_text())
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise PipelineInputError(f"cannot read the prepared-data JSON {path}: {exc!r}") from exc


def table_prefix(text: str) -> str:
    """Turn a run/job id into a safe table-name prefix (other characters become ``_``)."""
    prefix = re.sub(r"[^A-Za-z0-9_]", "_", text or "").strip("_")[:200]
    if not prefix:
        raise PipelineInputError(f"output prefix {text!r} has no usable characters")
    return prefix


def split_boundaries(ratios: Sequence[float]) -> tuple[int, int]:
    """Bucket boundaries ``(train_end, validation_end)`` of train/validation/test ratios.

    Raises:
        PipelineInputError: not three positive ratios summing to 1.
    """
    if len(ratios) != 3 or any(not r > 0 for r in ratios) or not math.isclose(sum(ratios), 1):
        raise PipelineInputError(
            f"split ratios must be three positive numbers (train, validation, test) summing to "
            f"1, got {tuple(ratios)}"
        )
    train_end = round(ratios[0] * SPLIT_BUCKETS)
    validation_end = round((ratios[0] + ratios[1]) * SPLIT_BUCKETS)
    if not 0 < train_end < validation_end < SPLIT_BUCKETS:
        raise PipelineInputError(f"split ratios {tuple(ratios)} are finer than 1/{SPLIT_BUCKETS}")
    return train_end, validation_end


def _output_refs(source: TableRef, prefix: str, output_dataset: str | None) -> dict[str, TableRef]:
    base = source
    if output_dataset:
        parts = output_dataset.removeprefix("bq://").split(".")
        base = TableRef.parse(".".join([*parts, "placeholder"]))
        if base.project is None and source.project is not None:
            base = TableRef(source.project, base.dataset, base.table)
    refs = {split: base.with_table(f"{prefix}_{split}") for split in SPLITS}
    if source in refs.values():
        raise PipelineInputError(f"output prefix {prefix!r} would overwrite the source {source}")
    return refs


def _resolve_spec(
    description: str, schema: pa.Schema, spec: FeatureSpec
) -> tuple[FeatureSpec, bool]:
    """The spec with its features (inferred when none are listed) and whether they were."""
    if spec.key is None:
        raise PipelineInputError(
            "the feature spec needs a key column (unique row id): the split and the "
            "downsampling hash it"
        )
    if spec.weight is not None:
        raise PipelineInputError(
            f"spec.weight={spec.weight!r}: prepare_data writes its own {WEIGHT_COLUMN!r} column; "
            "leave weight unset"
        )
    if WEIGHT_COLUMN in schema.names:
        raise SchemaError(
            f"table {description} already has a column {WEIGHT_COLUMN!r}, which prepare_data "
            "adds to the train table; rename it"
        )
    inferred = not spec.features
    if inferred:
        found = infer_feature_spec(schema, spec.label, key=spec.key, ignored=spec.ignored)
        spec = dataclasses.replace(spec, numeric=found.numeric, categorical=found.categorical)
        if not spec.features:
            raise SchemaError(f"table {description} has no feature columns besides label and key")
    check_schema(description, schema, spec)
    return spec, inferred


def _data_checks(
    warehouse: Warehouse,
    source: TableRef,
    schema: pa.Schema,
    spec: FeatureSpec,
    inferred: bool,
    keys: KeyStats,
    train_end: int,
) -> tuple[FeatureSpec, dict[str, Any]]:
    """Key warnings, id-like columns, text columns of numbers (logged and returned).

    Id-like columns are left out of inferred features; explicit features are kept as given.

    Raises:
        SchemaError: every inferred feature is id-like.
    """
    description = str(source)
    lines = key_warnings(description, str(spec.key), keys)
    spread = keys.null_keys > 0
    id_like: dict[str, int] = {}
    if inferred:
        id_like = id_like_columns(
            warehouse, source, schema, spec.features, str(spec.key), train_end, spread
        )
        lines += [
            id_like_line(c, bigquery_type_name(schema.field(c).type), n) for c, n in id_like.items()
        ]
        text = [
            c for c in spec.categorical if c not in id_like and is_string_type(schema.field(c).type)
        ]
        lines += numeric_text_warnings(
            warehouse, source, text, str(spec.key), train_end, spec.na_values, spread
        )
        if id_like:
            if not set(spec.features) - set(id_like):
                raise SchemaError(
                    f"table {description}: every feature column looks like a row id "
                    f"({', '.join(map(repr, id_like))}); list the features in the feature config"
                )
            spec = dataclasses.replace(
                spec,
                numeric=tuple(c for c in spec.numeric if c not in id_like),
                categorical=tuple(c for c in spec.categorical if c not in id_like),
                ignored=(*spec.ignored, *id_like),
            )
    for line in lines:
        _LOG.warning("%s", line)
    return spec, {"key": keys.to_dict(), "id_like": id_like, "warnings": lines}


def label_stats(
    warehouse: Warehouse,
    source: TableRef,
    spec: FeatureSpec,
    bounds: tuple[int, int],
    null_keys: bool = True,
) -> list[dict[str, Any]]:
    """Rows per split and label value (``sql/class_stats.sql``), read before anything is written.

    Args:
        warehouse: the engine.
        source: the table.
        spec: label and key.
        bounds: the split's bucket boundaries.
        null_keys: whether the table has NULL keys (False reads only the key and label
            columns: :func:`~vertex_imbalanced.warehouse.data_checks.without_null_key_spread`).

    Returns:
        One dict per (split, label value): ``split``, ``label_value`` (text, None for NULL),
        ``row_count``, ``null_keys`` (rows with a NULL key), ``example_key``.
    """
    sql = render(
        load_sql("class_stats"),
        tables={"source": source},
        columns={"key": spec.key, "label": spec.label},
    )
    sql = without_null_key_spread(sql, null_keys)
    rows = warehouse.query(sql, {"train_end": bounds[0], "validation_end": bounds[1]})
    return rows.to_pylist()


def infer_classes(values: Iterable[str], label_type: pa.DataType) -> tuple[str, ...]:
    """Class names in id order when none are declared: the distinct label values, sorted.

    Integers sort numerically (``2`` before ``10``), text lexically (code point order), BOOL
    labels as ``false``, ``true``. Values arrive as ``CAST(label AS STRING)`` text.

    Args:
        values: distinct non-NULL label values as text.
        label_type: the label column's Arrow type.

    Returns:
        The class names; ``classes[i]`` is class id ``i``.
    """
    distinct = set(values)
    if pa.types.is_integer(label_type):
        return tuple(str(v) for v in sorted(int(v) for v in distinct))
    return tuple(sorted(distinct))


def declared_classes(
    spec: FeatureSpec, label_type: pa.DataType, num_classes: int | None
) -> tuple[str, ...]:
    """The class list fixed before the data is read (``spec.classes`` or ``num_classes``).

    Returns:
        The classes, or ``()`` when they are to be inferred from the train split.

    Raises:
        LabelError: ``num_classes`` disagrees with the declared list, is given for a non-INT64
            label, or a BOOL label declares classes other than ``false``/``true``.
    """
    if spec.classes:
        if num_classes is not None and num_classes != len(spec.classes):
            raise LabelError(
                f"num_classes={num_classes} but {len(spec.classes)} classes are declared"
            )
        if pa.types.is_boolean(label_type):
            classes = tuple(c.lower() for c in spec.classes)
            if set(classes) - {"false", "true"}:
                raise LabelError(
                    f"label column {spec.label!r} is BOOL: declare its classes as false, true "
                    f"(in the order you want), got {list(spec.classes)}"
                )
            return classes
        return spec.classes
    if num_classes is not None:
        if not pa.types.is_integer(label_type):
            raise LabelError(
                f"num_classes={num_classes} needs an INT64 label; label column {spec.label!r} is "
                "not: declare the class list instead"
            )
        return tuple(str(i) for i in range(num_classes))
    return ()


def label_values(stats: list[dict[str, Any]]) -> dict[str | None, dict[str, Any]]:
    """Per label value (None for NULL): ``rows`` per split and an ``example`` key."""
    values: dict[str | None, dict[str, Any]] = {}
    for row in stats:
        entry = values.setdefault(
            row["label_value"], {"rows": dict.fromkeys(SPLITS, 0), "example": None}
        )
        entry["rows"][row["split"]] += row["row_count"]
        if entry["example"] is None or (
            row["example_key"] is not None and row["example_key"] < entry["example"]
        ):
            entry["example"] = row["example_key"]
    return values


LABEL_FIX = (
    "fix or filter them, declare the class list (feature config 'classes', run_local "
    "--classes), or skip and count them (label_policy 'skip', run_local --label-policy skip)"
)
"""What a user can do about NULL labels or labels outside the classes."""


@dataclasses.dataclass(frozen=True)
class LabelCheck:
    """Outcome of :func:`check_labels`.

    Attributes:
        classes: class names in id order.
        skipped: rows left out per split (NULL label or outside the classes).
        problems: one line per NULL group or value outside the classes (names the value, its
            rows and an example key); they stop the run under ``label_policy="error"``.
    """

    classes: tuple[str, ...]
    skipped: dict[str, int]
    problems: tuple[str, ...]


def check_labels(
    description: str,
    stats: list[dict[str, Any]],
    spec: FeatureSpec,
    label_type: pa.DataType,
    num_classes: int | None = None,
) -> LabelCheck:
    """Classes and the label values outside them, without raising for those values.

    Classes are ``spec.classes`` (or ``0..num_classes-1``) when declared, else
    :func:`infer_classes` of the train split's values.

    Args:
        description: the table, for messages.
        stats: rows of :func:`label_stats` (split, label_value, row_count, example_key).
        spec: label, key and declared classes.
        label_type: the label column's Arrow type.
        num_classes: class count of an INT64 label (classes ``0..n-1``).

    Raises:
        LabelError: the declared classes do not fit the label type (:func:`declared_classes`).
    """
    key, label = spec.key, spec.label
    values = label_values(stats)
    classes = declared_classes(spec, label_type, num_classes)
    origin = "declared classes"
    if not classes:
        train_values = [v for v, e in values.items() if v is not None and e["rows"]["train"]]
        classes = infer_classes(train_values, label_type)
        origin = "classes of the train split"
    skipped = dict.fromkeys(SPLITS, 0)
    problems = []
    for value, entry in sorted(values.items(), key=lambda item: (item[0] is not None, item[0])):
        if value in classes:
            continue
        n = sum(entry["rows"].values())
        for split, rows in entry["rows"].items():
            skipped[split] += rows
        if value is None:
            problems.append(
                f"label column {label!r} of {description} has {n} NULL value(s), e.g. the row "
                f"with {key}={entry['example']!r}"
            )
        else:
            problems.append(
                f"label column {label!r} of {description} has value {value!r} ({n} row(s), "
                f"e.g. {key}={entry['example']!r}) outside the {origin} {list(classes)}"
            )
    return LabelCheck(classes, skipped, tuple(problems))


def resolve_classes(
    description: str,
    stats: list[dict[str, Any]],
    spec: FeatureSpec,
    label_type: pa.DataType,
    num_classes: int | None = None,
) -> tuple[tuple[str, ...], dict[str, int]]:
    """Check the label values; return the class names in id order and the rows left out.

    A NULL label, or a value outside the classes (:func:`check_labels`), stops the run under
    ``label_policy="error"``; under ``"skip"`` those rows are left out of every split and
    counted.

    Returns:
        ``(classes, skipped)``: ``skipped`` counts the rows left out per split (all splits
        present, zeros included).

    Raises:
        LabelError: NULL labels or values outside the classes under the ``error`` policy
            (every such value listed with its row count and an example key).
    """
    checked = check_labels(description, stats, spec, label_type, num_classes)
    if checked.problems and spec.label_policy == "error":
        raise LabelError("; ".join(checked.problems) + f": {LABEL_FIX}")
    return checked.classes, checked.skipped


def _split_counts(
    stats: list[dict[str, Any]], classes: tuple[str, ...]
) -> dict[str, dict[str, int]]:
    counts = {split: dict.fromkeys(classes, 0) for split in SPLITS}
    for row in stats:
        if row["label_value"] in counts[row["split"]]:
            counts[row["split"]][row["label_value"]] += row["row_count"]
    return counts


def _write(
    warehouse: Warehouse,
    source: TableRef,
    outputs: Mapping[str, TableRef],
    spec: FeatureSpec,
    bounds: tuple[int, int],
    plan: imb.ImbalancePlan,
    expiration_hours: float,
) -> dict[str, tuple[int, float]]:
    """Write the three tables atomically; return (rows, weight sum) per class of train."""
    ranges = {"train": (0, bounds[0]), "validation": bounds, "test": (bounds[1], SPLIT_BUCKETS)}
    columns = {"key": spec.key, "label": spec.label, "weight": WEIGHT_COLUMN}
    split_sql = render(
        load_sql("split_labelled"),
        tables={"source": source},
        columns={"key": spec.key, "label": spec.label},
    )
    downsample_sql = render(load_sql("downsample"), tables={"source": source}, columns=columns)
    stats_sql = render(
        load_sql("weighted_class_stats"),
        tables={"table": outputs["train"]},
        columns={"label": spec.label, "weight": WEIGHT_COLUMN},
    )
    names = list(plan.keep_rates)
    with warehouse.atomic():
        for split in ("validation", "test"):
            lo, hi = ranges[split]
            params = {"bucket_lo": lo, "bucket_hi": hi, "class_names": names}
            warehouse.create_table(
                outputs[split], split_sql, params, expiration_hours=expiration_hours
            )
        params = {
            "bucket_lo": ranges["train"][0],
            "bucket_hi": ranges["train"][1],
            "class_names": names,
            "keep_rates": [float(plan.keep_rates[c]) for c in names],
            "class_weights": [float(plan.weights[c]) for c in names],
            "keep_salt": KEEP_SALT,
        }
        warehouse.create_table(
            outputs["train"], downsample_sql, params, expiration_hours=expiration_hours
        )
        kept = {
            r["label_value"]: (int(r["row_count"]), float(r["weight_sum"]))
            for r in warehouse.query(stats_sql, {}).to_pylist()
        }
        if not kept:
            raise PipelineInputError(
                f"zero training rows remain after downsampling {source} (keep rates "
                f"{plan.keep_rates}); nothing was written"
            )
    return kept


def _feature_statistics(
    source_uri: str,
    spec: FeatureSpec,
    split_ratios: Sequence[float],
    class_counts: Mapping[str, int],
    warehouse: Warehouse,
) -> dict[str, Any]:
    from vertex_imbalanced.monitoring.statistics import training_statistics

    return training_statistics(
        source_uri,
        spec,
        split_ratios=split_ratios,
        class_counts=class_counts,
        warehouse=warehouse,
    )


def prepare_data(
    source_uri: str,
    spec: FeatureSpec,
    *,
    output_prefix: str,
    split_ratios: Sequence[float] = (0.8, 0.1, 0.1),
    imbalance: ImbalanceConfig | None = None,
    expiration_hours: float = 72.0,
    num_classes: int | None = None,
    output_dataset: str | None = None,
    warehouse: Warehouse | None = None,
    feature_statistics: bool = True,
    billing_project: str | None = None,
    kms_key: str | None = None,
) -> PreparedData:
    """Split the source table, downsample + weight the train split, and report what was done.

    Args:
        source_uri: ``bq://project.dataset.table`` or ``duckdb:///abs/path.db?table=name``.
        spec: feature roles; ``key`` is required. With no numeric/categorical columns listed,
            they are inferred from the schema (strings categorical, other scalars numeric).
        output_prefix: prefix of the output table names (e.g. the pipeline job id; characters
            other than letters, digits and ``_`` become ``_``). Outputs are
            ``<prefix>_train``, ``<prefix>_validation``, ``<prefix>_test``.
        split_ratios: train, validation, test shares (positive, summing to 1).
        imbalance: how to rebalance the train split (default ``ImbalanceConfig()``).
        expiration_hours: BigQuery output tables expire after this many hours (0: never).
        num_classes: number of classes for an INT64 label (classes ``0..n-1``; default: the
            classes are declared in ``spec.classes`` or inferred from the train split).
        output_dataset: BigQuery ``[project.]dataset`` for the outputs (default: the source's).
        warehouse: runner to use instead of one opened from ``source_uri`` (e.g. a
            ``BigQueryWarehouse`` with its own client); the table comes from ``source_uri``.
        feature_statistics: also compute the train split's feature statistics (two more
            scans of the source; read only) for ``PreparedData.feature_statistics``.
        billing_project: BigQuery: the project that runs and pays for every query job
            (default: the default credentials' project), so a source in a read-only or public
            project works. Ignored with ``warehouse``.
        kms_key: BigQuery: Cloud KMS key that encrypts every table written. Ignored with
            ``warehouse``.

    Returns:
        The output URIs, classes, spec, split counts and imbalance report.

    Raises:
        PipelineInputError: bad settings, a missing table, an empty table, or no training rows.
        SchemaError: a missing column (with the closest name) or an unsupported type.
        LabelError: NULL labels, or label values outside the classes.
    """
    config = imbalance or ImbalanceConfig()
    bounds = split_boundaries(split_ratios)
    prefix = table_prefix(output_prefix)
    owned = warehouse is None
    if warehouse is None:
        warehouse, source = open_warehouse(
            source_uri, billing_project=billing_project, kms_key=kms_key
        )
    else:
        source = source_table(source_uri)
    try:
        if output_dataset and warehouse.engine != "bigquery":
            raise PipelineInputError("output_dataset is only supported for BigQuery sources")
        outputs = _output_refs(source, prefix, output_dataset)
        warehouse.check_outputs(source, outputs.values())  # another location: refused, no job
        description = str(source)
        schema = warehouse.table_schema(source)
        if schema is None:
            raise PipelineInputError(f"table {description} does not exist ({source_uri})")
        spec, inferred = _resolve_spec(description, schema, spec)
        check_split_key(schema, spec.key, description)  # same split on BigQuery and DuckDB
        keys = key_stats(warehouse, source, str(spec.key))
        stats = label_stats(warehouse, source, spec, bounds, keys.null_keys > 0)
        if not stats:
            raise PipelineInputError(f"table {description} is empty")
        keys = keys.with_splits(stats)
        spec, checks = _data_checks(warehouse, source, schema, spec, inferred, keys, bounds[0])
        if not any(row["split"] == "train" for row in stats):
            raise PipelineInputError(
                f"zero training rows: the train split of {description} is empty "
                f"(split ratios {tuple(split_ratios)})"
            )
        label_type = schema.field(spec.label).type
        classes, skipped = resolve_classes(description, stats, spec, label_type, num_classes)
        split_counts = _split_counts(stats, classes)
        train_counts = split_counts["train"]
        present = [c for c, n in train_counts.items() if n > 0]
        if not present:
            raise PipelineInputError(
                f"zero training rows: the train split of {description} is empty "
                f"(split ratios {tuple(split_ratios)})"
            )
        if len(present) < 2:
            raise LabelError(
                f"the train split of {description} has only class {present[0]!r} in label "
                f"column {spec.label!r}; a classifier needs at least two classes"
            )
        plan = imb.plan(train_counts, config)
        kept = _write(warehouse, source, outputs, spec, bounds, plan, expiration_hours)
        report = imb.ImbalanceReport(
            mode=config.mode,
            original_counts=dict(train_counts),
            keep_rates=dict(plan.keep_rates),
            kept_counts={c: kept.get(c, (0, 0.0))[0] for c in classes},
            weighted_counts={c: kept.get(c, (0, 0.0))[1] for c in classes},
        )
        return PreparedData(
            train_uri=warehouse.uri(outputs["train"]),
            validation_uri=warehouse.uri(outputs["validation"]),
            test_uri=warehouse.uri(outputs["test"]),
            classes=classes,
            spec=spec,
            split_counts=split_counts,
            imbalance=report.to_dict(),
            skipped_labels=skipped,
            data_checks=checks,
            feature_statistics=_feature_statistics(
                source_uri, spec, split_ratios, split_counts["train"], warehouse
            )
            if feature_statistics
            else None,
        )
    finally:
        if owned and hasattr(warehouse, "close"):
            warehouse.close()
