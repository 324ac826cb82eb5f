"""One rule for values training would refuse (issue 11 case 8, reading side).

A numeric value that is not a finite float32 (+inf, -inf, or beyond +-3.4e38) reads as missing
(NaN, like NULL) and is counted per column in ``DatasetReport.non_finite``. Training statistics
and evaluation read through ``make_dataset``, training through ``make_encoded_dataset``, batch
scoring through ``numeric_to_float32``: all must give the same values and the same counts.
Before, ``+inf`` in test rows was scored silently while training refused it.
"""

import numpy as np
import pyarrow as pa
import pytest

from vertex_imbalanced.config import FeatureSpec
from vertex_imbalanced.errors import SchemaError
from vertex_imbalanced.reading.datasets import (
    DatasetReport,
    FeedOptions,
    make_dataset,
    make_encoded_dataset,
    raise_source_errors,
)
from vertex_imbalanced.reading.record_packing import numeric_to_float32
from vertex_imbalanced.reading.sources.arrow_memory import ArrowTableSource
from vertex_imbalanced.training.statistics import compute_feature_stats

SPEC = FeatureSpec(label="label", numeric=("amount", "ratio"), classes=("0", "1"))


def table() -> pa.Table:
    amount = [1.0, np.inf, 2.0, -np.inf, None, 1e39, 3.0, np.nan]  # 3 non-finite for float32
    ratio = pa.array([0.5, 0.25, 1e-40, 0.75, 1.0, 2.0, -1.0, 0.0], pa.float32())
    return pa.table(
        {
            "amount": pa.array(amount, pa.float64()),
            "ratio": ratio,
            "label": pa.array([0, 1, 0, 1, 0, 1, 0, 1], pa.int64()),
        }
    )


WANT_AMOUNT = np.array([1.0, np.nan, 2.0, np.nan, np.nan, np.nan, 3.0, np.nan], np.float32)


def test_non_finite_values_read_as_missing_and_are_counted_in_every_feed():
    source = ArrowTableSource(table(), batch_rows=3)
    raw_report, encoded_report, scoring_report = DatasetReport(), DatasetReport(), DatasetReport()
    with raise_source_errors():
        raw = list(make_dataset(source, SPEC, report=raw_report))
        encoded = list(
            make_encoded_dataset(
                source, SPEC, {}, FeedOptions(batch_size=100), report=encoded_report
            )
        )
    raw_amount = np.concatenate([f["amount"].numpy() for f, _, _ in raw])
    encoded_amount = encoded[0][0]["numeric"].numpy()[:, 0]
    scored = numeric_to_float32(table().column("amount"), column="amount", report=scoring_report)
    for got in (raw_amount, encoded_amount, scored):
        np.testing.assert_array_equal(got, WANT_AMOUNT)
    for report in (raw_report, encoded_report, scoring_report):
        assert report.non_finite == {"amount": 3}  # +inf, -inf, 1e39; NULL and NaN are missing
    assert raw_report.to_dict()["non_finite"] == {"amount": 3}
    assert "'amount': 3" in raw_report.non_finite_text()
    assert DatasetReport().non_finite_text() is None


def test_training_statistics_apply_the_same_rule_instead_of_refusing():
    report = DatasetReport()
    with raise_source_errors():
        stats = compute_feature_stats(
            make_dataset(ArrowTableSource(table()), SPEC, report=report), SPEC, 2
        )
    assert stats.numeric["amount"].present == 3  # 1, 2, 3
    assert stats.numeric["amount"].missing == 5
    assert stats.numeric["amount"].mean == pytest.approx(2.0)
    assert report.non_finite == {"amount": 3}


def test_counts_add_up_over_passes_and_threads():
    source = ArrowTableSource(table(), num_streams=2, batch_rows=2)
    report = DatasetReport()
    ds = make_encoded_dataset(source, SPEC, {}, FeedOptions(batch_size=4), report=report)
    with raise_source_errors():
        for _ in range(3):
            list(ds)
    assert report.non_finite == {"amount": 9}


@pytest.mark.parametrize("bad", [np.inf, np.nan])
def test_a_non_finite_weight_is_refused_by_name(bad):
    weighted = table().append_column("w", pa.array([1.0, 1.0, bad, 1.0, 1.0, 1.0, 1.0, 1.0]))
    spec = FeatureSpec(label="label", numeric=("ratio",), weight="w", classes=("0", "1"))
    source = ArrowTableSource(weighted)
    for ds in (
        make_dataset(source, spec),
        make_encoded_dataset(source, spec, {}, FeedOptions(batch_size=4)),
    ):
        with pytest.raises(SchemaError, match="weight column 'w'.*finite"), raise_source_errors():
            list(ds)
