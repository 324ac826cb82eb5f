"""Self-contained HTML monitoring report (inline CSS and PNG charts, no external URLs).

Rendered from the monitoring JSON and the training statistics only. Styles and the PNG helper
are the evaluation report's (:mod:`vertex_imbalanced.evaluation.report`), so both reports look
alike.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from vertex_imbalanced.evaluation.report import _CSS, _plt, _png
from vertex_imbalanced.monitoring.distances import categorical_buckets

WORST_FEATURES = 6
"""Features drawn side by side (training vs scored), largest distance relative to threshold first."""


def _shares(counts: Sequence[float]) -> np.ndarray:
    a = np.asarray(counts, dtype=np.float64)
    return a / a.sum() if a.sum() > 0 else a


def _feature_figure(name: str, training: Mapping[str, Any], current: Mapping[str, Any]) -> str:
    plt = _plt()
    if training["type"] == "numeric":
        edges = training["edges"]
        if edges:
            labels = [f"< {edges[0]:.3g}"]
            labels += [f"{a:.3g}–{b:.3g}" for a, b in zip(edges, edges[1:], strict=False)]
            labels += [f"≥ {edges[-1]:.3g}", "NULL"]
        else:
            labels = ["values", "NULL"]
        p = _shares([*training["histogram"], training["null"]])
        q = _shares([*current["histogram"], current["null"]])
    else:
        pm, qm = categorical_buckets(training, current)
        keys = sorted(set(pm) | set(qm), key=lambda k: -(pm.get(k, 0) + qm.get(k, 0)))[:25]
        tp, tq = sum(pm.values()) or 1, sum(qm.values()) or 1
        p = np.array([pm.get(k, 0) / tp for k in keys])
        q = np.array([qm.get(k, 0) / tq for k in keys])
        labels = keys
    x = np.arange(len(p))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.32 * len(p) + 2), 3.2))
    ax.bar(x - 0.2, p, 0.4, label="training", color="#8c959f")
    ax.bar(x + 0.2, q, 0.4, label="scored", color="#0969da")
    ax.set_xticks(x, labels=labels, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("share of rows")
    ax.set_title(name)
    ax.legend(frameon=False, fontsize=9)
    return _png(fig, f"histogram of {name}")


def _distance_table(rows: Sequence[Mapping[str, Any]]) -> str:
    body = "".join(
        f"<tr><td>{html.escape(d['feature'])}</td><td>{d['kind']}</td><td>{d['metric']}</td>"
        f"<td>{d['distance']:.4f}</td><td>{d['threshold']:.3f}</td>"
        f"<td>{'ALERT' if d['alert'] else 'ok'}</td><td>{html.escape(d['detail'])}</td></tr>"
        for d in rows
    )
    return (
        "<table><tr><th>feature</th><th>type</th><th>distance</th><th>value</th>"
        "<th>threshold</th><th>status</th><th>detail</th></tr>" + body + "</table>"
    )


def _prediction_section(pred: Mapping[str, Any] | None) -> str:
    if not pred:
        return ""
    rows = []
    for c in pred["classes"]:
        prior = (pred.get("training_prior") or {}).get(c)
        em = (pred.get("em_prior") or {}).get(c)
        rows.append(
            f"<tr><td>{html.escape(c)}</td><td>{'–' if prior is None else f'{prior:.2%}'}</td>"
            f"<td>{pred['predicted_share'][c]:.2%}</td><td>{pred['mean_probability'][c]:.2%}</td>"
            f"<td>{'–' if em is None else f'{em:.2%}'}</td></tr>"
        )
    status = ""
    if pred.get("distance") is not None:
        status = (
            f"<p class='help'>EM prior vs training prior: L-infinity {pred['distance']:.3f} "
            f"(threshold {pred['threshold']:.3f}) · {'ALERT' if pred['alert'] else 'ok'} · "
            f"{pred['em_iterations']} EM iterations</p>"
        )
    return (
        "<section><h2>Prediction drift</h2><p class='help'>Training prior: class shares of the "
        "un-downsampled training split. EM prior: the serving prior estimated from the "
        "predicted probabilities under label shift (Saerens et al., 2002).</p>"
        "<table><tr><th>class</th><th>training prior</th><th>predicted share</th>"
        "<th>mean probability</th><th>EM serving prior</th></tr>"
        + "".join(rows)
        + "</table>"
        + status
        + "</section>"
    )


def render_monitoring_report(report: Mapping[str, Any], training: Mapping[str, Any]) -> str:
    """The monitoring report as one HTML document.

    Args:
        report: the monitoring JSON dict (:func:`.monitor.run_monitoring`).
        training: the training statistics dict.

    Returns:
        The HTML text.
    """
    title = "Skew and drift monitoring"
    alerts = report["alerts"]
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{title}</title><style>{_CSS}</style></head><body><main>",
        f"<h1>{title}</h1><p class='sub'>Scored table <b>{html.escape(report['features_source'])}"
        f"</b> · {report['rows']:,} rows · run {html.escape(str(report['run_id']))}</p>",
    ]
    if alerts:
        parts.append(
            "<div class='notes'><b>Alerts</b><ul>"
            + "".join(f"<li>{html.escape(a)}</li>" for a in alerts)
            + "</ul></div>"
        )
    else:
        parts.append("<div class='notes'>No alerts.</div>")
    parts.append(
        "<section><h2>Training–serving skew</h2><p class='help'>Jensen-Shannon divergence "
        "(log base 2) over the training bins plus below/above/NULL for numeric features; "
        "L-infinity over the categories (NULL and unseen values included) for categorical ones. "
        "An alert fires when the distance exceeds the threshold.</p>"
        + _distance_table(report["skew"])
        + "</section>"
    )
    drift = report.get("drift")
    if drift:
        parts.append(
            f"<section><h2>Drift vs run {html.escape(str(drift['previous_run_id']))}</h2>"
            + (_distance_table(drift["distances"]) if drift["distances"] else drift.get("note", ""))
            + "</section>"
        )
    for w in report.get("window_drift") or []:
        parts.append(
            f"<section><h2>Window {html.escape(w['window_start'])} vs "
            f"{html.escape(w['previous_window_start'])}</h2><p class='help'>{w['rows']:,} vs "
            f"{w['previous_rows']:,} rows</p>" + _distance_table(w["distances"]) + "</section>"
        )
    parts.append(_prediction_section(report.get("prediction")))
    worst = sorted(report["skew"], key=lambda d: -d["distance"] / d["threshold"])[:WORST_FEATURES]
    figures = "".join(
        _feature_figure(
            d["feature"],
            training["features"][d["feature"]],
            report["statistics"]["features"][d["feature"]],
        )
        for d in worst
    )
    parts.append(
        "<section><h2>Largest skew: training vs scored</h2><p class='help'>Share of rows per "
        "bin or category; the features with the largest distance relative to their threshold."
        "</p>" + figures + "</section>"
    )
    parts.append("</main></body></html>")
    return "".join(parts)
