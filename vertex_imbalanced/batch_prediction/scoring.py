"""Score one Arrow record batch with the exported SavedModel: the unit of batch prediction.

:class:`BatchScorer` loads ``<model_dir>/saved_model`` once (through
:func:`vertex_imbalanced.evaluation.evaluate.load_model`, the loader evaluation uses) and turns a
record batch of input rows into a record batch of output rows (:mod:`.output`). The Beam model
handler and the benchmark's direct loop both call it, so the pipeline serves exactly what the
SavedModel's ``serving_default`` returns, decision (``class_id``) included.

Feeding the signature: the input roles come from the signature itself (float32 inputs are
numeric, string inputs categorical); a column whose name cannot be a signature argument is fed
under the argument name ``model_metadata.json`` maps it to (``serving_inputs``); each column goes through the reader's converters
(:func:`~vertex_imbalanced.reading.record_packing.numeric_to_float32`: NULL -> NaN;
:func:`~vertex_imbalanced.reading.record_packing.categorical_to_string`: NULL -> "") and the
string columns travel as one packed buffer (:func:`~vertex_imbalanced.reading.record_packing.pack_strings`)
split back in a graph function, which avoids one Python object per string.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from vertex_imbalanced.batch_prediction import output
from vertex_imbalanced.errors import PipelineInputError, SchemaError
from vertex_imbalanced.reading.schema import check_feature_types
from vertex_imbalanced.warehouse.identifiers import require_columns


class ScoringError(RuntimeError):
    """The model returned unusable output for some rows (names the rows' keys)."""


@dataclasses.dataclass(frozen=True)
class InputColumns:
    """What the model reads: its numeric and categorical inputs, and the key to carry."""

    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    key: str

    def same_roles(self, other: InputColumns) -> bool:
        """The same numeric and categorical columns and key, in any order.

        (A SavedModel signature lists its inputs sorted by name; the metadata in feature order.)
        """
        return (
            set(self.numeric) == set(other.numeric)
            and set(self.categorical) == set(other.categorical)
            and self.key == other.key
        )

    @property
    def read_columns(self) -> list[str]:
        """Columns to select from the input table (key first, no duplicates)."""
        cols = [self.key]
        cols += [c for c in (*self.numeric, *self.categorical) if c != self.key]
        return cols

    def check(self, description: str, schema: pa.Schema) -> None:
        """Check the table has every input with a type the model can take.

        Raises:
            SchemaError: a missing column (with the closest name) or a type that does not fit
                its role (e.g. a STRING column the model reads as numeric).
        """
        require_columns(description, self.read_columns, list(schema.names))
        check_feature_types(description, schema, self.numeric, self.categorical)
        key_type = schema.field(self.key).type
        if pa.types.is_nested(key_type):
            raise SchemaError(f"key column {self.key!r} of {description} is {key_type}")


def local_model_dir(model_dir: str) -> tuple[str, str | None]:
    """A local copy of a ``gs://`` model directory (``(path, temp dir to remove)``).

    Local paths are returned as they are (``(model_dir, None)``).
    """
    if not model_dir.startswith("gs://"):
        return model_dir, None
    import tensorflow as tf

    target = tempfile.mkdtemp(prefix="scoring-model-")
    root = model_dir.rstrip("/")
    for directory, _subdirs, files in tf.io.gfile.walk(root):
        rel = directory[len(root) :].lstrip("/")
        (Path(target) / rel).mkdir(parents=True, exist_ok=True)
        for name in files:
            tf.io.gfile.copy(f"{directory}/{name}", str(Path(target) / rel / name))
    return target, target


class BatchScorer:
    """The exported model loaded once, scoring whole record batches.

    Args:
        model_dir: the model directory (``saved_model/``, ``model_metadata.json``); a
            ``gs://`` directory is copied to local disk first.
        model_name: registered model name (written into every output row).
        model_version: registered version id (written into every output row).
        key: the input's key column (copied into the output).

    Raises:
        PipelineInputError: the model cannot be loaded, or its signature takes a dtype other
            than float32 / string, or returns no ``probabilities`` / ``class_id``.
    """

    def __init__(self, model_dir: str, model_name: str, model_version: str, key: str) -> None:
        import tensorflow as tf

        from vertex_imbalanced.evaluation.evaluate import load_model

        path, self._tmp = local_model_dir(str(model_dir))
        self.model = load_model(path)
        self.model_name, self.model_version = model_name, model_version
        self.classes = self.model.classes
        signature = self.model.serve.structured_input_signature[1]
        serving = dict(self.model.metadata.get("serving_inputs") or {})
        column_of = {argument: column for column, argument in serving.items()}
        self._argument: dict[str, str] = {}
        """Input column -> its ``serving_default`` argument name."""
        numeric, categorical = [], []
        for name in self.model.input_names:
            dtype = signature[name].dtype
            column = column_of.get(name, name)
            self._argument[column] = name
            if dtype == tf.float32:
                numeric.append(column)
            elif dtype == tf.string:
                categorical.append(column)
            else:
                raise PipelineInputError(
                    f"serving_default of {model_dir} takes {name!r} as {dtype.name}; batch "
                    "prediction feeds float32 (numeric) and string (categorical) inputs"
                )
        outputs = set(self.model.serve.structured_outputs)
        if not {output.PROBABILITIES, output.CLASS_ID} <= outputs:
            raise PipelineInputError(
                f"serving_default of {model_dir} returns {sorted(outputs)}; batch prediction "
                f"needs {output.PROBABILITIES!r} and {output.CLASS_ID!r}"
            )
        self.inputs = InputColumns(tuple(numeric), tuple(categorical), key)
        self._class_names = pa.array(self.classes, pa.string())
        self._split = _string_splitter(len(categorical))
        self._schema: pa.Schema | None = None

    def close(self) -> None:
        """Remove the local copy of a ``gs://`` model (no-op for local models)."""
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def signature_inputs(self, batch: pa.RecordBatch) -> dict[str, Any]:
        """The ``serving_default`` keyword arguments for a record batch (one tensor per input)."""
        import tensorflow as tf

        from vertex_imbalanced.reading.record_packing import (
            categorical_to_string,
            numeric_to_float32,
            pack_strings,
        )

        feed: dict[str, Any] = {
            self._argument[name]: tf.constant(numeric_to_float32(batch.column(name)))
            for name in self.inputs.numeric
        }
        if self.inputs.categorical:
            columns = [categorical_to_string(batch.column(n)) for n in self.inputs.categorical]
            strings, offsets = pack_strings(columns, batch.num_rows)
            split = self._split(tf.constant(strings), tf.constant(offsets))
            arguments = [self._argument[n] for n in self.inputs.categorical]
            feed.update(zip(arguments, split, strict=True))
        return feed

    def predict(self, batch: pa.RecordBatch) -> tuple[np.ndarray, np.ndarray]:
        """``(probabilities float32 [n, C], class_id int64 [n])`` of a record batch."""
        result = self.model.serve(**self.signature_inputs(batch))
        return result[output.PROBABILITIES].numpy(), result[output.CLASS_ID].numpy()

    def output_schema(self, key_type: pa.DataType) -> pa.Schema:
        """The predictions schema for this model's key column."""
        return output.output_schema(self.inputs.key, key_type)

    def score(self, batch: pa.RecordBatch, scored_at: float | None = None) -> pa.RecordBatch:
        """Output rows (:mod:`.output` columns) of one record batch of input rows.

        Args:
            batch: input rows holding at least :attr:`inputs` ``.read_columns``.
            scored_at: scoring time in seconds since the epoch (default: now).

        Raises:
            ScoringError: NaN/infinite probabilities, a wrong shape or a class id out of range
                (the message names the first bad row's key).
        """
        n = batch.num_rows
        probs, class_id = self.predict(batch)
        keys = batch.column(self.inputs.key)
        c = len(self.classes)
        if probs.shape != (n, c) or class_id.shape != (n,):
            raise ScoringError(
                f"model {self.model_name} v{self.model_version} returned probabilities of "
                f"shape {probs.shape} and class ids of shape {class_id.shape} for {n} rows "
                f"and classes {list(self.classes)}"
            )
        bad = ~np.isfinite(probs).all(axis=1) | (class_id < 0) | (class_id >= c)
        if bad.any():
            first = int(np.argmax(bad))
            raise ScoringError(
                f"model {self.model_name} v{self.model_version} returned NaN/infinite "
                f"probabilities or an unknown class for {int(bad.sum())} of {n} rows of a "
                f"batch; first at {self.inputs.key}={keys[first].as_py()!r}: check its inputs"
            )
        when = time.time() if scored_at is None else scored_at
        ids = pa.array(class_id.astype(np.int64, copy=False))
        flat = pa.array(probs.astype(np.float64).reshape(-1))
        offsets = pa.array(np.arange(0, (n + 1) * c, c, dtype=np.int32))
        schema = self.output_schema(keys.type)
        return pa.RecordBatch.from_arrays(
            [
                keys,
                ids,
                self._class_names.take(ids),
                pa.ListArray.from_arrays(offsets, flat),
                pa.repeat(pa.scalar(self.model_name, pa.string()), n),
                pa.repeat(pa.scalar(self.model_version, pa.string()), n),
                pa.array(np.full(n, int(when * 1e6), np.int64), pa.timestamp("us", tz="UTC")),
            ],
            schema=schema,
        )


def _string_splitter(columns: int):
    """A graph function: (packed strings, offsets [m, n + 1]) -> m string tensors ``[n]``."""
    import tensorflow as tf

    @tf.function(
        input_signature=[tf.TensorSpec([], tf.string), tf.TensorSpec([columns, None], tf.int64)]
    )
    def split(strings, offsets):
        starts = offsets[:, :-1]
        lengths = offsets[:, 1:] - starts
        return [tf.strings.substr(strings, starts[j], lengths[j]) for j in range(columns)]

    return split


def score_batches(scorer: BatchScorer, batches: Sequence[pa.RecordBatch]) -> list[pa.RecordBatch]:
    """Score several record batches (the direct loop without Beam)."""
    return [scorer.score(b) for b in batches if b.num_rows]
