import math

import pytest

from vertex_imbalanced.config import DOWNSAMPLING_MODES, IMBALANCE_MODES, ImbalanceConfig
from vertex_imbalanced.warehouse.demo_data import DEMO_SPEC, write_demo_duckdb
from vertex_imbalanced.warehouse.prepare import prepare_data
from vertex_imbalanced.warehouse.rebalance import ImbalanceReport, keep_rates, plan

COUNTS = {"a": 9000, "b": 900, "c": 100}


def test_max_ratio_caps_every_class_at_ratio_times_the_smallest():
    rates = keep_rates(COUNTS, ImbalanceConfig(max_ratio=5))
    assert rates == {"a": pytest.approx(500 / 9000), "b": pytest.approx(500 / 900), "c": 1.0}


def test_classes_below_the_target_are_kept_whole():
    assert keep_rates(COUNTS, ImbalanceConfig(max_ratio=100)) == {"a": 1.0, "b": 1.0, "c": 1.0}


def test_target_share_limits_the_largest_class_share():
    rates = keep_rates(COUNTS, ImbalanceConfig(max_ratio=None, target_share=0.5))
    kept = {c: COUNTS[c] * r for c, r in rates.items()}
    assert max(kept.values()) / sum(kept.values()) == pytest.approx(0.5, abs=1e-6)
    assert rates["b"] == rates["c"] == 1.0  # only the majority class is above the cap


def test_target_share_below_one_over_k_makes_classes_equal():
    rates = keep_rates(COUNTS, ImbalanceConfig(max_ratio=None, target_share=0.2))
    kept = {c: COUNTS[c] * r for c, r in rates.items()}
    assert kept == pytest.approx({"a": 100, "b": 100, "c": 100})


def test_when_both_targets_are_set_the_stricter_wins():
    both = keep_rates(COUNTS, ImbalanceConfig(max_ratio=50, target_share=0.5))
    share = keep_rates(COUNTS, ImbalanceConfig(max_ratio=None, target_share=0.5))
    ratio = keep_rates(COUNTS, ImbalanceConfig(max_ratio=50, target_share=None))
    assert both == {c: min(share[c], ratio[c]) for c in COUNTS}


def test_empty_classes_are_ignored_for_the_minority():
    rates = keep_rates({"a": 1000, "b": 10, "c": 0}, ImbalanceConfig(max_ratio=10))
    assert rates == {"a": pytest.approx(0.1), "b": 1.0, "c": 1.0}


@pytest.mark.parametrize(
    ("mode", "downsampled", "upweighted"),
    [
        ("downsample_upweight", True, True),
        ("downsample_only", True, False),
        ("none", False, False),
    ],
)
def test_weights_per_mode(mode, downsampled, upweighted):
    p = plan(COUNTS, ImbalanceConfig(mode=mode, max_ratio=10))
    assert (p.keep_rates["a"] < 1) == downsampled
    for c, rate in p.keep_rates.items():
        assert p.weights[c] == pytest.approx(1 / rate if upweighted else 1.0)


@pytest.mark.parametrize("mode", IMBALANCE_MODES)
def test_every_mode_has_a_plan_and_only_downsampling_modes_drop_rows(mode):
    p = plan(COUNTS, ImbalanceConfig(mode=mode, max_ratio=10))
    assert p.mode == mode and set(p.keep_rates) == set(p.weights) == set(COUNTS)
    assert (min(p.keep_rates.values()) < 1) == (mode in DOWNSAMPLING_MODES)


def test_class_weight_is_inverse_frequency_with_mean_one():
    p = plan(COUNTS, ImbalanceConfig(mode="class_weight"))
    assert set(p.keep_rates.values()) == {1.0}
    total = sum(COUNTS.values())
    assert sum(COUNTS[c] * p.weights[c] for c in COUNTS) / total == pytest.approx(1.0)
    assert p.weights["c"] / p.weights["a"] == pytest.approx(90)


def test_report_round_trips_through_a_dict():
    report = ImbalanceReport("none", {"a": 1}, {"a": 1.0}, {"a": 1}, {"a": 1.0})
    assert ImbalanceReport.from_dict(report.to_dict()) == report


@pytest.mark.parametrize("mode", ["downsample_upweight", "downsample_only", "class_weight"])
def test_weighted_totals_after_real_sql_downsampling(tmp_path, mode):
    """On DuckDB, through sql/downsample.sql: weighted class totals vs the original counts."""
    uri = write_demo_duckdb(tmp_path / "demo.db", rows=30_000, seed=3)
    prepared = prepare_data(
        uri,
        DEMO_SPEC,
        output_prefix="imb",
        imbalance=ImbalanceConfig(mode=mode, max_ratio=3),
    )
    report = prepared.imbalance_report
    assert report.mode == mode
    original, kept, weighted = report.original_counts, report.kept_counts, report.weighted_counts
    if mode == "class_weight":
        assert kept == original
        assert sum(weighted.values()) == pytest.approx(sum(original.values()))
        assert weighted["0"] == pytest.approx(weighted["2"])  # each class weighs the same
        return
    assert report.keep_rates["0"] < 0.1 and report.keep_rates["2"] == 1.0
    for c, n in original.items():
        rate = report.keep_rates[c]
        noise = 4 * math.sqrt(n * rate * (1 - rate)) + 1e-9
        assert abs(kept[c] - n * rate) <= noise, c
        if mode == "downsample_upweight":
            # weighted totals equal the original counts within sampling noise
            assert abs(weighted[c] - n) <= noise / rate, c
        else:
            assert weighted[c] == kept[c]
    assert kept["0"] / kept["2"] == pytest.approx(3, rel=0.25)
