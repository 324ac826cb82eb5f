"""Self-contained HTML evaluation report (inline PNG charts, inline CSS, no external URLs).

Rendered from the ``metrics.json`` dict only, so it can be rebuilt from a stored evaluation.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping
from typing import Any

import numpy as np

_CSS = """
body{font-family:-apple-system,'Segoe UI',Roboto,'Helvetica Neue',Arial,sans-serif;
 margin:0;background:#f5f6f8;color:#1f2328}
main{max-width:1120px;margin:0 auto;padding:24px 28px 48px}
h1{font-size:26px;margin:0 0 4px}
h2{font-size:19px;margin:0 0 10px;padding-bottom:6px;border-bottom:1px solid #e3e6ea}
.sub{color:#57606a;margin:0 0 18px;font-size:14px}
section{background:#fff;border:1px solid #e3e6ea;border-radius:8px;padding:18px 20px;
 margin:0 0 18px}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(128px,1fr));gap:12px;
 margin:0 0 18px}
.card{background:#fff;border:1px solid #e3e6ea;border-radius:8px;padding:10px 14px}
.card .v{font-size:28px;font-weight:600;font-variant-numeric:tabular-nums}
.card .k{font-size:12px;color:#57606a;text-transform:uppercase;letter-spacing:.04em}
.card.main{border-color:#0969da;border-width:2px}
table{border-collapse:collapse;font-size:14px;font-variant-numeric:tabular-nums}
th,td{padding:6px 14px;border-bottom:1px solid #eaeef2;text-align:right;white-space:nowrap}
td.bar{min-width:90px}
th{background:#f6f8fa;font-weight:600}
th:first-child,td:first-child{text-align:left}
.notes{background:#fff8c5;border:1px solid #d4a72c;border-radius:8px;padding:10px 16px;
 margin:0 0 18px;font-size:14px}
.notes li{margin:2px 0}
.help{color:#57606a;font-size:13px;margin:6px 0 10px}
img{max-width:100%;height:auto;display:block;margin:0 auto}
"""


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"
    return f"{float(value):.{digits}f}"


def _png(fig: Any, alt: str) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 11, "axes.spines.top": False, "axes.spines.right": False})
    return plt


def confusion_figure(metrics: Mapping[str, Any]) -> str:
    """Heatmap of the confusion matrix, coloured by row share (recall), counts annotated."""
    plt = _plt()
    classes = list(metrics["classes"])
    cm = np.asarray(metrics["confusion_matrix"], dtype=np.int64)
    row_sum = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, row_sum, out=np.zeros(cm.shape), where=row_sum != 0)
    c = len(classes)
    side = min(2.2 + 0.75 * c, 12.0)
    fig, ax = plt.subplots(figsize=(side + 1.5, side))
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(
        range(c), labels=classes, rotation=30 if c > 4 else 0, ha="right" if c > 4 else "center"
    )
    ax.set_yticks(range(c), labels=classes)
    ax.set_xlabel("Predicted class")
    ax.set_ylabel("True class")
    ax.spines[:].set_visible(False)
    if c <= 15:
        for i in range(c):
            for j in range(c):
                color = "white" if share[i, j] > 0.55 else "#1f2328"
                ax.text(
                    j,
                    i - 0.1,
                    f"{cm[i, j]:,}",
                    ha="center",
                    va="center",
                    color=color,
                    fontsize=12,
                    fontweight="bold",
                )
                ax.text(
                    j,
                    i + 0.18,
                    f"{share[i, j]:.1%}",
                    ha="center",
                    va="center",
                    color=color,
                    fontsize=10,
                )
    cbar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    cbar.set_label("share of the true class (row)")
    return _png(fig, "confusion matrix")


def curves_figure(metrics: Mapping[str, Any]) -> str:
    """ROC and precision-recall curves of the positive class, best threshold marked."""
    plt = _plt()
    curves = metrics["curves"]
    roc, pr = curves["roc"], curves["pr"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.6))
    a1.plot(
        roc["fpr"],
        roc["tpr"],
        color="#0969da",
        lw=2,
        label=f"ROC AUC {_fmt(metrics.get('roc_auc'))}",
    )
    a1.plot([0, 1], [0, 1], color="#8c959f", ls="--", lw=1, label="chance")
    a1.set(
        xlabel="False positive rate",
        ylabel="True positive rate (recall)",
        xlim=(0, 1),
        ylim=(0, 1.02),
    )
    a1.set_title("ROC curve (test)")
    a2.plot(
        pr["recall"],
        pr["precision"],
        color="#8250df",
        lw=2,
        drawstyle="steps-post",
        label=f"PR AUC (avg. precision) {_fmt(metrics.get('pr_auc'))}",
    )
    support = metrics["per_class"][metrics["positive_class"]]["support"]
    prior = support / max(metrics["num_examples"], 1)
    a2.axhline(prior, color="#8c959f", ls="--", lw=1, label=f"prevalence {prior:.3f}")
    at = metrics.get("test_at_best_threshold")
    if at:
        a2.plot(
            [at["recall"]],
            [at["precision"]],
            "o",
            color="#cf222e",
            ms=8,
            label=f"threshold {at['threshold']:.3f} (best F1 on validation)",
        )
    a2.set(xlabel="Recall", ylabel="Precision", xlim=(0, 1), ylim=(0, 1.02))
    a2.set_title(f"Precision-recall, positive class '{metrics['positive_class']}' (test)")
    for ax in (a1, a2):
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right" if ax is a1 else "upper right", fontsize=9, frameon=False)
    return _png(fig, "ROC and precision-recall curves")


_MIN_BIN_ROWS = 10
"""Reliability bins with fewer rows are not drawn (their observed share is mostly noise)."""


def _reliability_curves(metrics: Mapping[str, Any]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Curves to draw: the positive class (binary), each class (<= 4), or all pooled."""
    rel = metrics.get("reliability") or {}
    classes = list(metrics["classes"])
    if metrics.get("positive_class"):
        groups = {metrics["positive_class"]: [metrics["positive_class"]]}
    elif len(classes) <= 4:
        groups = {c: [c] for c in classes}
    else:
        groups = {"all classes pooled (one-vs-rest)": classes}
    curves = {}
    for label, members in groups.items():
        rows = [rel[c] for c in members if c in rel]
        if not rows:
            continue
        count = np.sum([r["count"] for r in rows], axis=0)
        prob = np.sum([np.multiply(r["mean_predicted"], r["count"]) for r in rows], axis=0)
        hits = np.sum([np.multiply(r["observed"], r["count"]) for r in rows], axis=0)
        keep = count >= _MIN_BIN_ROWS
        curves[label] = (prob[keep] / count[keep], hits[keep] / count[keep])
    return curves


def calibration_figure(metrics: Mapping[str, Any]) -> str:
    """Mean predicted probability vs observed share per class, and the reliability diagram."""
    plt = _plt()
    classes = list(metrics["classes"])
    cal = metrics["calibration"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.4))
    x = np.arange(len(classes))
    w = 0.38
    a1.bar(
        x - w / 2,
        [cal[c]["observed_share"] for c in classes],
        w,
        label="observed share",
        color="#8c959f",
    )
    a1.bar(
        x + w / 2,
        [cal[c]["mean_predicted"] for c in classes],
        w,
        label="mean predicted",
        color="#0969da",
    )
    many = len(classes) > 4
    a1.set_xticks(x, labels=classes, rotation=40 if many else 0, ha="right" if many else "center")
    a1.set_ylabel("share of examples")
    a1.set_title("Class prior: predicted vs observed")
    a1.legend(frameon=False, fontsize=9)
    for label, (mean_p, observed) in _reliability_curves(metrics).items():
        a2.plot(mean_p, observed, "o-", ms=4, label=label)
    a2.plot([0, 1], [0, 1], color="#8c959f", ls="--", lw=1, label="perfect")
    a2.set(
        xlabel="Predicted probability (bin mean)",
        ylabel="Observed frequency",
        xlim=(0, 1),
        ylim=(0, 1.02),
    )
    a2.set_title(f"Reliability diagram (bins with >= {_MIN_BIN_ROWS} rows)")
    a2.grid(alpha=0.3)
    a2.legend(frameon=False, fontsize=9, loc="upper left")
    return _png(fig, "calibration")


def _cards(metrics: Mapping[str, Any]) -> str:
    items = [
        ("Macro F1", metrics["macro_f1"], True),
        ("Accuracy", metrics["accuracy"], False),
        ("Weighted F1", metrics["weighted_f1"], False),
        ("Log loss", metrics["log_loss"], False),
    ]
    if metrics.get("positive_class"):
        items += [
            ("ROC AUC", metrics.get("roc_auc"), False),
            ("PR AUC", metrics.get("pr_auc"), False),
        ]
        if metrics.get("best_threshold") is not None:
            items.append(("Tuned threshold", metrics["best_threshold"], False))
    else:
        items.append(("Micro ROC AUC", metrics.get("micro_roc_auc"), False))
    return (
        '<div class="cards">'
        + "".join(
            f'<div class="card{" main" if main else ""}"><div class="k">{k}</div>'
            f'<div class="v">{_fmt(v)}</div></div>'
            for k, v, main in items
        )
        + "</div>"
    )


def _bar_cell(value: float) -> str:
    pct = max(0.0, min(1.0, float(value))) * 100
    hue = "#d1242f33" if value < 0.5 else "#1f883d33"
    return (
        f'<td class="bar" style="background:linear-gradient(90deg,{hue} {pct:.1f}%,transparent {pct:.1f}%)">'
        f"{value:.3f}</td>"
    )


def _per_class_table(metrics: Mapping[str, Any]) -> str:
    n = max(metrics["num_examples"], 1)
    cal = metrics["calibration"]
    rows = []
    for name, r in metrics["per_class"].items():
        rows.append(
            f"<tr><td>{html.escape(name)}</td><td>{r['support']:,}</td>"
            f"<td>{r['support'] / n:.2%}</td><td>{cal[name]['mean_predicted']:.2%}</td>"
            + _bar_cell(r["precision"])
            + _bar_cell(r["recall"])
            + _bar_cell(r["f1"])
            + "</tr>"
        )
    for avg in ("macro", "weighted"):
        rows.append(
            f"<tr><th>{avg} average</th><th>{metrics['num_examples']:,}</th><th></th><th></th>"
            f"<th>{metrics[avg + '_precision']:.3f}</th><th>{metrics[avg + '_recall']:.3f}</th>"
            f"<th>{metrics[avg + '_f1']:.3f}</th></tr>"
        )
    return (
        "<table><tr><th>class</th><th>test rows</th><th>observed share</th>"
        "<th>mean predicted prob.</th><th>precision</th><th>recall</th><th>F1</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def _threshold_table(metrics: Mapping[str, Any]) -> str:
    at = metrics.get("test_at_best_threshold")
    pos = metrics["positive_class"]
    base = metrics["per_class"][pos]
    val = metrics.get("validation") or {}
    if not at:
        return '<p class="help">No validation split with positives: no tuned threshold.</p>'
    return (
        f'<p class="help">Threshold chosen on the validation split ({_fmt(val.get("num_examples"))} '
        f"rows, F1 {_fmt(val.get('best_f1'))}); applied unchanged to the test split.</p>"
        "<table><tr><th>decision rule (test)</th><th>precision</th><th>recall</th><th>F1</th>"
        "<th>macro F1</th><th>accuracy</th></tr>"
        f"<tr><td>argmax (p ≥ 0.5)</td><td>{base['precision']:.3f}</td><td>{base['recall']:.3f}</td>"
        f"<td>{base['f1']:.3f}</td><td>{metrics['macro_f1']:.3f}</td><td>{metrics['accuracy']:.3f}</td></tr>"
        f"<tr><td>p({html.escape(pos)}) ≥ {at['threshold']:.4f}</td><td>{at['precision']:.3f}</td>"
        f"<td>{at['recall']:.3f}</td><td>{at['f1']:.3f}</td><td>{at['macro_f1']:.3f}</td>"
        f"<td>{at['accuracy']:.3f}</td></tr></table>"
    )


def render_report(metrics: Mapping[str, Any], title: str = "Model evaluation") -> str:
    """Render the full report as one HTML string (no external resources).

    Args:
        metrics: the ``metrics.json`` dict from :mod:`vertex_imbalanced.evaluation.evaluate`.
        title: page heading.

    Returns:
        The HTML document.
    """
    classes = list(metrics["classes"])
    sub = (
        f"Test split <b>{html.escape(str(metrics.get('test_source', '')))}</b> · "
        f"{metrics['num_examples']:,} rows, original class distribution · "
        f"{len(classes)} classes: {html.escape(', '.join(classes))}"
    )
    if metrics.get("positive_class"):
        pos = metrics["positive_class"]
        share = metrics["per_class"][pos]["support"] / max(metrics["num_examples"], 1)
        sub += f" · positive class <b>{html.escape(pos)}</b> ({share:.2%} of rows)"
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body><main>",
        f"<h1>{html.escape(title)}</h1><p class='sub'>{sub}</p>",
        _cards(metrics),
    ]
    notes = metrics.get("notes") or []
    if notes:
        parts.append(
            "<div class='notes'><b>Notes</b><ul>"
            + "".join(f"<li>{html.escape(n)}</li>" for n in notes)
            + "</ul></div>"
        )
    parts.append(
        "<section><h2>Per-class metrics</h2><p class='help'>Bars show the value; red below 0.5. "
        "Precision of a never-predicted class and recall of an absent class are reported as 0."
        "</p>" + _per_class_table(metrics) + "</section>"
    )
    parts.append(
        "<section><h2>Confusion matrix</h2><p class='help'>Rows: true class, columns: predicted "
        "class (argmax). Each cell: count and share of its row (the diagonal is recall).</p>"
        + confusion_figure(metrics)
        + "</section>"
    )
    if metrics.get("positive_class"):
        parts.append(
            "<section><h2>Decision threshold</h2>"
            + _threshold_table(metrics)
            + curves_figure(metrics)
            + "</section>"
        )
    parts.append(
        "<section><h2>Calibration</h2><p class='help'>If downsampling + upweighting restored the "
        "prior, mean predicted probability matches the observed share of each class and the "
        "reliability curve follows the diagonal.</p>" + calibration_figure(metrics) + "</section>"
    )
    parts.append("</main></body></html>")
    return "".join(parts)
