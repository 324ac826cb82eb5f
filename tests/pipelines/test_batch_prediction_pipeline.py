"""The batch prediction pipeline: compiles offline, and runs locally under kfp.local.

The local run uses the same definition as Vertex: resolve the champion of a local registry,
score a DuckDB table with Beam's DirectRunner, publish the predictions table, monitor.
"""

import json

import duckdb
import pytest
import yaml
from conftest_models import build_tiny_model, make_table

from pipelines.batch_prediction_pipeline import build_pipeline
from vertex_imbalanced.config import FeatureSpec
from vertex_imbalanced.registry.local import LocalRegistry

CLASSES = ("low", "mid", "high")
SPEC = FeatureSpec(label="label", key="id", numeric=("x",), categorical=("color",))


def test_compiles_and_validates_offline(tmp_path):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import aiplatform
    from kfp import compiler

    path = tmp_path / "batch_prediction_pipeline.yaml"
    compiler.Compiler().compile(build_pipeline(), str(path))
    spec = yaml.safe_load(path.read_text())
    params = spec["root"]["inputDefinitions"]["parameters"]
    required = {n for n, p in params.items() if "defaultValue" not in p}
    assert required == {"input_uri", "registry_uri", "output_location", "staging_root"}
    assert params["model_alias"]["defaultValue"] == "champion"
    assert sorted(spec["root"]["dag"]["tasks"]) == [
        "batch-predict",
        "importer",
        "monitor",
        "resolve-model",
    ]
    deps = {t: v.get("dependentTasks", []) for t, v in spec["root"]["dag"]["tasks"].items()}
    assert deps == {
        "resolve-model": [],
        "batch-predict": ["resolve-model"],
        "importer": ["resolve-model"],
        "monitor": ["batch-predict", "importer"],
    }
    job = aiplatform.PipelineJob(
        display_name="t",
        template_path=str(path),
        pipeline_root="gs://bucket/root",
        parameter_values={
            "input_uri": "bq://p.d.t",
            "registry_uri": "vertex://p/us-central1",
            "output_location": "bq://p.d",
            "staging_root": "gs://bucket/staging",
        },
        project="p",
        location="us-central1",
        credentials=AnonymousCredentials(),
    )
    assert job._gca_resource.runtime_config.parameter_values["input_uri"] == "bq://p.d.t"


@pytest.mark.slow
def test_local_run_scores_publishes_and_monitors(tmp_path):
    from kfp import local

    from vertex_imbalanced.monitoring.statistics import (
        training_statistics,
        write_training_statistics,
    )

    db = tmp_path / "data.duckdb"
    with duckdb.connect(str(db)) as con:
        con.register("t", make_table(CLASSES, [3000, 1500, 500], seed=2))
        con.execute("CREATE TABLE train AS SELECT * FROM t")
        con.register("s", make_table(CLASSES, [600, 300, 100], seed=9))
        con.execute("CREATE TABLE fresh AS SELECT * FROM s")
    model_dir = build_tiny_model(tmp_path / "model", CLASSES)
    stats = training_statistics(
        f"duckdb://{db}?table=train",
        SPEC,
        split_ratios=(0.8, 0.1, 0.1),
        class_counts={"low": 2400, "mid": 1200, "high": 400},
    )
    write_training_statistics(model_dir, stats)
    registry = LocalRegistry(tmp_path / "registry")
    registry.register("clf", str(model_dir), {"macro_f1": 0.9}, {}, "train-run", True)

    root = tmp_path / "root"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
    pipeline = build_pipeline(retries=False)
    task = pipeline(
        input_uri=f"duckdb://{db}?table=fresh",
        registry_uri=f"local://{registry.root}",
        # the monitor reads the predictions beside the scored table (one DuckDB file)
        output_location=f"duckdb://{db}",
        staging_root=str(tmp_path / "staging"),
        model_name="clf",
        key="id",
        statistics_store=str(tmp_path / "store.duckdb"),
    )
    assert task is not None
    with duckdb.connect(str(db), read_only=True) as con:
        tables = con.execute("SELECT table_name FROM duckdb_tables() ORDER BY 1").fetchall()
        [(name,)] = [t for t in tables if t[0] not in ("fresh", "train")]
        assert name.startswith("predictions_")
        n, versions = con.execute(
            f'SELECT count(*), list(DISTINCT model_version) FROM "{name}"'
        ).fetchall()[0]
    assert n == 1000 and versions == ["1"]
    reports = list(root.rglob("monitoring.json"))
    assert len(reports) == 1
    assert json.loads(reports[0].read_text())["skew"]
