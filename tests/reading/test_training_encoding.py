"""The training feed (make_encoded_dataset) against the raw feed and the exported model."""

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest
import tensorflow as tf

from vertex_imbalanced.config import FeatureSpec, Hyperparameters
from vertex_imbalanced.errors import LabelError
from vertex_imbalanced.reading.datasets import (
    DatasetReport,
    FeedOptions,
    encoded_signature,
    make_dataset,
    make_encoded_dataset,
    raise_source_errors,
)
from vertex_imbalanced.reading.sources.arrow_memory import ArrowTableSource
from vertex_imbalanced.reading.training_encoding import (
    CHUNK_ROWS,
    BufferPool,
    CategoryLookup,
    ChunkEncoder,
)
from vertex_imbalanced.training.model import build_model, encoded_model, model_vocabularies
from vertex_imbalanced.training.statistics import compute_feature_stats

CLASSES = ("a", "b", "c")
SPEC = FeatureSpec(
    label="label",
    numeric=("i64", "f64", "flag", "day", "ts"),
    categorical=("city", "zone", "member", "wide"),
    key="key",
    weight="w",
    classes=CLASSES,
)


def mixed_table(n: int, seed: int, cities: tuple[str, ...]) -> pa.Table:
    """Every supported type, NULLs everywhere, "" as a real value."""
    rng = np.random.default_rng(seed)

    def nulls(p=0.15):
        return rng.random(n) < p

    epoch = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    return pa.table(
        {
            "key": pa.array([f"k{seed}-{i}" for i in range(n)]),
            "i64": pa.array(rng.integers(-50, 50, n), pa.int64(), mask=nulls()),
            "f64": pa.array(rng.normal(size=n), mask=nulls()),
            "flag": pa.array(rng.random(n) < 0.3, mask=nulls()),
            "day": pa.array(
                [dt.date(2020, 1, 1) + dt.timedelta(days=int(d)) for d in rng.integers(0, 900, n)],
                mask=nulls(),
            ),
            "ts": pa.array(
                [epoch + dt.timedelta(hours=int(h)) for h in rng.integers(0, 5000, n)],
                pa.timestamp("us", tz="UTC"),
                mask=nulls(),
            ),
            "city": pa.array(list(rng.choice(cities, n)), pa.string(), mask=nulls()),
            "zone": pa.array(rng.integers(0, 6, n), pa.int64(), mask=nulls()),
            "member": pa.array(rng.random(n) < 0.5, mask=nulls()),
            "wide": pa.array(list(rng.choice(cities, n)), pa.large_string(), mask=nulls()),
            "label": pa.array(list(rng.choice(CLASSES, n, p=(0.7, 0.2, 0.1)))),
            "w": pa.array(rng.choice([1.0, 4.0], n)),
        }
    )


@pytest.fixture(scope="module")
def model_and_test():
    train = mixed_table(3000, seed=0, cities=("paris", "", "lyon", "münchen"))
    test = mixed_table(1500, seed=1, cities=("paris", "", "lyon", "münchen", "unseen"))
    with raise_source_errors():
        stats = compute_feature_stats(
            make_dataset(ArrowTableSource(train), SPEC), SPEC, len(CLASSES), description="train"
        )
    model = build_model(SPEC, stats, CLASSES, Hyperparameters(hidden_units=(8,), seed=3))
    vocabularies = model_vocabularies(SPEC, stats)
    return model, vocabularies, test


def encoded_rows(source, vocabularies, report=None, chunk_rows=CHUNK_ROWS, **options):
    ds = make_encoded_dataset(
        source, SPEC, vocabularies, FeedOptions(**options), report=report, chunk_rows=chunk_rows
    )
    with raise_source_errors():
        batches = list(ds)
    features = {k: np.concatenate([b[0][k].numpy() for b in batches]) for k in batches[0][0]}
    label = np.concatenate([b[1].numpy() for b in batches])
    weight = np.concatenate([b[2].numpy() for b in batches])
    return features, label, weight


def test_encoded_feed_is_what_the_exported_model_computes_from_raw_rows(model_and_test):
    model, vocabularies, test = model_and_test
    source = ArrowTableSource(test, num_streams=1, batch_rows=200)  # same row order in both
    encoded, label, weight = encoded_rows(source, vocabularies, batch_size=4096, chunk_rows=500)
    with raise_source_errors():
        (raw, raw_label, raw_weight), *rest = list(
            make_dataset(source, SPEC, FeedOptions(batch_size=4096))
        )
    assert not rest and len(label) == len(test)
    np.testing.assert_array_equal(label, raw_label.numpy())
    np.testing.assert_array_equal(weight, raw_weight.numpy())
    numeric = np.stack([raw[c].numpy() for c in SPEC.numeric], axis=-1)
    np.testing.assert_array_equal(encoded["numeric"], numeric)  # NaN == NaN here
    for j, column in enumerate(SPEC.categorical):
        ids = model.get_layer(f"lookup_{column}")(raw[column]).numpy()
        np.testing.assert_array_equal(encoded["categorical"][:, j], ids, err_msg=column)
    assert (encoded["categorical"][:, 0] == 0).any()  # "unseen" -> out of vocabulary
    # the model trained on the encoded feed predicts exactly what the served model does
    served = model(raw).numpy()
    trained = encoded_model(model)(encoded).numpy()
    np.testing.assert_allclose(trained, served, rtol=1e-6, atol=1e-7)


def test_element_spec_matches_encoded_signature(model_and_test):
    _, vocabularies, test = model_and_test
    ds = make_encoded_dataset(
        ArrowTableSource(test), SPEC, vocabularies, FeedOptions(batch_size=64)
    )
    assert ds.element_spec == tf.nest.map_structure(
        lambda s: tf.TensorSpec([None, *s.shape[1:]], s.dtype), encoded_signature(SPEC)
    )


def keyed_table(n: int) -> pa.Table:
    x = np.arange(n, dtype=np.float64)
    return pa.table({"x": x, "label": np.arange(n) % 3, "w": 2.0 * x})


KEYED = FeatureSpec(label="label", numeric=("x",), weight="w", classes=("0", "1", "2"))


def keyed_rows(source, chunk_rows=CHUNK_ROWS, weight_scale=1.0, **options):
    rows = []
    ds = make_encoded_dataset(
        source, KEYED, {}, FeedOptions(**options), chunk_rows=chunk_rows, weight_scale=weight_scale
    )
    with raise_source_errors():
        for f, y, w in ds:
            rows.append(np.stack([f["numeric"][:, 0].numpy(), y.numpy(), w.numpy()], axis=-1))
    return np.concatenate(rows)


def test_shards_chunks_and_shuffle_keep_every_row_once_with_its_label_and_weight():
    n = 10_007
    source = ArrowTableSource(keyed_table(n), num_streams=4, batch_rows=300)
    parts = [
        keyed_rows(
            source, batch_size=128, shard_index=s, num_shards=2, chunk_rows=1000, shuffle_batches=9
        )
        for s in range(2)
    ]
    rows = np.concatenate(parts)
    np.testing.assert_array_equal(np.sort(rows[:, 0]), np.arange(n))
    np.testing.assert_array_equal(rows[:, 1], rows[:, 0] % 3)  # label still with its row
    np.testing.assert_array_equal(rows[:, 2], 2 * rows[:, 0])  # weight too
    assert not np.array_equal(rows[:, 0], np.sort(rows[:, 0]))


def test_batch_shuffle_is_the_same_every_pass_and_moves_whole_batches():
    source = ArrowTableSource(keyed_table(5000), num_streams=1, batch_rows=250)
    kwargs = dict(batch_size=100, chunk_rows=1000, shuffle_batches=16)
    first = keyed_rows(source, seed=7, **kwargs)[:, 0]
    np.testing.assert_array_equal(first, keyed_rows(source, seed=7, **kwargs)[:, 0])
    assert not np.array_equal(first, keyed_rows(source, seed=8, **kwargs)[:, 0])
    batches = first.reshape(50, 100)
    np.testing.assert_array_equal(batches - batches[:, :1], np.tile(np.arange(100), (50, 1)))
    assert not np.array_equal(batches[:, 0], np.sort(batches[:, 0]))
    plain = keyed_rows(source, batch_size=100, chunk_rows=1000)[:, 0]
    np.testing.assert_array_equal(plain, np.arange(5000))


def test_weight_scale_multiplies_weights_and_must_be_positive():
    source = ArrowTableSource(keyed_table(10))
    rows = keyed_rows(source, batch_size=4, weight_scale=0.5)
    np.testing.assert_array_equal(rows[:, 2], rows[:, 0])
    with pytest.raises(ValueError, match="weight_scale"):
        make_encoded_dataset(source, KEYED, {}, FeedOptions(batch_size=4), weight_scale=0)


def test_bad_labels_fail_or_are_skipped_like_the_raw_feed(model_and_test):
    _, vocabularies, test = model_and_test
    labels = test.column("label").to_pylist()
    labels[7] = None
    labels[11] = "zebra"
    bad = test.set_column(test.schema.get_field_index("label"), "label", pa.array(labels))
    source = ArrowTableSource(bad, batch_rows=100)
    with pytest.raises(LabelError, match=r"'label'.*NULL.*key='k1-7'"):
        encoded_rows(source, vocabularies, batch_size=64)
    report = DatasetReport()
    _, label, _ = encoded_rows(
        source, vocabularies, batch_size=64, label_policy="skip", report=report
    )
    assert len(label) == len(test) - 2
    assert report.skipped_labels == 2 and report.skipped_examples == ["k1-7", "k1-11"]
    assert report.rows_read == len(test) - 2


def test_training_feed_needs_a_batch_size():
    with pytest.raises(ValueError, match="needs FeedOptions.batch_size"):
        make_encoded_dataset(ArrowTableSource(keyed_table(10)), KEYED, {}, FeedOptions())


def test_missing_vocabulary_is_a_clear_error(model_and_test):
    _, vocabularies, test = model_and_test
    partial = {k: v for k, v in vocabularies.items() if k != "zone"}
    with pytest.raises(ValueError, match=r"no vocabulary.*'zone'"):
        make_encoded_dataset(ArrowTableSource(test), SPEC, partial, FeedOptions(batch_size=8))


def test_integer_labels_match_integer_class_names_in_declared_order():
    table = pa.table({"x": [1.0, 2.0, 3.0], "label": pa.array([2, 0, 1], pa.int32())})
    spec = FeatureSpec(label="label", numeric=("x",), classes=("2", "0", "1"))
    _, label, _ = ChunkEncoder(spec, spec.classes, {}, description="t").encode(table)
    np.testing.assert_array_equal(label, [0, 1, 2])
    bad = table.set_column(1, "label", pa.array([2, 7, 1], pa.int32()))
    with pytest.raises(LabelError, match=r"value 7 outside the declared classes"):
        ChunkEncoder(spec, spec.classes, {}, description="t").encode(bad)


def test_category_lookup_follows_string_lookup_rules():
    ids = np.empty(6, np.int32)
    CategoryLookup(["b", "", "a"])(pa.array(["a", None, "", "b", "zzz", "A"]), ids)
    np.testing.assert_array_equal(ids, [3, 2, 2, 1, 0, 0])  # NULL and "" share the "" token
    CategoryLookup(["b", "a"])(pa.array(["a", None, "", "b", "zzz", "A"]), ids)
    np.testing.assert_array_equal(ids, [2, 0, 0, 1, 0, 0])  # without "" in the vocabulary: OOV


def test_reused_buffers_never_overwrite_batches_still_held():
    n = 3000
    source = ArrowTableSource(keyed_table(n), num_streams=2, batch_rows=70)
    options = FeedOptions(batch_size=50, shuffle_batches=7)
    ds = make_encoded_dataset(source, KEYED, {}, options, chunk_rows=100)
    with raise_source_errors():
        held = list(ds)  # every tensor of the epoch alive at once, then checked
    x = np.concatenate([f["numeric"][:, 0].numpy() for f, _, _ in held])
    label = np.concatenate([y.numpy() for _, y, _ in held])
    weight = np.concatenate([w.numpy() for _, _, w in held])
    np.testing.assert_array_equal(np.sort(x), np.arange(n))
    np.testing.assert_array_equal(label, x % 3)
    np.testing.assert_array_equal(weight, 2 * x)


def test_buffer_pool_reuses_a_block_only_when_nothing_else_holds_it():
    pool = BufferPool(limit=4)
    first = pool.take((100, 10), np.float32)
    first[:] = 1
    second = pool.take((100, 10), np.float32)  # first is still alive: a new block
    assert not np.shares_memory(first, second)
    view = first[:3]
    del first
    third = pool.take((50, 10), np.float32)
    assert not np.shares_memory(third, view)  # a view of the block keeps it busy
    del view, second, third
    blocks = len(pool._blocks)
    again = pool.take((20,), np.int32)  # everything released: an existing block is reused
    assert len(pool._blocks) == blocks == 3 and again.flags.c_contiguous
