"""run_local before and around the pipeline: one-pass errors, busy directories, full disks, the
lines printed (roles, classes, warnings, epochs), the feature-config file and --help.

Issue 11 cases 9 (errors early, all at once), 11 (skipped labels in the summary) and 15 (CLI).
No kfp.local run here: everything below happens before or beside it.
"""

import errno
import io
import os
import re

import pytest

import run_local
from pipelines.local_input import LocalRunOptions, OutputLock, data_request, read_feature_config
from pipelines.local_run import KfpLocalOutput, _failure
from pipelines.local_summary import format_summary
from vertex_imbalanced.config import DEFAULT_NA_VALUES
from vertex_imbalanced.errors import OutputBusyError
from vertex_imbalanced.options_check import Problems


def run(tmp_path, capsys, argv):
    rc = run_local.main(
        [*argv, "--output-dir", str(tmp_path / "out"), "--registry", str(tmp_path / "reg")]
    )
    captured = capsys.readouterr()
    return rc, captured.err.splitlines(), captured.out.splitlines()


def test_every_problem_of_options_and_table_is_listed_at_once_and_nothing_is_written(
    tmp_path, capsys
):
    csv = tmp_path / "in.csv"
    csv.write_text(
        "id,churn,amount,empty\n"
        + "".join(
            f"{i},{['churned', 'stayed', 'NA', 'maybe'][i % 4]},{i * 0.5},NA\n" for i in range(400)
        )
    )
    rc, err, out = run(
        tmp_path,
        capsys,
        ["--source", str(csv), "--label", "churn", "--key", "id", "--features", "amount,empty,amout",
         "--classes", "churned,stayed", "--min-metric", "nan", "--tolerance", "nan",
         "--max-ratio", "nan", "--hidden-units", "64,x", "--model-name", "bad name!",
         "--split-ratios", "0.8,0.2,0.1"],
    )  # fmt: skip
    assert rc == 2 and out == []
    assert err[0] == "error: 10 problems found before anything ran:"
    problems = [line.strip() for line in err[1:]]
    assert [p.split(":")[0] for p in problems[:7]] == [
        "--split-ratios",
        "--max-ratio",
        "--min-metric",
        "--tolerance",
        "--hidden-units",
        "--model-name",
        "--features",
    ]
    assert "--features: the table has no column 'amout'; did you mean 'amount'?" in problems[6]
    assert problems[7].startswith("column 'empty' is empty (NULL in all 400 rows)")
    assert re.match(r"label column 'churn' of .* has 100 NULL value\(s\)", problems[8])
    assert re.match(r"label column 'churn' .* value 'maybe' \(100 row\(s\)", problems[9])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]  # no output, no registry


def test_a_second_run_into_a_busy_output_directory_gets_one_line(tmp_path, capsys):
    lock = OutputLock(tmp_path / "out")
    try:
        rc, err, _ = run(tmp_path, capsys, ["--rows", "200"])
    finally:
        lock.release()
    assert rc == 2
    assert err == [
        f"error: output directory '{tmp_path / 'out'}' is busy: another run (pid {os.getpid()}) "
        "is writing there; wait for it to finish or pass another --output-dir"
    ]
    again = OutputLock(tmp_path / "out")  # released: free again
    again.release()
    with pytest.raises(OutputBusyError):
        held = OutputLock(tmp_path / "out")
        try:
            OutputLock(tmp_path / "out")
        finally:
            held.release()


class FullDisk(io.StringIO):
    """A log file on a disk that fills after ``room`` characters (ENOSPC at the write call)."""

    def __init__(self, room):
        super().__init__()
        self.room = room

    def write(self, text):
        if self.tell() + len(text) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().write(text)


def feed(sink, lines):
    for line in lines:
        sink.write(line + "\n")


def test_a_full_disk_during_a_step_is_one_line_naming_the_step(tmp_path):
    console = io.StringIO()
    sink = KfpLocalOutput(FullDisk(room=120), console)
    feed(
        sink,
        [
            "06:00:00.000 - INFO - Executing task 'prepare-data'",
            "06:00:02.000 - INFO - Task 'prepare-data' finished with status SUCCESS",
            "06:00:02.100 - INFO - Executing task 'train'",
            "    Traceback (most recent call last):",
            "    OSError: [Errno 28] No space left on device: '/out/pipeline_root/r/train/model'",
        ],
    )
    assert sink.log_error is not None and sink.log_error.errno == errno.ENOSPC
    assert console.getvalue().splitlines() == [
        "[1/6] prepare-data ...",
        "      prepare-data: success in 0.0 s",
        "[2/6] train ...",
    ]
    err = _failure(RuntimeError("Inner task failed: 'train'"), sink, tmp_path / "pipeline.log")
    assert str(err) == (
        "pipeline stopped: task 'train' failed: the disk is full (OSError: [Errno 28] No space "
        f"left on device: '/out/pipeline_root/r/train/model'); free space on the disk of {tmp_path} "
        "and rerun"
    )
    # kfp.local itself failing to write (an OSError out of the run) names the running task.
    err = _failure(OSError(errno.ENOSPC, "No space left on device"), sink, tmp_path / "p.log")
    assert str(err).startswith("pipeline stopped: task 'train' failed: the disk is full")
    assert "\n" not in str(err)


def test_a_failing_log_alone_does_not_hide_the_tasks_error(tmp_path):
    sink = KfpLocalOutput(FullDisk(room=0), io.StringIO())
    feed(sink, ["Executing task 'evaluate'", "    ValueError: bad threshold"])
    err = _failure(RuntimeError("Inner task failed: 'evaluate'"), sink, tmp_path / "p.log")
    assert str(err).startswith(
        "pipeline stopped: task 'evaluate' failed: the disk is full (ValueError: bad threshold; "
        "the log could not be written)"
    )


def test_task_warnings_and_epoch_lines_reach_the_console():
    console = io.StringIO()
    sink = KfpLocalOutput(io.StringIO(), console)
    warning = "    /x/trainer.py:242: UserWarning: classes ['2'] have no training rows in t"
    feed(
        sink,
        [
            "Executing task 'train'",
            warning,
            "      warnings.warn(",
            warning,  # the same warning again: printed once
            "    epoch 1/3: loss 0.6931 val_loss 0.6012 rows/s 51234",
            "    [KFP Executor 2026-11-30 06:00:01,000 INFO]: epoch 2/3: loss 0.5 val_loss 0.4 rows/s 60000",
        ],
    )  # fmt: skip
    assert console.getvalue().splitlines() == [
        "[2/6] train ...",
        "      warning (train): classes ['2'] have no training rows in t",
        "      epoch 1/3: loss 0.6931 val_loss 0.6012 rows/s 51234",
        "      epoch 2/3: loss 0.5 val_loss 0.4 rows/s 60000",
    ]


def test_feature_config_file_keys_and_the_options_over_them(tmp_path):
    config = tmp_path / "features.yaml"
    config.write_text(
        "label: is_fraud\nkey: id\nclasses: [false, true]\nlabel_policy: skip\n"
        "na_values: ['?', '-']\nignored: [notes]\ncategorical: [country]\n"
    )
    problems = Problems()
    data = read_feature_config(str(config), problems)
    assert problems.lines == []
    request = data_request(LocalRunOptions(), data, None)
    assert (request.label, request.key, request.classes) == ("is_fraud", "id", ("false", "true"))
    assert (request.label_policy, request.na_values, request.ignored) == ("skip", ("?", "-"), ("notes",))  # fmt: skip
    assert request.categorical == ("country",)
    options = LocalRunOptions(label="y", classes=("b", "a"), ignore=(), na_values=("NA",))
    over = data_request(options, data, None)
    assert (over.label, over.classes, over.ignored, over.na_values) == ("y", ("b", "a"), (), ("NA",))  # fmt: skip
    assert data_request(LocalRunOptions(), {}, "row_key").na_values == DEFAULT_NA_VALUES

    config.write_text("lable: y\nkey: id\nweight: w\n")
    data = read_feature_config(str(config), problems)
    assert problems.lines == [
        f"--feature-config: unknown key 'lable' in {config} (known: ['categorical', 'classes', "
        "'ignored', 'key', 'label', 'label_policy', 'na_values', 'numeric', 'weight'])",
        "--feature-config: 'weight' is not supported (the prepare step adds it)",
    ]
    read_feature_config(str(tmp_path / "none.yaml"), problems)
    assert problems.lines[-1].startswith(f"--feature-config: cannot read {tmp_path / 'none.yaml'}")


def test_help_shows_defaults_and_two_examples():
    text = run_local.build_parser().format_help()
    flat = " ".join(text.split())
    for default in (
        "(default: 0.5)",  # --min-metric
        "(default: 0.0)",  # --tolerance
        "(default: 10.0)",  # --max-ratio
        "(default: build/local_run)",
        "(default: build/registry)",
        "(default: downsample_upweight)",
        "(default: error)",  # --label-policy
        "(default: 0.8,0.1,0.1)",
        "NA,N/A,NaN,null,NULL",
    ):
        assert default in flat, default
    examples = text[text.index("examples:") :]
    assert len(re.findall(r"^  python run_local\.py --source ", examples, re.M)) == 2


def test_summary_prints_the_classes_and_the_skipped_rows():
    summary = {
        "source": "credit.csv",
        "data": {
            "classes": ["bad", "good"],
            "skipped_labels": {"train": 3, "validation": 1, "test": 0},
            "split_counts": {"train": {"bad": 5, "good": 9}, "test": {"bad": 1, "good": 2}},
        },
        "metrics": {"macro_f1": 0.7, "weighted_f1": 0.75, "accuracy": 0.8, "per_class": {}},
        "gate": {"passed": False, "reason": "below 0.9"},
        "registered": None,
        "paths": {"report": "/r.html"},
    }
    lines = format_summary(summary).splitlines()
    assert lines[:3] == [
        "data: credit.csv; splits train=14, test=3",
        "skipped: 4 row(s) with a NULL label or one outside the classes (train=3, validation=1, "
        "test=0)",
        "classes: 0='bad'  1='good'",
    ]


def test_summary_prints_log_loss_aucs_operating_point_and_baselines():
    summary = {
        "source": "lending.csv",
        "data": {"classes": ["bad", "good"], "split_counts": {"test": {"bad": 5, "good": 95}}},
        "metrics": {
            "macro_f1": 0.56,
            "weighted_f1": 0.9,
            "accuracy": 0.91,
            "per_class": {},
            "log_loss": 0.2012,
            "roc_auc": 0.7011,
            "pr_auc": 0.1234,
            "operating_point": {
                "kind": "threshold",
                "threshold": 0.0823,
                "chosen_on": "validation",
            },
            "argmax": {"macro_f1": 0.4851},
            "baselines": {
                "prior": {"macro_f1": 0.4872},
                "logistic_regression": {"macro_f1": 0.5561},
            },
        },
        "gate": {"passed": True, "reason": "ok"},
        "registered": None,
        "paths": {"report": "/r.html"},
    }
    lines = format_summary(summary).splitlines()
    assert "      log loss 0.2012  ROC AUC 0.7011  PR AUC 0.1234" in lines
    assert (
        "operating point: threshold 0.0823, chosen on validation; at argmax macro F1 0.4851"
        in lines
    )
    assert (
        "baselines (same test rows): prior macro F1 0.4872  logistic regression macro F1 0.5561"
        in lines
    )
    # a metrics.json without them (older runs) prints none of these lines
    plain = dict(summary, metrics={k: summary["metrics"][k] for k in ("macro_f1", "weighted_f1",
                                                                      "accuracy", "per_class")})  # fmt: skip
    assert not any(
        line.startswith(("operating point", "baselines", "      log loss"))
        for line in format_summary(plain).splitlines()
    )
