"""score_table end to end: DuckDB table -> Beam RunInference (DirectRunner) -> DuckDB table."""

import duckdb
import numpy as np
import pyarrow as pa
import pytest
import tensorflow as tf
from conftest_models import build_tiny_model, make_table

from vertex_imbalanced.batch_prediction import output
from vertex_imbalanced.batch_prediction.beam_pipeline import ScoringJobError
from vertex_imbalanced.batch_prediction.resolve import resolve_model
from vertex_imbalanced.batch_prediction.run import (
    read_predictions,
    score_table,
)
from vertex_imbalanced.errors import PipelineInputError, SchemaError
from vertex_imbalanced.registry.local import LocalRegistry
from vertex_imbalanced.warehouse.identifiers import TableRef

CLASSES = ("low", "mid", "high")
ROWS = 20_000  # several DuckDB record batches (8192 rows) per stream


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A registry with a champion and a DuckDB file with an input table."""
    base = tmp_path_factory.mktemp("bp")
    model_dir = build_tiny_model(base / "model", CLASSES)
    registry = LocalRegistry(base / "registry")
    registry.register("clf", str(model_dir), {"macro_f1": 0.9}, {}, "train-1", True)
    table = make_table(CLASSES, [ROWS // 2, ROWS // 4, ROWS // 4], seed=5)
    db = base / "in.duckdb"
    with duckdb.connect(str(db)) as con:
        con.register("t", table)
        con.execute("CREATE TABLE rows AS SELECT * FROM t")
        con.execute("CREATE TABLE empty AS SELECT * FROM t LIMIT 0")
        con.execute("CREATE TABLE no_x AS SELECT id, color FROM t")
        con.execute("CREATE TABLE x_text AS SELECT id, CAST(x AS VARCHAR) AS x, color FROM t")
        # a NaN on row 15000: the tiny model turns it into NaN probabilities mid-table
        con.execute(
            "CREATE TABLE bad AS SELECT * REPLACE (CASE WHEN id = 15000 THEN 'nan'::DOUBLE ELSE x END AS x) FROM t"
        )
    model = resolve_model(f"local://{registry.root}", "clf")
    return {"base": base, "db": db, "table": table, "model": model, "model_dir": model_dir}


def run(world, table, out, run_id="run-1"):
    return score_table(
        world["model"],
        f"duckdb://{world['db']}?table={table}",
        f"duckdb://{world['base'] / out}?table=preds",
        run_id,
        str(world["base"] / "staging"),
        key="id",  # the tiny model records no key
    )


def test_predictions_equal_the_saved_model_called_directly(world):
    result = run(world, "rows", "out.duckdb")
    assert result.rows == ROWS and result.classes == CLASSES and result.key == "id"
    got = read_predictions(world["base"] / "out.duckdb", "preds").sort_by("id")
    table = world["table"]
    serve = tf.saved_model.load(str(world["model_dir"] / "saved_model")).signatures[
        "serving_default"
    ]
    expected = serve(
        x=tf.constant(table.column("x").to_numpy(), tf.float32),
        color=tf.constant(table.column("color").to_pylist()),
    )
    assert got.column("id").to_pylist() == table.column("id").to_pylist()
    np.testing.assert_allclose(
        np.array(got.column("probabilities").to_pylist()),
        expected["probabilities"].numpy(),
        atol=1e-6,
        rtol=0,
    )
    np.testing.assert_array_equal(got.column("class_id").to_numpy(), expected["class_id"].numpy())
    assert set(got.column("model_version").to_pylist()) == {"1"}
    assert not list((world["base"] / "staging").glob("*"))  # staging removed after publishing


def test_a_run_failing_midway_leaves_nothing_and_a_rerun_completes(world):
    db = world["base"] / "fail.duckdb"
    with pytest.raises(ScoringJobError, match="id=15000"):
        run(world, "bad", "fail.duckdb", run_id="run-2")
    assert not output.duckdb_table_exists(str(db), TableRef.parse("preds"))
    result = run(world, "rows", "fail.duckdb", run_id="run-2")  # the data was fixed
    assert result.rows == ROWS
    assert read_predictions(db, "preds").num_rows == ROWS


@pytest.mark.parametrize(
    ("table", "error", "message"),
    [
        ("no_x", SchemaError, r"has no column 'x'"),
        ("x_text", SchemaError, r"column 'x' of .* is STRING .* reads it as a number"),
        ("empty", PipelineInputError, r"input table .*empty is empty: nothing to score"),
        ("nope", PipelineInputError, r"table .*nope does not exist"),
    ],
)
def test_bad_input_is_one_clear_error_and_nothing_is_written(world, table, error, message):
    with pytest.raises(error, match=message):
        run(world, table, f"bad_{table}.duckdb")
    assert not (world["base"] / f"bad_{table}.duckdb").exists()


def test_rerunning_a_run_replaces_the_table_with_the_same_rows(world):
    first = run(world, "rows", "again.duckdb", run_id="same")
    rows1 = read_predictions(world["base"] / "again.duckdb", "preds").sort_by("id")
    second = run(world, "rows", "again.duckdb", run_id="same")
    rows2 = read_predictions(world["base"] / "again.duckdb", "preds").sort_by("id")
    assert first.rows == second.rows == ROWS
    for column in ("id", "class_id", "probabilities"):
        assert rows1.column(column).equals(rows2.column(column))
    with duckdb.connect(str(world["base"] / "again.duckdb"), read_only=True) as con:
        tables = con.execute("SELECT table_name, comment FROM duckdb_tables()").fetchall()
    assert [t[0] for t in tables] == ["preds"]
    assert '["low", "mid", "high"]' in tables[0][1]
    assert pa.types.is_list(rows2.schema.field("probabilities").type)


def test_adjusted_probabilities_are_the_bayes_posteriors_under_the_em_prior(tmp_path):
    """Synthetic label shift with a model whose outputs are exact Bayes posteriors.

    ``x ~ N(k, sigma)`` for class k; the tiny model's logits ``(k x - k^2 / 2) / sigma^2`` are
    the exact log-posteriors (up to a constant) under a uniform training prior. Serving rows come
    with the prior 60/30/10: the EM prior recovers it, and the adjusted column equals the exact
    posteriors under that prior (computed from the Gaussian densities), while ``class_id`` stays
    the model's own decision.
    """
    from vertex_imbalanced.config import FeatureSpec
    from vertex_imbalanced.monitoring.statistics import (
        training_statistics,
        write_training_statistics,
    )

    sigma = 0.7
    model_dir = build_tiny_model(tmp_path / "model", CLASSES, scale=1 / sigma**2)
    db = tmp_path / "in.duckdb"
    table = make_table(CLASSES, [6000, 3000, 1000], sigma=sigma, seed=8)
    with duckdb.connect(str(db)) as con:
        con.register("t", table)
        con.execute("CREATE TABLE serving AS SELECT * FROM t")
    spec = FeatureSpec(label="label", key="id", numeric=("x",), categorical=("color",))
    stats = training_statistics(
        f"duckdb://{db}?table=serving",
        spec,
        split_ratios=(0.8, 0.1, 0.1),
        class_counts=dict.fromkeys(CLASSES, 1000),  # the model's (uniform) training prior
    )
    write_training_statistics(model_dir, stats)
    registry = LocalRegistry(tmp_path / "registry")
    registry.register("bayes", str(model_dir), {"macro_f1": 0.9}, {}, "train-1", True)
    result = score_table(
        resolve_model(f"local://{registry.root}", "bayes"),
        f"duckdb://{db}?table=serving",
        f"duckdb://{tmp_path / 'out.duckdb'}?table=preds",
        "run-adjusted",
        str(tmp_path / "staging"),
        key="id",
        adjust_probabilities=True,
    )
    observed = np.array([6000, 3000, 1000]) / 10_000
    em = np.array([result.em_prior[c] for c in CLASSES])
    assert np.max(np.abs(em - observed)) < 0.02
    got = read_predictions(tmp_path / "out.duckdb", "preds").sort_by("id")
    x = table.sort_by("id").column("x").to_numpy()
    density = np.exp(-((x[:, None] - np.arange(3)[None, :]) ** 2) / (2 * sigma**2))
    bayes = density * em / (density * em).sum(axis=1, keepdims=True)
    adjusted = np.array(got.column("adjusted_probabilities").to_pylist())
    np.testing.assert_allclose(adjusted, bayes, atol=2e-6)
    probs = np.array(got.column("probabilities").to_pylist())
    served = got.column("class_id").to_numpy()
    np.testing.assert_array_equal(served, probs.argmax(axis=1))  # the model's decision ...
    assert (served != adjusted.argmax(axis=1)).sum() > 100  # ... kept where the adjusted differs
