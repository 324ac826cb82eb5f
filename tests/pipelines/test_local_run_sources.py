"""run_local.py with a Parquet --source end to end, and its option and input errors."""

import contextlib
import io
import json

import duckdb
import pytest

import run_local
from pipelines.local_input import LocalRunOptions, options_from_text
from pipelines.local_run import SUMMARY_FILE
from vertex_imbalanced.errors import PipelineInputError
from vertex_imbalanced.warehouse.demo_data import demo_table

ROWS = 3000


@pytest.mark.slow
def test_parquet_source_without_a_key_runs_end_to_end(tmp_path):
    parquet = tmp_path / "events.parquet"
    table = demo_table(ROWS, seed=5).drop_columns(["id"])  # no key column: row_key is added
    with duckdb.connect() as con:
        con.register("rows", table)
        con.execute("COPY rows TO ? (FORMAT parquet)", [str(parquet)])
    out = tmp_path / "out"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        rc = run_local.main(
            ["--source", str(parquet), "--label", "label", "--epochs", "1", "--min-metric", "0",
             "--output-dir", str(out), "--registry", str(tmp_path / "registry")]
        )  # fmt: skip
    assert rc == 0, stdout.getvalue()
    summary = json.loads((out / SUMMARY_FILE).read_text())
    assert summary["source"] == str(parquet)
    splits = summary["data"]["split_counts"]
    assert sum(sum(counts.values()) for counts in splits.values()) == ROWS
    per_label = table.group_by("label").aggregate([("label", "count")]).to_pylist()
    totals = {str(row["label"]): row["label_count"] for row in per_label}
    assert {c: sum(s.get(c, 0) for s in splits.values()) for c in totals} == totals
    # One epoch may or may not beat the gate's logistic baseline: registration follows the gate.
    assert (summary["registered"] is not None) == summary["gate"]["passed"]
    assert f"data: {parquet}; splits " in stdout.getvalue()
    with duckdb.connect(str(out / "source.duckdb"), read_only=True) as con:
        columns = [row[0] for row in con.execute("DESCRIBE source").fetchall()]
    assert columns == [*table.schema.names, "row_key"]


def run_error(tmp_path, capsys, argv):
    rc = run_local.main(
        [*argv, "--output-dir", str(tmp_path / "o"), "--registry", str(tmp_path / "r")]
    )
    captured = capsys.readouterr()
    return rc, captured.err, captured.out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--source", "s3://bucket/data.csv", "--label", "y"], "unknown --source 's3://bucket/data.csv'"),
        (["--source", "table.xlsx", "--label", "y"], "unknown --source"),
        (["--source", "duckdb://w.db?table=t", "--label", "y", "--key", "k"], "the path must be absolute"),
        (["--rows", "0"], "--rows: must be > 0"),
        (["--epochs", "0"], "--epochs: epochs must be > 0"),
    ],
)  # fmt: skip
def test_bad_arguments_exit_2_with_one_error_line(tmp_path, capsys, argv, message):
    rc, err, _ = run_error(tmp_path, capsys, argv)
    assert rc == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err
    assert not (tmp_path / "o").exists() and not (tmp_path / "r").exists()


def test_all_problems_of_one_run_are_listed_together(tmp_path, capsys):
    rc, err, _ = run_error(tmp_path, capsys, ["--source", "duckdb:///w.db?table=t", "--label", "y"])
    assert rc == 2
    assert err.splitlines() == [
        "error: 2 problems found before anything ran:",
        "  --key: required with a DuckDB --source (a unique row key column)",
        "  --source: DuckDB file /w.db does not exist (duckdb:///w.db?table=t)",
    ]


def test_source_without_the_label_column(tmp_path, capsys):
    csv = tmp_path / "data.csv"
    csv.write_text("id,x,target\n1,0.5,a\n2,0.1,b\n")
    rc, err, _ = run_error(tmp_path, capsys, ["--source", str(csv), "--label", "traget"])
    assert rc == 2
    assert "traget" in err and "'target'" in err  # names the column and suggests the close one


def test_output_dir_not_writable(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    rc = run_local.main(["--output-dir", str(blocker / "out"), "--registry", str(tmp_path / "r")])
    assert rc == 2
    assert "is not writable" in capsys.readouterr().err


def test_parser_fills_the_options_with_their_defaults():
    args = run_local.build_parser().parse_args(
        ["--features", "a, b,,c", "--hidden-units", "64,32", "--epochs", "3"]
    )
    options, problems = options_from_text(vars(args))
    assert problems == []
    assert options.features == ("a", "b", "c")
    assert options.hidden_units == (64, 32)
    assert options.hyperparameters() == {"epochs": 3, "hidden_units": [64, 32]}
    defaults, problems = options_from_text(vars(run_local.build_parser().parse_args([])))
    assert problems == [] and defaults == LocalRunOptions()
    assert defaults.hyperparameters() == {}


def test_bad_hyperparameters_are_named():
    with pytest.raises(PipelineInputError, match="--learning-rate: learning_rate must be > 0"):
        LocalRunOptions(learning_rate=-1.0).hyperparameters()
