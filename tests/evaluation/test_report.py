"""The HTML report is self-contained, escapes class names and shows every section it should."""

from __future__ import annotations

import base64
import re
import warnings
from html.parser import HTMLParser

import numpy as np
import pytest

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


def _metrics(classes, counts, seed=0, threshold=None):
    rng = np.random.default_rng(seed)
    y = np.concatenate([np.full(n, k) for k, n in enumerate(counts)])
    logits = rng.normal(size=(y.size, len(classes)))
    logits[np.arange(y.size), y] += 1.5
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    acc = ClassificationAccumulator(classes, threshold=threshold)
    acc.update(y, p.astype(np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = acc.result()
    m["test_source"] = "duckdb:///tmp/x.db?table=test"
    if threshold is not None:
        m["best_threshold"] = threshold
        m["validation"] = {"num_examples": 100, "best_f1": 0.5, "best_threshold": threshold}
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
    m = _metrics(["negative", "fraud"], [950, 50], threshold=0.3)
    page = render_report(m, title="Evaluation of run-7")
    parser = _check_self_contained(page)
    assert parser.headings == [
        "Per-class metrics",
        "Confusion matrix",
        "Decision threshold",
        "Calibration",
    ]
    assert len(parser.refs) == 3  # heatmap, ROC+PR, calibration
    assert "positive class <b>fraud</b> (5.00% of rows)" in page
    assert f"{m['macro_f1']:.3f}" in page
    assert "p(fraud) ≥ 0.3000" in page


def test_multiclass_report_escapes_names_and_lists_notes():
    classes = [f"class_{i}" for i in range(11)] + ["<script>x</script>"]
    counts = [100] * 11 + [0]  # the last class is absent -> a note
    page = render_report(_metrics(classes, counts, seed=1))
    parser = _check_self_contained(page)
    assert "<script>" not in page
    assert "&lt;script&gt;x&lt;/script&gt;" in page
    assert "Decision threshold" not in parser.headings
    assert "is absent from the data: recall set to 0" in page
    assert page.count("<tr>") == 1 + 12 + 2  # header, classes, two averages


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
