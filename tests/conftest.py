"""Shared test setup: quiet TensorFlow, one CPU thread pool small enough for 2 cores.

``make test-legacy`` sets ``VERTEX_IMBALANCED_LEGACY_RUN=1``: that run must really exercise
tensorflow-io, so a skipped test or a run with no passed test fails it (a broken legacy env would
otherwise skip every test and end green).
"""

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

LEGACY_RUN = os.environ.get("VERTEX_IMBALANCED_LEGACY_RUN") == "1"
_outcomes = {"passed": 0, "skipped": []}


def pytest_runtest_logreport(report):
    if report.skipped:
        _outcomes["skipped"].append(report.nodeid)
    elif report.passed and report.when == "call":
        _outcomes["passed"] += 1


def pytest_collectreport(report):
    if report.skipped:  # a module-level skip (importorskip) skips at collection
        _outcomes["skipped"].append(report.nodeid)


def pytest_sessionfinish(session, exitstatus):
    if not LEGACY_RUN:
        return
    problems = []
    if _outcomes["skipped"]:
        problems.append(f"skipped: {', '.join(_outcomes['skipped'])}")
    if not _outcomes["passed"]:
        problems.append("no test passed")
    if problems:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        message = "legacy run (VERTEX_IMBALANCED_LEGACY_RUN=1) must run every test: " + "; ".join(
            problems
        )
        if reporter is not None:
            reporter.write_line(message, red=True, bold=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
