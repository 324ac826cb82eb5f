"""BatchScorer: one record batch in, output rows out, equal to the SavedModel called directly."""

import numpy as np
import pyarrow as pa
import pytest
import tensorflow as tf
from conftest_models import build_tiny_model, make_table

from vertex_imbalanced.batch_prediction import output
from vertex_imbalanced.batch_prediction.scoring import BatchScorer, InputColumns, ScoringError
from vertex_imbalanced.errors import SchemaError

CLASSES = ("low", "mid", "high")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("m") / "model", CLASSES)


@pytest.fixture(scope="module")
def scorer(model_dir):
    return BatchScorer(str(model_dir), "tiny", "7", key="id")


def direct(model_dir, table):
    """The oracle: the SavedModel's serving_default on Python lists of the same rows."""
    serve = tf.saved_model.load(str(model_dir / "saved_model")).signatures["serving_default"]
    colors = ["" if c is None else c for c in table.column("color").to_pylist()]
    xs = [np.nan if v is None else v for v in table.column("x").to_pylist()]
    out = serve(x=tf.constant(xs, tf.float32), color=tf.constant(colors))
    return out["probabilities"].numpy(), out["class_id"].numpy()


def test_roles_come_from_the_signature(scorer):
    assert scorer.inputs == InputColumns(("x",), ("color",), "id")
    assert scorer.classes == CLASSES


def test_scored_rows_equal_the_saved_model_called_directly(scorer, model_dir):
    table = make_table(CLASSES, [300, 200, 100], seed=3)
    # NULLs take the reader's defaults: "" for a category (out of vocabulary here)
    table = table.set_column(2, "color", pa.array([None, *table.column("color").to_pylist()[1:]]))
    batch = table.to_batches()[0]
    rows = scorer.score(batch, scored_at=1_700_000_000.5)
    probs, ids = direct(model_dir, table)
    assert rows.schema == output.output_schema("id", pa.int64())
    got = np.array(rows.column("probabilities").to_pylist())
    np.testing.assert_allclose(got, probs, atol=1e-6, rtol=0)
    np.testing.assert_array_equal(rows.column("class_id").to_numpy(), ids)
    assert rows.column("class_name").to_pylist() == [CLASSES[i] for i in ids]
    assert rows.column("id").to_pylist() == table.column("id").to_pylist()
    assert set(rows.column("model_name").to_pylist()) == {"tiny"}
    assert set(rows.column("model_version").to_pylist()) == {"7"}
    assert rows.column("scored_at")[0].value == 1_700_000_000_500_000
    assert len(set(ids)) == 3  # the rows exercise every class


def test_nan_probabilities_name_the_first_bad_key(scorer):
    table = make_table(CLASSES, [5, 5, 5], seed=1)
    x = table.column("x").to_pylist()
    x[4] = float("nan")  # the tiny model does not impute: NaN in, NaN out
    batch = table.set_column(1, "x", pa.array(x)).to_batches()[0]
    key = batch.column("id")[4].as_py()
    with pytest.raises(ScoringError, match=rf"1 of 15 rows.*id={key}"):
        scorer.score(batch)


def test_schema_check_names_missing_and_mistyped_columns(scorer):
    cols = scorer.inputs
    with pytest.raises(SchemaError, match="no column 'x'"):
        cols.check("t", pa.schema([("id", pa.int64()), ("color", pa.string())]))
    with pytest.raises(SchemaError, match="'x' of t is STRING"):
        cols.check("t", pa.schema([("id", pa.int64()), ("x", pa.string()), ("color", pa.string())]))
    cols.check("t", pa.schema([("id", pa.string()), ("x", pa.int32()), ("color", pa.int64())]))
