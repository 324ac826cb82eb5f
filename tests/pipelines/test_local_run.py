"""run_local.py: the whole pipeline under kfp.local on a small demo table."""

import json

import pytest

import run_local

ROWS = "3000"
# Tiny data and 2 epochs test the flow, not model quality: no absolute minimum for the gate.
FAST = ["--rows", ROWS, "--epochs", "2", "--batch-size", "256", "--min-metric", "0"]


def registry_listing(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """The same data run twice against one registry."""
    base = tmp_path_factory.mktemp("local")
    registry = base / "registry"
    summaries = []
    for name in ("first", "second"):
        out = base / name
        rc = run_local.main([*FAST, "--output-dir", str(out), "--registry", str(registry)])
        assert rc == 0
        summaries.append(json.loads((out / "summary.json").read_text()))
    return summaries, registry


@pytest.mark.slow
def test_summary_holds_data_metrics_gate_registration_and_paths(two_runs, capsys):
    (first, _), registry = two_runs
    data = first["data"]
    assert sum(sum(c.values()) for c in data["split_counts"].values()) == int(ROWS)
    assert set(data["keep_rates"]) == set(data["class_counts"]) == {"0", "1", "2"}
    assert data["keep_rates"]["0"] < 1.0  # the majority class was downsampled
    assert data["kept_counts"]["0"] < data["class_counts"]["0"]
    # upweighting restores the majority's mass
    assert data["weighted_counts"]["0"] == pytest.approx(data["class_counts"]["0"], rel=0.05)
    metrics = first["metrics"]
    for key in ("macro_f1", "weighted_f1", "accuracy"):
        assert 0.0 <= metrics[key] <= 1.0
    assert set(metrics["per_class"]) == {"0", "1", "2"}
    assert set(metrics["per_class"]["2"]) >= {"precision", "recall", "f1", "support"}
    matrix = metrics["confusion_matrix"]
    assert sum(map(sum, matrix)) == sum(data["split_counts"]["test"].values())
    assert set(metrics["calibration"]) == {"0", "1", "2"}
    assert first["gate"] == {"passed": True, "reason": first["gate"]["reason"]}
    assert "no champion" in first["gate"]["reason"]
    assert first["registered"]["version"] == "1"
    assert first["registered"]["path"].startswith(str(registry))
    for key in ("report", "model", "metrics"):
        assert (run_local.Path(first["paths"][key])).exists(), key
    assert "<html" in run_local.Path(first["paths"]["report"]).read_text().lower()


@pytest.mark.slow
def test_second_run_repeats_the_split_and_compares_with_the_first_champion(two_runs):
    (first, second), registry = two_runs
    assert second["data"] == first["data"]
    assert second["metrics"]["macro_f1"] == pytest.approx(first["metrics"]["macro_f1"], abs=1e-6)
    assert second["metrics"]["confusion_matrix"] == first["metrics"]["confusion_matrix"]
    assert "champion" in second["gate"]["reason"]
    assert "no champion" not in second["gate"]["reason"]
    assert second["registered"]["version"] == "2"
    assert "champion" in second["registered"]["aliases"]
    versions = sorted(
        p.name for p in (registry / "imbalanced-classifier").iterdir() if p.name.isdigit()
    )
    assert versions == ["1", "2"]


@pytest.mark.slow
def test_failing_task_stops_the_run_names_it_and_leaves_the_registry_alone(two_runs, tmp_path):
    _, registry = two_runs
    before = registry_listing(registry)
    source = tmp_path / "demo.duckdb"
    from vertex_imbalanced.warehouse.demo_data import DEMO_SPEC, write_demo_duckdb

    uri = write_demo_duckdb(source, rows=500, seed=1, table="demo")
    arguments = {
        "source_uri": uri,
        "feature_config": DEMO_SPEC.to_json(),
        "hyperparameters": json.dumps({"epochs": 1, "no_such_setting": 3}),
        "registry_uri": f"local://{registry}",
    }
    with pytest.raises(run_local.PipelineRunError) as info:
        run_local.run_pipeline(arguments, tmp_path / "out")
    message = str(info.value)
    assert "task 'train' failed" in message
    assert "no_such_setting" in message
    assert registry_listing(registry) == before


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--source", "s3://bucket/data.csv", "--label", "y"], "unknown --source 's3://bucket/data.csv'"),
        (["--source", "table.xlsx", "--label", "y"], "unknown --source"),
        (["--rows", "0"], "--rows must be > 0"),
    ],
)  # fmt: skip
def test_bad_arguments(tmp_path, capsys, argv, message):
    assert (
        run_local.main(
            [*argv, "--output-dir", str(tmp_path / "o"), "--registry", str(tmp_path / "r")]
        )
        == 2
    )
    assert message in capsys.readouterr().err


def test_source_without_the_label_column(tmp_path, capsys):
    csv = tmp_path / "data.csv"
    csv.write_text("id,x,target\n1,0.5,a\n2,0.1,b\n")
    rc = run_local.main(["--source", str(csv), "--label", "traget", "--output-dir", str(tmp_path / "o"),
                         "--registry", str(tmp_path / "r")])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2
    assert "traget" in err and "target" in err  # names the column and suggests the close one


def test_output_dir_not_writable(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert (
        run_local.main(["--output-dir", str(blocker / "out"), "--registry", str(tmp_path / "r")])
        == 2
    )
    assert "is not writable" in capsys.readouterr().err


def test_csv_source_is_imported_with_a_row_key_and_typed_features(tmp_path):
    csv = tmp_path / "data.csv"
    csv.write_text("amount,city,churned\n1.5,paris,yes\n2.0,,no\n0.5,rome,no\n")
    args = run_local.build_parser().parse_args(
        ["--source", str(csv), "--label", "churned", "--features", "amount,city"]
    )
    uri, spec, _ = run_local.resolve_source(args, tmp_path)
    assert uri == f"duckdb://{tmp_path / 'source.duckdb'}?table=source"
    assert (spec.label, spec.key, spec.numeric, spec.categorical) == (
        "churned",
        "row_key",
        ("amount",),
        ("city",),
    )
    import duckdb

    with duckdb.connect(str(tmp_path / "source.duckdb"), read_only=True) as con:
        keys = [r[0] for r in con.execute("SELECT row_key FROM source ORDER BY amount").fetchall()]
    assert keys == ["3", "1", "2"]  # numbered in file order, unique
