import duckdb
import numpy as np
import pyarrow as pa
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import recall_score

from vertex_imbalanced.reading.schema import check_schema, infer_feature_spec
from vertex_imbalanced.warehouse.demo_data import (
    CLASS_SHARES,
    DEMO_SPEC,
    SHIFT_COLOR_P,
    SHIFT_X1,
    SHIFTED_FEATURES,
    demo_table,
    write_demo_duckdb,
)


def test_demo_table_is_deterministic_imbalanced_and_has_nulls():
    table = demo_table(20_000, seed=5)
    assert table.equals(demo_table(20_000, seed=5))
    assert not table.equals(demo_table(20_000, seed=6))
    shares = np.bincount(table.column("label").to_numpy(), minlength=3) / 20_000
    assert np.allclose(shares, CLASS_SHARES, atol=0.01)
    assert table.column("x2").null_count > 0 and table.column("color").null_count > 0
    assert len(set(table.column("id").to_pylist())) == 20_000
    check_schema("demo", table.schema, DEMO_SPEC)
    inferred = infer_feature_spec(table.schema, "label", key="id")
    assert (inferred.numeric, inferred.categorical) == (DEMO_SPEC.numeric, DEMO_SPEC.categorical)


def test_classes_are_learnable(tmp_path):
    """Oracle: a plain logistic regression recalls every class, so a small MLP can too."""
    table = demo_table(20_000, seed=2)
    x = np.column_stack(
        [
            np.nan_to_num(table.column(c).to_numpy(zero_copy_only=False).astype(float))
            for c in ("x1", "x2", "x3")
        ]
        + [np.array([c == "red" for c in table.column("color").to_pylist()], dtype=float)]
    )
    y = table.column("label").to_numpy()
    model = LogisticRegression(max_iter=500, class_weight="balanced").fit(x[:15_000], y[:15_000])
    recall = recall_score(y[15_000:], model.predict(x[15_000:]), average=None)
    assert recall.min() > 0.5, recall


def test_write_demo_duckdb_returns_a_source_uri(tmp_path):
    uri = write_demo_duckdb(tmp_path / "d.db", rows=100, seed=0, table="main.demo_small")
    assert uri == f"duckdb://{tmp_path / 'd.db'}?table=main.demo_small"
    with duckdb.connect(str(tmp_path / "d.db"), read_only=True) as con:
        got = con.sql("SELECT * FROM main.demo_small").to_arrow_table()
    assert got.num_rows == 100 and got.schema.field("label").type == pa.int64()


def test_shifted_table_moves_x1_and_color_only():
    base, shifted = demo_table(20_000, seed=3), demo_table(20_000, seed=3, shifted=True)
    assert base.equals(demo_table(20_000, seed=3))  # the default is unchanged by the option
    for name in base.column_names:
        if name not in SHIFTED_FEATURES:
            assert shifted.column(name).equals(base.column(name)), name
    np.testing.assert_allclose(
        shifted.column("x1").to_numpy() - base.column("x1").to_numpy(), SHIFT_X1
    )
    colors = shifted.column("color").drop_null().to_pylist()
    shares = [colors.count(c) / len(colors) for c in ("blue", "green", "red", "yellow")]
    np.testing.assert_allclose(shares, SHIFT_COLOR_P, atol=0.02)
    assert shifted.column("color").null_count == base.column("color").null_count


def test_demo_columns_built_by_arrow_kernels_match_their_python_spelling():
    table = demo_table(2_000, seed=4, shifted=True)
    assert table.column("id").to_pylist() == [f"row-{i:08d}" for i in range(2_000)]
    colors = table.column("color").to_pylist()
    assert set(colors) <= {"blue", "green", "red", "yellow", None} and None in colors
    assert set(table.column("region").to_pylist()) == {"north", "south", "east", "west", "centre"}


def test_an_empty_demo_table_keeps_its_string_types():
    schema = demo_table(0).schema
    assert schema.field("id").type == schema.field("region").type == pa.string()


def test_a_table_larger_than_a_chunk_is_written_chunk_by_chunk_with_continuing_ids(
    tmp_path, monkeypatch
):
    from vertex_imbalanced.warehouse import demo_data

    monkeypatch.setattr(demo_data, "CHUNK_ROWS", 400)
    table = demo_table(1_000, seed=7, shifted=True)
    assert table.column("id").to_pylist() == [f"row-{i:08d}" for i in range(1_000)]
    assert [len(c) for c in demo_data.demo_chunks(1_000, seed=7)] == [400, 400, 200]
    # the chunks draw from different streams (not one chunk repeated)
    x1 = table.column("x1").to_numpy()
    assert not np.allclose(x1[:200], x1[400:600])
    write_demo_duckdb(tmp_path / "d.db", rows=1_000, seed=7, table="demo", shifted=True)
    with duckdb.connect(str(tmp_path / "d.db"), read_only=True) as con:
        got = con.sql("SELECT * FROM demo ORDER BY id").to_arrow_table()
    assert got.equals(table)
    # a table of at most one chunk is the same rows as a single draw of that size
    monkeypatch.setattr(demo_data, "CHUNK_ROWS", 1_000)
    assert demo_table(1_000, seed=7).equals(
        demo_data._chunk(1_000, 0, np.random.default_rng(7), None)
    )


def test_rewriting_the_demo_table_replaces_it_whole_and_leaves_no_staging_table(tmp_path):
    uri = write_demo_duckdb(tmp_path / "d.db", rows=300, seed=1, table="main.demo")
    assert write_demo_duckdb(tmp_path / "d.db", rows=200, seed=2, table="main.demo") == uri
    with duckdb.connect(str(tmp_path / "d.db"), read_only=True) as con:
        tables = con.sql("SELECT table_name FROM information_schema.tables").fetchall()
        got = con.sql("SELECT * FROM main.demo ORDER BY id").to_arrow_table()
    assert tables == [("demo",)]
    assert got.equals(demo_table(200, seed=2))
