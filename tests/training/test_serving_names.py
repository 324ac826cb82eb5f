"""Serving input names: stable, injective, valid signature arguments; a SavedModel served by them."""

import json
import keyword

import keras
import numpy as np
import pyarrow as pa
import pytest
import tensorflow as tf

from vertex_imbalanced.config import FeatureSpec
from vertex_imbalanced.errors import PipelineInputError
from vertex_imbalanced.training.export import export_saved_model
from vertex_imbalanced.training.serving_names import is_signature_name, serving_name, serving_names

# Every kind of name BigQuery accepts that a signature argument cannot be, and near-collisions.
ADVERSARIAL = [
    "_score",
    "__score",
    "score",
    "from",
    "class",
    "lambda",
    "my feature",
    "my_feature",
    "my-feature",
    "my  feature",
    "größe",
    "grösse",
    "groe",
    "2nd_try",
    "日本語",
    "Ünïcödé ",
    "x" * 300,
    "a.b",
    "a_b",
    "#",
    "%",
    "Age",
    "it's",
    "a&b",
    "50%",
    "a|b",
    "x٣",
    "e\u0301",
    "é",
]


def test_valid_names_are_kept_and_others_renamed_stably():
    assert serving_name("my_feature") == "my_feature"
    assert serving_name("Age") == "Age"  # case is kept: TF accepts it
    # fixed expectations: the rule must not change between releases (served names are an API)
    assert serving_name("my feature") == "my_feature_ea938146"
    assert serving_name("_score") == "score_bc8ebaa3"
    assert serving_name("from") == "from_75857a45"
    assert serving_name("größe") == "groe_d353a267"
    assert serving_name("2nd_try").startswith("c_2nd_try_")
    assert serving_name("日本語") == "c_77710aed"


def test_adversarial_names_map_injectively_to_valid_arguments():
    names = serving_names(ADVERSARIAL)
    assert list(names) == ADVERSARIAL
    served = list(names.values())
    assert len({s.lower() for s in served}) == len(served)  # distinct even ignoring case
    for original, name in names.items():
        assert is_signature_name(name) and name.isascii() and not keyword.iskeyword(name)
        assert name == serving_name(original)  # one column's name never depends on the others
    assert names["my feature"] != names["my_feature"] != names["my-feature"]


def test_names_equal_ignoring_case_are_refused_naming_both():
    with pytest.raises(PipelineInputError, match=r"'Score' and 'score' differ only in case"):
        serving_names(["Score", "score"])


def test_a_collision_of_served_names_is_refused_naming_both():
    clash = serving_name("my feature")  # a column literally named like another's served name
    with pytest.raises(PipelineInputError, match=r"'my feature' and 'my_feature_ea938146'"):
        serving_names(["my feature", clash])


def spec_of(numeric, categorical) -> FeatureSpec:
    """A spec with these feature names (FeatureSpec takes every BigQuery column name)."""
    return FeatureSpec(label="label", numeric=numeric, categorical=categorical)


def test_saved_model_is_served_by_the_mapped_names(tmp_path):
    """The signature takes the served names; each reaches its own column of the Keras model."""
    numeric = ("_score", "from", "my feature", "my_feature", "größe")
    categorical = ("class",)
    inputs = {n: keras.Input(shape=(), dtype="float32", name=n) for n in numeric}
    inputs["class"] = keras.Input(shape=(), dtype="string", name="class")
    lookup = keras.layers.StringLookup(vocabulary=["a", "b"], output_mode="one_hot")
    stacked = keras.ops.stack([inputs[n] for n in numeric], axis=-1)
    x = keras.layers.Concatenate()([stacked, lookup(inputs["class"])])
    dense = keras.layers.Dense(2, activation="softmax")
    model = keras.Model(inputs, dense(x))
    kernel = np.zeros((len(numeric) + 3, 2), np.float32)
    kernel[: len(numeric), 1] = [1, 2, 4, 8, 16]  # each column moves class 1 by its own amount
    dense.set_weights([kernel, np.zeros(2, np.float32)])
    export_saved_model(model, spec_of(numeric, categorical), str(tmp_path / "sm"), ["no", "yes"])
    serve = tf.saved_model.load(str(tmp_path / "sm")).signatures["serving_default"]
    names = serving_names([*numeric, *categorical])
    assert sorted(serve.structured_input_signature[1]) == sorted(names.values())
    rows = {n: np.eye(len(numeric), dtype=np.float32)[i] for i, n in enumerate(numeric)}
    features = {n: tf.constant(v) for n, v in rows.items()} | {"class": tf.constant(["a"] * 5)}
    out = serve(**{names[c]: v for c, v in features.items()})
    np.testing.assert_allclose(out["probabilities"].numpy(), model(features).numpy(), rtol=1e-6)
    logit = np.log(out["probabilities"].numpy()[:, 1] / out["probabilities"].numpy()[:, 0])
    np.testing.assert_allclose(logit, [1, 2, 4, 8, 16], rtol=1e-4)  # no two inputs swapped
    assert out["class_name"].numpy().tolist() == [b"yes"] * 5


# Every kind of name of case 6 of issue 11 in one table: a space, its underscore twin, non-ASCII,
# a leading underscore, a Python keyword, a colon and quote; the key and the label too.
FLEXIBLE = {
    "my feature": "num",
    "my_feature": "num",
    "größe": "num",
    "_score": "num",
    "sepal length: cm": "num",
    "from": "str",
    "it's #": "str",
}


@pytest.fixture(scope="module")
def flexible_run(tmp_path_factory):
    """A DuckDB table with flexible names, split by prepare_data and trained for 2 epochs."""
    import duckdb

    from vertex_imbalanced.config import Hyperparameters
    from vertex_imbalanced.reading.sources.duckdb_source import duckdb_uri
    from vertex_imbalanced.training.trainer import train_prepared
    from vertex_imbalanced.warehouse.prepare import prepare_data

    root = tmp_path_factory.mktemp("flexible")
    rng = np.random.default_rng(0)
    n = 1200
    y = rng.integers(0, 2, n)
    columns = {"row id": [f"r{i}" for i in range(n)]}
    for i, (name, kind) in enumerate(FLEXIBLE.items()):
        if kind == "num":
            columns[name] = rng.normal(y * (i + 1) * 0.3, 1.0)  # each column its own signal
        else:
            columns[name] = np.where(rng.random(n) < 0.7, ["a b", "größe"][i % 2], "c'd")
    columns["churn flag"] = np.where(y == 1, "churned", "stayed")
    db = root / "source.db"
    with duckdb.connect(str(db)) as con:
        con.register("rows", pa.table(columns))
        con.execute("CREATE TABLE src AS SELECT * FROM rows")
    prepared = prepare_data(
        duckdb_uri(db, "src"), FeatureSpec(label="churn flag", key="row id"), output_prefix="run"
    )
    hp = Hyperparameters(hidden_units=(8,), epochs=2, batch_size=128)
    result = train_prepared(prepared, hp, root / "model")
    return prepared, result


@pytest.mark.filterwarnings("ignore:the best epoch is the last allowed one")
def test_flexible_names_train_export_and_serve_by_the_mapped_names(flexible_run):
    """Split SQL, reader, training, export and serving, all with BigQuery flexible names."""
    from vertex_imbalanced.reading.sources.open import open_source

    prepared, result = flexible_run
    spec = prepared.spec
    assert set(spec.numeric) == {n for n, k in FLEXIBLE.items() if k == "num"}
    assert set(spec.categorical) == {n for n, k in FLEXIBLE.items() if k == "str"}
    assert prepared.classes == ("churned", "stayed")
    meta = json.loads((result.model_dir / "model_metadata.json").read_text())
    names = meta["serving_inputs"]
    assert names == serving_names(spec.features)
    assert names["my_feature"] == "my_feature" and names["my feature"] == "my_feature_ea938146"
    assert names["größe"] == "groe_d353a267" and names["from"] == "from_75857a45"

    source = open_source(prepared.test_uri, spec.features, num_streams=1)
    rows = pa.concat_tables(
        pa.Table.from_batches([b]) for i in range(source.num_streams) for b in source.read_stream(i)
    )
    features = {
        c: tf.constant(rows[c].to_numpy(zero_copy_only=False).astype(np.float32))
        if c in spec.numeric
        else tf.constant(rows[c].to_pylist())
        for c in spec.features
    }
    expected = result.model(features).numpy()  # the training-time model, by column names
    serve = tf.saved_model.load(str(result.model_dir / "saved_model")).signatures["serving_default"]
    assert sorted(serve.structured_input_signature[1]) == sorted(names.values())
    served = serve(**{names[c]: v for c, v in features.items()})
    np.testing.assert_allclose(served["probabilities"].numpy(), expected, rtol=1e-5, atol=1e-6)
    reloaded = keras.models.load_model(result.model_dir / "model.keras")
    np.testing.assert_allclose(reloaded(features).numpy(), expected, rtol=1e-5, atol=1e-6)
    # every column matters: moving one input changes the served probabilities
    for column in spec.numeric:
        moved = dict(features) | {column: features[column] + 3.0}
        changed = serve(**{names[c]: v for c, v in moved.items()})["probabilities"].numpy()
        assert np.abs(changed - expected).max() > 1e-4, column
