"""Test helper: run ``run_local.py`` in this process; the settings of the shared demo run.

tests/pipelines/conftest.py runs the demo once a session with :data:`DEMO_ARGV`
(test_local_run.py and test_batch_prediction_pipeline.py read it).
"""

import contextlib
import io
import json

import run_local
from pipelines.local_run import SUMMARY_FILE

DEMO_ROWS = 20_000
# Enough data and epochs for the small MLP to learn all three classes (macro F1 0.92 measured
# with these settings; the full default demo gives 0.94).
DEMO_TRAIN = ["--epochs", "10", "--batch-size", "256", "--learning-rate", "3e-3"]
DEMO_ARGV = ["--rows", str(DEMO_ROWS), *DEMO_TRAIN, "--min-metric", "0.5"]


def run_local_main(argv, out_dir, registry):
    """(exit status, printed lines, summary or None) of one in-process run_local.py call."""
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        rc = run_local.main([*argv, "--output-dir", str(out_dir), "--registry", str(registry)])
    summary_path = out_dir / SUMMARY_FILE
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else None
    return rc, stdout.getvalue().splitlines(), summary
