"""The HTML report is self-contained, escapes class names and shows every section it should."""

from __future__ import annotations

import base64
import re
import warnings
from html.parser import HTMLParser

import numpy as np
import pytest

from vertex_imbalanced.evaluation.decision_rule import DecisionRule
from vertex_imbalanced.evaluation.metrics import ClassificationAccumulator
from vertex_imbalanced.evaluation.report import render_report


class _Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []
        self.headings: list[str] = []
        self._in_h2 = False

    def handle_starttag(self, tag, attrs):
        for key, value in attrs:
            if key in ("src", "href", "data", "action", "poster") and value:
                self.refs.append((tag, key, value))
        self._in_h2 = tag == "h2"

    def handle_data(self, data):
        if self._in_h2:
            self.headings.append(data)
            self._in_h2 = False


def _metrics(classes, counts, seed=0, threshold=None, context=False):
    rng = np.random.default_rng(seed)
    y = np.concatenate([np.full(n, k) for k, n in enumerate(counts)])
    logits = rng.normal(size=(y.size, len(classes)))
    logits[np.arange(y.size), y] += 1.5
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    rule = None
    if threshold is not None:
        rule = DecisionRule(
            "threshold",
            ((threshold, 0.0), (0.0, 1 - threshold)),
            threshold=threshold,
            validation_value=0.61,
            validation_argmax_value=0.52,
            validation_rows=500,
            method="threshold from an exact search over cut points",
        )
    acc = ClassificationAccumulator(classes, rule=rule)
    acc.update(y, p.astype(np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = acc.result()
    m["test_source"] = "duckdb:///tmp/x.db?table=test"
    if context:
        m["context"] = {
            "dataset": "bq://proj.ds.transactions",
            "model_name": "fraud-model",
            "model_version": "3",
            "run": "run-7",
            "date": "2026-11-30 06:00 UTC",
            "label": "is_fraud",
            "split_counts": {
                "train": {c: 10 * n for c, n in zip(classes, counts, strict=True)},
                "test": dict(zip(classes, counts, strict=True)),
            },
            "features": {"numeric": ["amount"], "categorical": ["country"], "key": "id"},
            "imbalance": {
                "mode": "downsample_upweight",
                "original_counts": {c: 10 * n for c, n in zip(classes, counts, strict=True)},
                "keep_rates": {c: 0.5 for c in classes},
                "kept_counts": {c: 5 * n for c, n in zip(classes, counts, strict=True)},
                "weighted_counts": {c: 10.0 * n for c, n in zip(classes, counts, strict=True)},
            },
            "training": {
                "epochs_run": 20,
                "best_epoch": 20,
                "max_epochs": 20,
                "batch_size": 512,
                "budget": {"steps_per_epoch": 2, "best_epoch_is_last": True, "warning": None},
            },
            "skipped_labels": {"train": 0, "validation": 0, "test": 3},
        }
        m["baselines"] = {
            "prior": {
                "macro_f1": 0.4872,
                "accuracy": 0.95,
                "log_loss": 0.2,
                "operating_point": {"kind": "argmax"},
            },
            "logistic_regression": {
                "macro_f1": 0.6123,
                "accuracy": 0.93,
                "log_loss": 0.15,
                "roc_auc": 0.8,
                "operating_point": {"kind": "threshold", "threshold": 0.21},
                "sampled_rows": 1000,
                "train_rows": 1000,
                "max_rows": 100000,
            },
        }
    return m


def _check_self_contained(page: str) -> _Refs:
    parser = _Refs()
    parser.feed(page)
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert "url(" not in page and "@import" not in page
    for tag, key, value in parser.refs:
        assert value.startswith("data:image/png;base64,"), (tag, key, value[:40])
        png = base64.b64decode(value.split(",", 1)[1])
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return parser


def test_binary_report_is_self_contained_with_all_sections():
    m = _metrics(["negative", "fraud"], [950, 50], threshold=0.3, context=True)
    page = render_report(m)
    parser = _check_self_contained(page)
    assert parser.headings == [
        "Data and training",
        "Operating point",
        "Baselines",
        "Per-class metrics",
        "Confusion matrix",
        "ROC and precision-recall",
        "Calibration",
    ]
    assert len(parser.refs) == 3  # heatmap, ROC+PR, calibration
    # The title names the model, version, dataset and label; the run and date follow.
    assert "<h1>fraud-model v3 on bq://proj.ds.transactions, predicting is_fraud</h1>" in page
    assert "run run-7 · 2026-11-30 06:00 UTC" in page
    assert "positive class <b>fraud</b> (5.00% of rows)" in page
    assert f"{m['macro_f1']:.3f}" in page
    # Operating point: the rule, how it was chosen, and the test figures at it and at argmax.
    assert "p(fraud) &gt; 0.3000" in page and "exact search over cut points" in page
    assert "0.610 at this rule, 0.520 at argmax" in page
    assert f"{m['argmax']['macro_f1']:.3f}" in page
    assert m["argmax"]["macro_f1"] != m["macro_f1"]
    # Baselines beside the model; data and training facts; the best-epoch warning.
    assert "0.612" in page and "0.487" in page and "class prior (majority class)" in page
    assert "downsample_upweight" in page and "amount" in page and "country" in page
    assert "The best epoch is the last one allowed" in page
    assert "<td>budget: best_epoch_is_last</td><td>True</td>" in page
    assert "Skipped: 3 rows with a NULL label or one outside the classes (test: 3)" in page
    assert "At the operating point (threshold 0.3000)" in page


def test_multiclass_report_escapes_names_and_lists_notes():
    classes = [f"class_{i}" for i in range(11)] + ["<script>x</script>"]
    counts = [100] * 11 + [0]  # the last class is absent -> a note
    page = render_report(_metrics(classes, counts, seed=1))
    parser = _check_self_contained(page)
    assert "<script>" not in page
    assert "&lt;script&gt;x&lt;/script&gt;" in page
    assert "ROC and precision-recall" not in parser.headings
    assert "Baselines" not in parser.headings  # no baselines in these metrics
    assert "is absent from the data: recall set to 0" in page
    # per-class table: header, classes, two averages; operating point (argmax): header, one row
    assert page.count("<tr>") == (1 + 12 + 2) + 2


@pytest.mark.parametrize("classes", [["a", "b"], ["a", "b", "c"]])
def test_report_renders_without_optional_fields(classes):
    m = _metrics(classes, [30] * len(classes))
    for key in ("test_source", "notes", "reliability"):
        m.pop(key, None)
    page = render_report(m)
    parser = _check_self_contained(page)
    assert {"Per-class metrics", "Confusion matrix", "Calibration"} <= set(parser.headings)
    assert f"{m['macro_f1']:.3f}" in page
    assert all(f">{c}<" in page for c in classes)
