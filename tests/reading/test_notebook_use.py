"""Notebook use of the feeds and the exported model (issue 11 case 14).

Errors of our own types at the call site (no TensorFlow wrapper), a spec without features is
refused, and a pandas DataFrame goes into the exported model (Keras and SavedModel) with the
values the feeds give the same rows.
"""

import keras
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import tensorflow as tf

from vertex_imbalanced.config import FeatureSpec, Hyperparameters
from vertex_imbalanced.errors import LabelError, PipelineInputError, SchemaError
from vertex_imbalanced.reading.datasets import (
    FeedOptions,
    features_from_pandas,
    make_dataset,
    make_encoded_dataset,
    raise_source_errors,
)
from vertex_imbalanced.reading.sources.arrow_memory import ArrowTableSource
from vertex_imbalanced.training.export import export_saved_model
from vertex_imbalanced.training.model import build_model
from vertex_imbalanced.training.statistics import compute_feature_stats

SPEC = FeatureSpec(
    label="label",
    numeric=("amount", "count", "opened", "active"),
    categorical=("city", "plan", "zone"),
    key="id",
    classes=("no", "yes"),
)


def frame(n: int = 40, seed: int = 0) -> pd.DataFrame:
    """pandas dtypes a notebook has: object/str, category, nullable Int64/boolean, datetime."""
    rng = np.random.default_rng(seed)
    amount = rng.normal(100, 20, n)
    amount[::7] = np.nan
    count = pd.array(rng.integers(0, 9, n), dtype="Int64")
    count[::5] = pd.NA
    zone = rng.integers(1, 4, n).astype(float)  # INT64 categorical with NULLs: pandas floats
    zone[::6] = np.nan
    city = rng.choice(["paris", "", "münchen", "[UNK]"], n).astype(object)
    city[::4] = None
    return pd.DataFrame(
        {
            "id": [f"r{i}" for i in range(n)],
            "amount": amount,
            "count": count,
            "opened": pd.to_datetime("2024-01-01") + pd.to_timedelta(rng.integers(0, 900, n), "D"),
            "active": pd.array(rng.random(n) < 0.5, dtype="boolean"),
            "city": city,
            "plan": pd.Categorical(rng.choice(["basic", "pro"], n)),
            "zone": zone,
            "label": rng.choice(["no", "yes"], n),
        }
    )


def as_source(df: pd.DataFrame) -> ArrowTableSource:
    table = pa.Table.from_pandas(df, preserve_index=False)
    table = table.set_column(
        table.schema.get_field_index("plan"), "plan", table.column("plan").cast(pa.string())
    )
    zone = table.column("zone").cast(pa.int64())
    return ArrowTableSource(table.set_column(table.schema.get_field_index("zone"), "zone", zone))


def bad_label_source() -> ArrowTableSource:
    df = frame()
    df.loc[3, "label"] = "maybe"
    return as_source(df)


# --- errors at the call site ----------------------------------------------------------------


def test_a_spec_without_features_is_refused_at_the_call():
    source = as_source(frame())
    empty = FeatureSpec(label="label", key="id", classes=("no", "yes"))
    with pytest.raises(PipelineInputError, match="lists no feature column"):
        make_dataset(source, empty)
    with pytest.raises(PipelineInputError, match="lists no feature column"):
        make_encoded_dataset(source, empty, {}, FeedOptions(batch_size=8))
    # reading labels only is explicit
    labels = np.concatenate([y.numpy() for f, y, _ in make_dataset(source, SPEC, labels_only=True)])
    assert len(labels) == 40 and set(labels) <= {0, 1}


@pytest.mark.parametrize(
    "iterate",
    [
        lambda ds: [b for b in ds],
        lambda ds: next(iter(ds)),
        lambda ds: list(ds.as_numpy_iterator()),
    ],
    ids=["for", "next", "as_numpy_iterator"],
)
def test_a_label_error_is_our_own_type_where_the_feed_is_iterated(iterate):
    for ds in (
        make_dataset(bad_label_source(), SPEC),
        make_encoded_dataset(
            bad_label_source(),
            SPEC,
            {"city": ["paris"], "plan": ["pro"], "zone": ["1"]},
            FeedOptions(batch_size=8),
        ),
    ):
        with pytest.raises(LabelError, match="value 'maybe' outside the declared classes") as err:
            iterate(ds)  # no raise_source_errors(): `except LabelError` must work as is
        assert type(err.value) is LabelError
        assert err.value.__cause__ is None and err.value.__suppress_context__


def _impute(features, label, weight):
    x = features["numeric"]
    return {"numeric": tf.where(tf.math.is_nan(x), 0.0, x)}, label, weight


def test_the_wrapped_feed_still_trains_and_derived_datasets_need_the_context_manager():
    spec = FeatureSpec(label="label", numeric=("amount",), classes=("no", "yes"))
    ds = make_encoded_dataset(as_source(frame()), spec, {}, FeedOptions(batch_size=8))
    inputs = keras.Input((1,), name="numeric")
    model = keras.Model({"numeric": inputs}, keras.layers.Dense(2, "softmax")(inputs))
    model.compile("sgd", "sparse_categorical_crossentropy")
    history = model.fit(ds.map(_impute), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    with pytest.raises(LabelError), raise_source_errors():
        list(make_dataset(bad_label_source(), SPEC).map(lambda f, y, w: y))


# --- predicting from a DataFrame -------------------------------------------------------------


@pytest.fixture(scope="module")
def model():
    with raise_source_errors():
        stats = compute_feature_stats(make_dataset(as_source(frame(400, 1)), SPEC), SPEC, 2)
    return build_model(SPEC, stats, SPEC.classes, Hyperparameters(hidden_units=(4,), seed=1))


def test_features_from_pandas_equal_the_feed_values_of_the_same_rows():
    df = frame()
    got = features_from_pandas(df, SPEC)
    with raise_source_errors():
        (fed, _, _), *_ = list(make_dataset(as_source(df), SPEC))
    assert list(got) == list(SPEC.features)
    for name in SPEC.numeric:
        assert got[name].dtype == tf.float32
        np.testing.assert_array_equal(got[name].numpy(), fed[name].numpy(), err_msg=name)
    for name in SPEC.categorical:
        assert got[name].dtype == tf.string
        assert got[name].numpy().tolist() == fed[name].numpy().tolist(), name
    assert got["city"].numpy()[0] == b""  # None -> the missing category
    assert got["zone"].numpy()[1] in (b"1", b"2", b"3")  # pandas floats of an INT64 column


def test_the_exported_model_predicts_a_dataframe_in_one_line(model, tmp_path):
    df = frame(25, seed=2)
    with raise_source_errors():
        (fed, _, _), *_ = list(make_dataset(as_source(df), SPEC))
    want = model(fed).numpy()
    np.testing.assert_allclose(model(features_from_pandas(df, SPEC)).numpy(), want, rtol=1e-6)
    export_saved_model(model, SPEC, str(tmp_path / "saved_model"), SPEC.classes)
    serve = tf.saved_model.load(str(tmp_path / "saved_model")).signatures["serving_default"]
    out = serve(**features_from_pandas(df, SPEC))
    np.testing.assert_allclose(out["probabilities"].numpy(), want, rtol=1e-6)
    assert set(out["class_name"].numpy().tolist()) <= {b"no", b"yes"}


def test_dataframe_problems_name_the_column():
    df = frame()
    with pytest.raises(SchemaError, match="no column 'plan'"):
        features_from_pandas(df.drop(columns="plan"), SPEC)
    with pytest.raises(SchemaError, match="column 'amount'.*reads it as a number"):
        features_from_pandas(df.assign(amount=["x"] * len(df)), SPEC)
    mixed = df.assign(count=[1, "two"] * (len(df) // 2))
    with pytest.raises(SchemaError, match="column 'count' of the DataFrame"):
        features_from_pandas(mixed, SPEC)
    with pytest.raises(SchemaError, match="column 'zone'.*categorical"):
        features_from_pandas(df.assign(zone=0.5), SPEC)
