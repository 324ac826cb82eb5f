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
    op = metrics.get("operating_point") or {}
    if op.get("kind") not in (None, "argmax"):
        row = metrics["per_class"][metrics["positive_class"]]
        a2.plot(
            [row["recall"]],
            [row["precision"]],
            "o",
            color="#cf222e",
            ms=8,
            label=f"operating point ({_rule_text(op)}, chosen on {op.get('chosen_on')})",
        )
    argmax = (metrics.get("argmax") or {}).get("per_class", {}).get(metrics["positive_class"])
    if argmax:
        a2.plot(
            [argmax["recall"]], [argmax["precision"]], "s", color="#57606a", ms=7, label="argmax"
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
        threshold = (metrics.get("operating_point") or {}).get("threshold")
        if threshold is not None:
            items.append(("Threshold", threshold, False))
    else:
        items.append(("Micro ROC AUC", metrics.get("micro_roc_auc"), False))
    logistic = (metrics.get("baselines") or {}).get("logistic_regression")
    if logistic:
        items.append(("LogReg macro F1", logistic.get("macro_f1"), False))
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


def _rule_text(op: Mapping[str, Any]) -> str:
    """One phrase for a rule: ``p(pos) > 0.2100``, ``class weights ...``, ``argmax``."""
    kind = op.get("kind")
    if kind == "threshold":
        return f"threshold {op['threshold']:.4f}"
    if kind == "class_weights":
        return "class weights " + ", ".join(f"{w:.3g}" for w in op.get("weights") or [])
    if kind == "cost_matrix":
        return "cost matrix (Bayes decision)"
    return "argmax"


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(f"<td>{html.escape(v) if isinstance(v, str) else _fmt(v)}</td>" for v in row)
        + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _operating_point_section(metrics: Mapping[str, Any]) -> str:
    op = metrics.get("operating_point") or {"kind": "argmax", "method": "argmax"}
    classes = list(metrics["classes"])
    detail = ""
    if op.get("kind") == "threshold":
        detail = (
            f"Predict <b>{html.escape(classes[1])}</b> when p({html.escape(classes[1])}) "
            f"&gt; {op['threshold']:.4f} (argmax would use 0.5)."
        )
    elif op.get("kind") == "class_weights":
        detail = "Decide argmax(p × w) with weights " + ", ".join(
            f"{html.escape(c)} {w:.3g}" for c, w in zip(classes, op["weights"], strict=False)
        )
    elif op.get("kind") == "cost_matrix":
        detail = "Decide the class of least expected cost under the given cost matrix."
    validation = ""
    if op.get("validation_metric") is not None:
        validation = (
            f" On the validation split ({_fmt(op.get('validation_rows'))} rows): "
            f"{html.escape(str(op.get('metric')))} {_fmt(op['validation_metric'])} at this rule, "
            f"{_fmt(op.get('validation_argmax_metric'))} at argmax."
        )
    argmax = metrics.get("argmax") or {}
    rows = [["operating point (" + _rule_text(op) + ")"] + [metrics[k] for k in _DECISION_KEYS]]
    if argmax and op.get("kind") != "argmax":
        rows.append(["argmax"] + [argmax.get(k) for k in _DECISION_KEYS])
    return (
        "<section><h2>Operating point</h2><p class='help'>"
        + detail
        + f" How it was chosen: {html.escape(str(op.get('method', '')))}.{validation} "
        "Probabilities are unchanged (still calibrated to the true prior); only the decision "
        "moves, and the served model applies the same rule. Headline metrics are at this rule."
        "</p>" + _table(["decision (test)", *_DECISION_LABELS], rows) + "</section>"
    )


_DECISION_KEYS = ("macro_f1", "macro_precision", "macro_recall", "weighted_f1", "accuracy")
_DECISION_LABELS = ("macro F1", "macro precision", "macro recall", "weighted F1", "accuracy")


def _baselines_section(metrics: Mapping[str, Any]) -> str:
    baselines = metrics.get("baselines")
    if baselines is None:
        return ""
    binary = bool(metrics.get("positive_class"))
    keys = ["macro_f1", "macro_precision", "macro_recall", "accuracy", "log_loss"]
    keys += ["roc_auc", "pr_auc"] if binary else []
    labels = ["macro F1", "macro precision", "macro recall", "accuracy", "log loss"]
    labels += ["ROC AUC", "PR AUC"] if binary else []
    rows = [["this model", _rule_text(metrics.get("operating_point") or {})]]
    rows[0] += [metrics.get(k) for k in keys]
    names = {"prior": "class prior (majority class)", "logistic_regression": "logistic regression"}
    for name, block in baselines.items():
        rows.append(
            [names.get(name, name), _rule_text(block.get("operating_point") or {})]
            + [block.get(k) for k in keys]
        )
    lr = baselines.get("logistic_regression") or {}
    help_text = (
        "Scored on the same test rows. The logistic regression uses the model's own "
        "preprocessed features (missing indicators, imputation, standardisation of "
        "near-normal numeric columns and piecewise-linear quantile encoding of the others, "
        "one-hot), "
        f"is fitted on {_fmt(lr.get('sampled_rows'))} of {_fmt(lr.get('train_rows'))} training "
        "rows (a uniform sample of at most "
        f"{_fmt(lr.get('max_rows'))}) with the training weights, and decides with the same kind "
        "of rule, chosen on the same validation rows."
        if lr
        else "No logistic-regression baseline (see the notes)."
    )
    return (
        "<section><h2>Baselines</h2><p class='help'>"
        + html.escape(help_text)
        + "</p>"
        + _table(["model", "decision", *labels], rows)
        + "</section>"
    )


def _counts_table(counts: Mapping[str, Mapping[str, Any]], classes: list[str]) -> str:
    rows = [
        [split, *[(by_class or {}).get(c) for c in classes], sum((by_class or {}).values())]
        for split, by_class in counts.items()
    ]
    return _table(["split", *classes, "total"], rows)


def _data_section(metrics: Mapping[str, Any]) -> str:
    ctx = metrics.get("context")
    if not ctx:
        return ""
    classes = list(metrics["classes"])
    parts = ["<section><h2>Data and training</h2>"]
    if ctx.get("split_counts"):
        parts.append("<p class='help'>Rows per split and class (before downsampling).</p>")
        parts.append(_counts_table(ctx["split_counts"], classes))
    skipped = {k: int(v) for k, v in (ctx.get("skipped_labels") or {}).items() if v}
    if skipped:
        where = ", ".join(f"{split}: {n:,}" for split, n in skipped.items())
        parts.append(
            f"<div class='notes'>Skipped: {sum(skipped.values()):,} rows with a NULL label or one "
            f"outside the classes ({html.escape(where)}).</div>"
        )
    imb = ctx.get("imbalance") or {}
    train = ctx.get("training") or {}
    if imb.get("keep_rates") or train.get("class_counts"):
        rows = []
        for c in classes:
            rows.append(
                [
                    c,
                    (imb.get("original_counts") or {}).get(c),
                    (imb.get("keep_rates") or {}).get(c),
                    (imb.get("kept_counts") or train.get("class_counts") or {}).get(c),
                    (imb.get("weighted_counts") or train.get("weighted_class_counts") or {}).get(c),
                ]
            )
        mode = html.escape(str(imb.get("mode", "–")))
        parts.append(
            f"<p class='help'>Training split, imbalance mode <b>{mode}</b>: rows kept per class "
            "and their weights (weighted counts restore the original prior).</p>"
        )
        header = ["class", "train rows before", "keep rate", "rows kept", "sum of weights"]
        parts.append(_table(header, rows))
    features = ctx.get("features") or {}
    roles = [
        ["label", ctx.get("label") or ""],
        ["numeric", ", ".join(features.get("numeric") or []) or "–"],
        ["categorical", ", ".join(features.get("categorical") or []) or "–"],
        ["key", features.get("key") or "–"],
    ]
    parts.append(
        "<p class='help'>Features and their roles.</p>" + _table(["role", "columns"], roles)
    )
    facts = [
        ["epochs run", train.get("epochs_run")],
        ["best epoch (weights restored)", train.get("best_epoch")],
        ["epochs allowed", train.get("max_epochs")],
        ["batch size", train.get("batch_size")],
        ["learning rate", train.get("learning_rate")],
        ["training rows", train.get("rows")],
    ]
    for key, value in (train.get("budget") or {}).items():
        number = isinstance(value, int | float) and not isinstance(value, bool)
        facts.append([f"budget: {key}", value if number or value is None else str(value)])
    facts = [row for row in facts if row[1] is not None]
    if facts:
        parts.append("<p class='help'>Training.</p>" + _table(["fact", "value"], facts))
    best, run, allowed = train.get("best_epoch"), train.get("epochs_run"), train.get("max_epochs")
    if best is not None and best == run and run == allowed:
        parts.append(
            "<div class='notes'>The best epoch is the last one allowed: training stopped while "
            "still improving; a larger budget may help.</div>"
        )
    parts.append("</section>")
    return "".join(parts)


def report_title(metrics: Mapping[str, Any]) -> tuple[str, str]:
    """``(title, run line)`` from ``metrics["context"]``: model, version, dataset, label; run, date."""
    ctx = metrics.get("context") or {}
    name = ctx.get("model_name") or "Model"
    version = ctx.get("model_version")
    title = f"{name} v{version}" if version not in (None, "") else str(name)
    dataset = ctx.get("dataset")
    if dataset:
        title += f" on {dataset}"
    if ctx.get("label"):
        title += f", predicting {ctx['label']}"
    bits = [f"run {ctx['run']}" if ctx.get("run") else "", ctx.get("date") or ""]
    return title, " · ".join(b for b in bits if b)


def render_report(metrics: Mapping[str, Any], title: str | None = None) -> str:
    """Render the full report as one HTML string (no external resources).

    Args:
        metrics: the ``metrics.json`` dict from :mod:`vertex_imbalanced.evaluation.evaluate`.
        title: page heading; default from ``metrics["context"]`` (:func:`report_title`).

    Returns:
        The HTML document.
    """
    classes = list(metrics["classes"])
    heading, run_line = report_title(metrics)
    title = title or heading
    sub = (
        f"Test split <b>{html.escape(str(metrics.get('test_source', '')))}</b> · "
        f"{metrics['num_examples']:,} rows, original class distribution · "
        f"{len(classes)} classes: {html.escape(', '.join(classes))}"
    )
    if metrics.get("positive_class"):
        pos = metrics["positive_class"]
        share = metrics["per_class"][pos]["support"] / max(metrics["num_examples"], 1)
        sub += f" · positive class <b>{html.escape(pos)}</b> ({share:.2%} of rows)"
    if run_line:
        sub += f"<br>{html.escape(run_line)}"
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
    parts.append(_data_section(metrics))
    parts.append(_operating_point_section(metrics))
    parts.append(_baselines_section(metrics))
    parts.append(
        "<section><h2>Per-class metrics</h2><p class='help'>At the operating point. Bars show "
        "the value; red below 0.5. Precision of a never-predicted class and recall of an absent "
        "class are reported as 0.</p>" + _per_class_table(metrics) + "</section>"
    )
    parts.append(
        "<section><h2>Confusion matrix</h2><p class='help'>At the operating point ("
        + html.escape(_rule_text(metrics.get("operating_point") or {}))
        + "). Rows: true class, columns: predicted class. Each cell: count and share of its row "
        "(the diagonal is recall).</p>" + confusion_figure(metrics) + "</section>"
    )
    if metrics.get("positive_class"):
        parts.append(
            "<section><h2>ROC and precision-recall</h2>" + curves_figure(metrics) + "</section>"
        )
    parts.append(
        "<section><h2>Calibration</h2><p class='help'>If downsampling + upweighting restored the "
        "prior, mean predicted probability matches the observed share of each class and the "
        "reliability curve follows the diagonal.</p>" + calibration_figure(metrics) + "</section>"
    )
    parts.append("</main></body></html>")
    return "".join(parts)
