"""One trained demo run shared by the pipeline tests that only read what it left.

``run_local.py`` on the demo table is the most expensive thing these tests do (six kfp.local
task processes, a real training). test_local_run.py and test_batch_prediction_pipeline.py both
need one, so it runs once a session:

- :func:`demo_run` is the run itself (its output directory, registry, exit status, lines and
  summary). test_local_run.py goes on registering into that registry (its own module).
- :func:`demo_registry_v1` is a copy of the registry taken right after the run: version 1 of
  ``demo-label``, the champion. Never write into it: copy it (``shutil.copytree``) first, as
  the batch prediction tests do.
"""

import shutil

import pytest
from demo_runs import DEMO_ARGV, run_local_main


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """``run_local.py --rows 20000 ...`` (DEMO_ARGV) into ``<base>/demo``, registry ``<base>/registry``.

    Returns a dict: ``base``, ``out_dir``, ``registry``, ``result`` (exit status, lines, summary),
    ``snapshot`` (the registry copied right after the run).
    """
    base = tmp_path_factory.mktemp("local")
    registry = base / "registry"
    result = run_local_main(DEMO_ARGV, base / "demo", registry)
    snapshot = tmp_path_factory.mktemp("registry_v1") / "registry"
    if registry.is_dir():
        shutil.copytree(registry, snapshot)
    return {
        "base": base,
        "out_dir": base / "demo",
        "registry": registry,
        "result": result,
        "snapshot": snapshot,
    }


@pytest.fixture(scope="session")
def demo_registry_v1(demo_run):
    """The demo run's registry as it was after that run (read only: copy it to write)."""
    rc, lines, _ = demo_run["result"]
    assert rc == 0, "\n".join(lines)
    return demo_run["snapshot"]
