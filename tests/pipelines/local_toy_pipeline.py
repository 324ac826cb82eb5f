"""A two-step kfp.local pipeline run under :class:`pipelines.local_resume.TaskSupervisor`.

Run by tests/pipelines/test_local_resume.py in a subprocess (a real ``run_local``-like parent
to signal)::

    python tests/pipelines/local_toy_pipeline.py OUT_DIR SECONDS

Step ``first`` (cacheable) appends ``first`` to ``OUT_DIR/marker.txt``; then, under a
``dsl.If`` on its output (kfp.local's enhanced orchestrator, as in the training pipeline), step
``second`` prints ``second started``, sleeps ``SECONDS`` and appends ``second``. The run is
always named ``toy-run`` (a rerun continues it). Exit status: 0, or ``128 + signal`` when
stopped; the last line says which steps were reused.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from kfp import dsl, local  # noqa: E402

from pipelines.local_resume import RunInterrupted, TaskSupervisor, fixed_run_name  # noqa: E402
from pipelines.local_run import named_output_conditions  # noqa: E402

RUN_NAME = "toy-run"


@dsl.component
def first(marker: str) -> bool:
    with open(marker, "a") as f:
        f.write("first\n")
    return True


@dsl.component
def second(marker: str, seconds: float) -> str:
    import time

    print("second started", flush=True)
    time.sleep(seconds)
    with open(marker, "a") as f:
        f.write("second\n")
    return "done"


@dsl.pipeline(name="toy")
def toy(marker: str, seconds: float):
    gate = first(marker=marker)
    with dsl.If(gate.output == True):  # noqa: E712
        second(marker=marker, seconds=seconds).set_caching_options(False)


def main(out: Path, seconds: float) -> int:
    root = out / "root"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
    supervisor = TaskSupervisor(root / RUN_NAME, grace=5.0)
    try:
        with named_output_conditions(), fixed_run_name(RUN_NAME), supervisor.installed():
            toy(marker=str(out / "marker.txt"), seconds=seconds)
    except RunInterrupted as err:
        return 128 + err.signum
    print(f"reused: {','.join(supervisor.reused)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), float(sys.argv[2])))
