"""The summary of a local run, read from the task outputs kfp.local wrote (no KFP import).

:func:`build_summary` gives the ``summary.json`` content, :func:`format_summary` its lines.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vertex_imbalanced.artifacts import REPORT_FILE, metrics_path
from vertex_imbalanced.errors import PipelineRunError
from vertex_imbalanced.warehouse.prepare import PreparedData

METRIC_KEYS = (
    "macro_f1",
    "weighted_f1",
    "accuracy",
    "per_class",
    "confusion_matrix",
    "calibration",
    "classes",
    "log_loss",
    "roc_auc",
    "pr_auc",
    "operating_point",
    "argmax",
    "baselines",
)
"""The keys of ``metrics.json`` copied into the summary."""


# ----------------------------------------------------------------------------- summary
class RunOutputs:
    """The task outputs kfp.local wrote under one run directory (``<run>/<task>/...``)."""

    def __init__(self, run_dir: Path) -> None:
        """Read from ``run_dir`` (a directory under the pipeline root)."""
        self.run_dir = Path(run_dir)

    def task_output(self, task: str) -> dict[str, Any] | None:
        """The task's executor output (``artifacts``, ``parameterValues``); None if it did not run."""
        from kfp.local.executor_input_utils import _EXECUTOR_OUTPUT_FILE

        path = self.run_dir / task / _EXECUTOR_OUTPUT_FILE
        return json.loads(path.read_text()) if path.is_file() else None

    def parameters(self, task: str) -> dict[str, Any]:
        """The task's output parameters (empty if it did not run)."""
        return (self.task_output(task) or {}).get("parameterValues", {})

    def artifact_path(self, task: str, name: str) -> Path:
        """Local path of the task's output artifact ``name``."""
        output = self.task_output(task) or {}
        artifacts = output.get("artifacts", {}).get(name, {}).get("artifacts", [])
        return Path(artifacts[0]["uri"]) if artifacts else self.run_dir / task / name


def data_summary(prepared: PreparedData) -> dict[str, Any]:
    """Classes, split and class counts, skipped rows, keep rates, kept/weighted counts, mode.

    ``classes`` in id order; ``skipped_labels`` per split (rows left out by the label policy);
    ``data_checks``: the prepare step's key counts, id-like columns left out and warnings
    (:mod:`vertex_imbalanced.warehouse.data_checks`).
    """
    imbalance = prepared.imbalance
    return {
        "classes": list(prepared.classes),
        "label_policy": prepared.spec.label_policy,
        "skipped_labels": prepared.skipped_labels,
        "split_counts": prepared.split_counts,
        "class_counts": imbalance.get("original_counts"),
        "keep_rates": imbalance.get("keep_rates"),
        "kept_counts": imbalance.get("kept_counts"),
        "weighted_counts": imbalance.get("weighted_counts"),
        "imbalance_mode": imbalance.get("mode"),
        "data_checks": prepared.data_checks,
    }


def registered_summary(register_parameters: dict[str, Any] | None) -> dict[str, Any] | None:
    """Name, version, path and aliases of the registered version (None: nothing registered)."""
    if register_parameters is None:
        return None
    version = json.loads(register_parameters["registered_json"])
    return {
        "name": version["name"],
        "version": version["version"],
        "path": version["uri"],
        "aliases": version["aliases"],
    }


def check_registration(run_dir: Path, gate_passed: bool, registered: Any) -> None:
    """The guard against kfp.local skipping ``register`` although the gate passed.

    Raises:
        PipelineRunError: the gate passed and nothing was registered.
    """
    if gate_passed and registered is None:
        raise PipelineRunError(
            f"the gate passed but the register task did not run ({run_dir}); "
            "kfp.local skipped the dsl.If branch"
        )


def paths_summary(outputs: RunOutputs) -> dict[str, str]:
    """Paths of the HTML report, the model, ``metrics.json`` and the run directory."""
    evaluation = outputs.artifact_path("evaluate", "evaluation")
    report = evaluation / REPORT_FILE
    if not report.is_file():
        report = outputs.artifact_path("evaluate", "report")
    return {
        "report": str(report),
        "model": str(outputs.artifact_path("train", "model")),
        "metrics": str(metrics_path(evaluation)),
        "run_dir": str(outputs.run_dir),
    }


def build_summary(run_dir: Path, source: str) -> dict[str, Any]:
    """The ``summary.json`` content, read from the run's task outputs.

    Keys: ``run``, ``source``, ``data`` (:func:`data_summary`), ``metrics`` (the
    :data:`METRIC_KEYS` of ``metrics.json``), ``gate`` (``passed``, ``reason``), ``registered``
    (:func:`registered_summary`), ``paths`` (:func:`paths_summary`).

    Raises:
        PipelineRunError: the gate passed but nothing was registered.
        PipelineInputError: the prepare step's output cannot be read.
    """
    outputs = RunOutputs(run_dir)
    prepared = PreparedData.read(outputs.artifact_path("prepare-data", "prepared"))
    evaluation = outputs.artifact_path("evaluate", "evaluation")
    metrics = json.loads(metrics_path(evaluation).read_text())
    gate = outputs.parameters("gate")
    register = outputs.task_output("register")
    registered = registered_summary(None if register is None else register["parameterValues"])
    check_registration(outputs.run_dir, bool(gate.get("passed")), registered)
    return {
        "run": outputs.run_dir.name,
        "source": source,
        "data": data_summary(prepared),
        "metrics": {key: metrics.get(key) for key in METRIC_KEYS},
        "gate": {"passed": bool(gate.get("passed")), "reason": gate.get("reason", "")},
        "registered": registered,
        "paths": paths_summary(outputs),
    }


def _per_class_lines(per_class: dict[str, dict[str, float]]) -> list[str]:
    return [
        f"  {name:>12}: precision {row['precision']:.3f} recall {row['recall']:.3f} "
        f"f1 {row['f1']:.3f} support {int(row['support'])}"
        for name, row in per_class.items()
    ]


def _quality_lines(m: Mapping[str, Any]) -> list[str]:
    """Log loss and AUCs, the operating point, and the baselines beside the model."""
    lines = []
    scores = [
        f"{label} {m[key]:.4f}"
        for key, label in (("log_loss", "log loss"), ("roc_auc", "ROC AUC"), ("pr_auc", "PR AUC"))
        if isinstance(m.get(key), (int, float))
    ]
    if scores:
        lines.append("      " + "  ".join(scores))
    point = m.get("operating_point") or {}
    if point:
        rule = point.get("kind", "argmax")
        if point.get("threshold") is not None:
            rule += f" {point['threshold']:.4f}"
        argmax_f1 = (m.get("argmax") or {}).get("macro_f1")
        tail = f"; at argmax macro F1 {argmax_f1:.4f}" if argmax_f1 is not None else ""
        lines.append(f"operating point: {rule}, chosen on {point.get('chosen_on', '?')}{tail}")
    baselines = m.get("baselines") or {}
    if baselines:
        lines.append(
            "baselines (same test rows): "
            + "  ".join(
                f"{name.replace('_', ' ')} macro F1 {row['macro_f1']:.4f}"
                for name, row in baselines.items()
                if isinstance(row, Mapping) and row.get("macro_f1") is not None
            )
        )
    return lines


def _registered_line(registered: dict[str, Any] | None) -> str:
    if not registered:
        return "registered: nothing"
    return (
        f"registered: {registered['name']} version {registered['version']} "
        f"{registered['aliases']} at {registered['path']}"
    )


def _split_order(splits: Mapping[str, Any]) -> list[str]:
    """Split names train, validation, test first (JSON sorts them alphabetically)."""
    order = ("train", "validation", "test")
    return sorted(splits, key=lambda name: (order.index(name) if name in order else 3, name))


def format_summary(summary: dict[str, Any]) -> str:
    """The summary's human-readable lines (data, test metrics, per class, gate, registry)."""
    splits = summary["data"]["split_counts"] or {}
    m = summary["metrics"]
    gate = summary["gate"]
    data = summary["data"]
    skipped = data.get("skipped_labels") or {}
    skipped_line = (
        [
            f"skipped: {sum(skipped.values())} row(s) with a NULL label or one outside the "
            "classes (" + ", ".join(f"{k}={v}" for k, v in skipped.items()) + ")"
        ]
        if sum(skipped.values())
        else []
    )
    classes = data.get("classes") or []
    return "\n".join(
        [
            f"data: {summary['source']}; splits "
            + ", ".join(f"{name}={sum(splits[name].values())}" for name in _split_order(splits)),
            *skipped_line,
            "classes: " + "  ".join(f"{i}={name!r}" for i, name in enumerate(classes)),
            f"test: macro F1 {m['macro_f1']:.4f}  weighted F1 {m['weighted_f1']:.4f}  "
            f"accuracy {m['accuracy']:.4f}",
            *_quality_lines(m),
            *_per_class_lines(m["per_class"] or {}),
            f"gate: {'PASSED' if gate['passed'] else 'REJECTED'} - {gate['reason']}",
            _registered_line(summary["registered"]),
            f"report: {summary['paths']['report']}",
        ]
    )
