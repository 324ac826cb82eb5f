"""Time the whole local pipeline (run_local.py) end to end.

    python bench/e2e.py --rows 1000000          # goal: < 5 min on 2 cores
    python bench/e2e.py --rows 100000 --epochs 5

Runs run_local.py in a fresh process with a fresh registry (so the gate has no champion),
then prints the wall time, CPU time and the seconds of each pipeline step.
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipelines.local_run import SUMMARY_FILE  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--output-dir", default=str(ROOT / "build" / "bench_e2e"))
    parser.add_argument("extra", nargs="*", help="more run_local.py options (after --)")
    args, unknown = parser.parse_known_args()
    with tempfile.TemporaryDirectory(prefix="bench-registry-") as registry:
        cmd = [
            sys.executable,
            str(ROOT / "run_local.py"),
            "--rows", str(args.rows),
            "--output-dir", args.output_dir,
            "--registry", registry,
            *args.extra,
            *unknown,
        ]  # fmt: skip
        started = time.monotonic()
        rc = subprocess.call(cmd, cwd=ROOT)
        wall = time.monotonic() - started
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(
        f"\nrows={args.rows}  exit={rc}  wall={wall:.1f} s  "
        f"cpu={usage.ru_utime + usage.ru_stime:.1f} s  max_rss={usage.ru_maxrss / 1024:.0f} MiB"
    )
    summary_path = Path(args.output_dir) / SUMMARY_FILE
    if rc == 0 and summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        for step, seconds in summary.get("step_seconds", {}).items():
            print(f"  {step:<16} {seconds:7.1f} s")
        print(f"  macro F1 {summary['metrics']['macro_f1']:.4f}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
