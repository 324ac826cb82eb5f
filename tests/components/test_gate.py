"""The gate component drives dsl.If / dsl.Else; both branches run under kfp.local."""

import json

import pytest
from kfp import dsl, local
from kfp.dsl import Artifact, Output

from components.gate import gate


@dsl.component
def write_metrics(macro_f1: float, baseline_f1: float, out: Output[Artifact]):
    import json
    import os

    from vertex_imbalanced.artifacts import METRICS_FILE

    metrics = {
        "macro_f1": macro_f1,
        "accuracy": 0.9,
        "per_class": {"ok": {"support": 9000}, "fraud": {"support": 2500}},
        "baselines": {"logistic_regression": {"macro_f1": baseline_f1}},
    }
    os.makedirs(out.path, exist_ok=True)
    with open(os.path.join(out.path, METRICS_FILE), "w") as f:
        json.dump(metrics, f)


@dsl.component
def branch(name: str, reason: str) -> str:
    return f"{name}: {reason}"


@dsl.pipeline
def gated(macro_f1: float, champion: str, baseline_f1: float = 0.6) -> str:
    metrics = write_metrics(macro_f1=macro_f1, baseline_f1=baseline_f1)
    decision = gate(
        challenger_metrics=metrics.outputs["out"],
        champion_metrics=champion,
        metric="macro_f1",
        min_value=0.5,
        tolerance=0.02,
        baseline_min_tolerance=0.03,
    )
    with dsl.If(decision.outputs["passed"] == True):  # noqa: E712 (KFP condition syntax)
        registered = branch(name="register", reason=decision.outputs["reason"])
    with dsl.Else():
        rejected = branch(name="reject", reason=decision.outputs["reason"])
    return dsl.OneOf(registered.output, rejected.output)


@pytest.fixture(scope="module", autouse=True)
def _local(tmp_path_factory):
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(tmp_path_factory.mktemp("root")),
    )


@pytest.mark.parametrize(
    ("macro_f1", "champion", "baseline_f1", "expected"),
    [
        (0.70, "", 0.6, "register: macro_f1 0.7000 >= minimum 0.5000; no champion"),
        (0.70, json.dumps({"macro_f1": 0.71}), 0.6, "register: macro_f1 0.7000 >= minimum"),
        (
            0.70,
            json.dumps({"macro_f1": 0.80}),
            0.6,
            "reject: macro_f1 0.7000 is below the champion",
        ),
        (0.40, "", 0.6, "reject: macro_f1 0.4000 is below the minimum 0.5000"),
        (
            0.70,
            "",
            0.75,
            "reject: macro_f1 0.7000 is below the logistic-regression baseline's 0.7500 minus "
            "tolerance 0.0300",
        ),
        (0.70, "", 0.72, "register: macro_f1 0.7000 >= minimum 0.5000; no champion"),
    ],
    ids=[
        "no-champion",
        "within-tolerance",
        "worse-than-champion",
        "below-minimum",
        "below-baseline",
        "within-baseline-tolerance",
    ],
)
def test_gate_branches(macro_f1, champion, baseline_f1, expected):
    task = gated(macro_f1=macro_f1, champion=champion, baseline_f1=baseline_f1)
    assert task.output.startswith(expected)
