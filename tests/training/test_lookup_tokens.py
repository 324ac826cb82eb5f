"""Issue 11 case 5: every string maps to the same id in the training feed and the served model.

A seeded generator (no hypothesis in the lock) draws adversarial categorical values: the lookup
layer's own OOV token ``[UNK]`` (also as the most frequent value), ``""``, whitespace, NUL,
unicode in both normal forms, emoji, zero-width spaces, 10,000-character values, and random code
points. For each draw the property is checked at both levels:

* ids: :class:`~vertex_imbalanced.reading.training_encoding.CategoryLookup` (the feed) and the
  model's ``StringLookup`` layer give each value the same id;
* probabilities: the exported model on the raw strings equals its inner model on the feed's
  encoded chunk, row by row.
"""

import numpy as np
import pyarrow as pa
import pytest
import tensorflow as tf

from vertex_imbalanced.config import FeatureSpec, Hyperparameters
from vertex_imbalanced.reading.datasets import (
    FeedOptions,
    make_dataset,
    make_encoded_dataset,
    raise_source_errors,
)
from vertex_imbalanced.reading.sources.arrow_memory import ArrowTableSource
from vertex_imbalanced.reading.training_encoding import CategoryLookup
from vertex_imbalanced.training.model import build_model, encoded_model, model_vocabularies
from vertex_imbalanced.training.serving_names import serving_name
from vertex_imbalanced.training.statistics import compute_feature_stats

CLASSES = ("a", "b")
SPEC = FeatureSpec(label="label", numeric=("x",), categorical=("color", "city"))
FIXED = [
    "[UNK]",
    "[UNK]#1",
    "[unk]",
    "",
    " ",
    "  ",
    "\t",
    "\n",
    " red",
    "red ",
    "red",
    "RED",
    "\x00",
    "a\x00b",
    "é",
    "e\u0301",  # the same letter, decomposed (NFD): a different string
    "😀",
    "\u200b",
    "１",
    "NULL",
    "None",
    "nan",
    "x" * 10_000,
]


def random_tokens(rng: np.random.Generator, count: int) -> list[str]:
    """Random strings of 0-12 code points from ASCII up to astral planes (no surrogates)."""
    out = []
    for _ in range(count):
        points = rng.integers(0, 0x2FFFF, rng.integers(0, 13))
        out.append("".join(chr(p) for p in points if not 0xD800 <= p <= 0xDFFF))
    return out


def draw(seed: int, rows: int = 400):
    """A training table whose most frequent category is ``[UNK]`` (seed 0) or random."""
    rng = np.random.default_rng(seed)
    pool = FIXED + random_tokens(rng, 20)
    weights = rng.dirichlet(np.ones(len(pool)))
    if seed == 0:
        weights[0] += 2.0  # "[UNK]" the most frequent value
    weights /= weights.sum()
    values = [pool[i] for i in rng.choice(len(pool), rows, p=weights)]
    color = [None if rng.random() < 0.05 else v for v in values]
    city = [pool[i] for i in rng.choice(len(pool), rows)]
    table = pa.table(
        {
            "x": rng.normal(size=rows),
            "color": pa.array(color, pa.string()),
            "city": pa.array(city, pa.string()),
            "label": pa.array(rng.choice(CLASSES, rows)),
        }
    )
    unseen = random_tokens(rng, 30) + ["[UNK]#2", "never seen"]
    queries = pool + unseen
    return table, queries


def stats_of(table: pa.Table):
    ds = make_dataset(ArrowTableSource(table, batch_rows=97), SPEC, classes=CLASSES)
    with raise_source_errors():
        return compute_feature_stats(ds, SPEC, len(CLASSES), description="t")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_string_gets_the_same_id_and_probabilities_in_feed_and_model(seed):
    table, queries = draw(seed)
    stats = stats_of(table)
    if seed == 0:
        assert stats.vocabularies["color"][0] == "[UNK]"
    vocabularies = model_vocabularies(SPEC, stats)
    model = build_model(SPEC, stats, CLASSES, Hyperparameters(hidden_units=(4,), seed=seed))
    for column in SPEC.categorical:
        feed = np.empty(len(queries), np.int32)
        CategoryLookup(vocabularies[column])(pa.array(queries, pa.string()), feed)
        layer = model.get_layer(f"lookup_{serving_name(column)}")
        served = layer(tf.constant(queries)).numpy()
        mismatch = [(q[:20], f, s) for q, f, s in zip(queries, feed, served, strict=True) if f != s]
        assert not mismatch, mismatch[:5]
        seen = set(stats.vocabularies[column])
        assert all((f > 0) == (q in seen) for q, f in zip(queries, feed, strict=True))

    # the same rows through both paths: raw strings -> outer model, feed chunk -> inner model
    rows = len(queries)
    query_table = pa.table(
        {
            "x": np.linspace(-1, 1, rows),
            "color": pa.array([*queries[:-1], None], pa.string()),
            "city": pa.array(queries[::-1], pa.string()),
            "label": pa.array(["a"] * rows),
        }
    )
    options = FeedOptions(batch_size=rows)
    source = ArrowTableSource(query_table)
    raw, _, _ = next(iter(make_dataset(source, SPEC, options, classes=CLASSES)))
    encoded, _, _ = next(
        iter(make_encoded_dataset(source, SPEC, vocabularies, options, classes=CLASSES))
    )
    served = model(raw).numpy()
    np.testing.assert_allclose(served, encoded_model(model)(encoded).numpy(), rtol=1e-6)
