"""Feed side of issue 11 case 5: any string maps to the id the vocabulary rule gives it.

The rule, shared with the served model's ``StringLookup`` (``training/model.py``; its property
test is on that side): for a categorical column with tokens ``model_vocabularies(...)[column]``
the id of a string ``s`` is ``tokens.index(s) + 1`` when ``s`` is a token, else 0; a NULL is read
as ``""`` first; strings compare byte for byte (no stripping, case folding or normalisation).
The lookup layer's own OOV token ``"[UNK]"`` is an ordinary value here. A property test over
random vocabularies and inputs drawn from adversarial tokens checks the feed's lookup, and the
whole training feed and the raw feed (which hands the served model the exact bytes) are checked
on the same tokens.
"""

import random

import numpy as np
import pyarrow as pa
import pytest

from vertex_imbalanced.config import FeatureSpec
from vertex_imbalanced.reading.datasets import (
    FeedOptions,
    make_dataset,
    make_encoded_dataset,
    raise_source_errors,
)
from vertex_imbalanced.reading.record_packing import MISSING_CATEGORY
from vertex_imbalanced.reading.sources.arrow_memory import ArrowTableSource
from vertex_imbalanced.reading.training_encoding import CategoryLookup

ADVERSARIAL = [
    "[UNK]",  # StringLookup's default OOV token
    "[UNK]#1",  # the model's fallback OOV token
    "",  # the missing category
    " ",
    "  ",
    "\t",
    "\n",
    "\r\n",
    "\x00",
    "a\x00b",
    "paris",
    "Paris",
    "paris ",
    " paris",
    "PARIS",
    "é",  # composed
    "e\u0301",  # decomposed: another string
    "münchen",
    "東京",
    "مرحبا",
    "🙂",
    "👩‍👩‍👧",
    "\u200b",  # zero-width space
    "NULL",
    "None",
    "nan",
    "NaN",
    "1",
    "01",
    "1.0",
    "-0",
    "true",
    "x" * 10_000,
    "y" * 10_000 + "\u00e9",
]


def rule(tokens: list[str], value: str | None) -> int:
    """The documented id of ``value`` (None = NULL)."""
    value = MISSING_CATEGORY if value is None else value
    return tokens.index(value) + 1 if value in tokens else 0


def draw_vocabulary(rng: random.Random) -> list[str]:
    tokens = rng.sample(ADVERSARIAL, rng.randint(0, len(ADVERSARIAL)))
    if rng.random() < 0.8:  # model_vocabularies always appends "" unless training saw it
        tokens = [t for t in tokens if t != MISSING_CATEGORY] + [MISSING_CATEGORY]
    return tokens


def draw_values(rng: random.Random, n: int) -> list[str | None]:
    pool = [*ADVERSARIAL, None, "unseen", "[unk]", "[UNK] "]
    return [rng.choice(pool) for _ in range(n)]


@pytest.mark.parametrize("arrow_type", [pa.string(), pa.large_string()], ids=str)
def test_category_lookup_follows_the_vocabulary_rule_for_adversarial_tokens(arrow_type):
    rng = random.Random(5)
    for _ in range(300):
        tokens = draw_vocabulary(rng)
        values = draw_values(rng, 60)
        out = np.full(len(values), -1, np.int32)
        CategoryLookup(tokens)(pa.array(values, arrow_type), out)
        assert out.tolist() == [rule(tokens, v) for v in values], tokens


def test_training_feed_and_raw_feed_agree_with_the_rule_on_every_adversarial_token():
    rng = random.Random(11)
    values = [*ADVERSARIAL, None, "unseen", *draw_values(rng, 200)]
    tokens = {"city": draw_vocabulary(rng), "wide": list(ADVERSARIAL)}
    table = pa.table(
        {
            "city": pa.array(values, pa.string()),
            "wide": pa.array(values, pa.large_string()),
            "label": pa.array([i % 2 for i in range(len(values))], pa.int64()),
        }
    )
    spec = FeatureSpec(label="label", categorical=("city", "wide"), classes=("0", "1"))
    source = ArrowTableSource(table, batch_rows=17)
    with raise_source_errors():
        encoded = list(make_encoded_dataset(source, spec, tokens, FeedOptions(batch_size=64)))
        raw = list(make_dataset(source, spec))
    ids = np.concatenate([f["categorical"].numpy() for f, _, _ in encoded])
    for j, column in enumerate(("city", "wide")):
        assert ids[:, j].tolist() == [rule(tokens[column], v) for v in values], column
        # the raw feed hands the served model exactly these bytes (NULL -> "")
        served = [b for f, _, _ in raw for b in f[column].numpy().tolist()]
        assert served == [(MISSING_CATEGORY if v is None else v).encode() for v in values]


def test_integer_and_boolean_categories_map_by_their_text():
    tokens = ["-5", "0", "true", "[UNK]", ""]
    out = np.zeros(4, np.int32)
    CategoryLookup(tokens)(pa.array([-5, 0, 7, None], pa.int64()), out)
    assert out.tolist() == [1, 2, 0, 5]
    CategoryLookup(tokens)(pa.array([True, False, None, True]), out)
    assert out.tolist() == [3, 0, 5, 3]
