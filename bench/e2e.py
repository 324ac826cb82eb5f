"""Time the whole local pipeline (run_local.py) end to end, with the peak RSS of each step.

    python bench/e2e.py --rows 1000000          # goal: < 5 min on 2 cores
    python bench/e2e.py --rows 100000 --epochs 5
    python bench/e2e.py --rows 10000000 --json build/bench_e2e_10m.json

Runs run_local.py in a fresh process with a fresh registry (so the gate has no champion),
then prints one table: each pipeline step's seconds and peak RSS, plus the ``run_local.py``
process itself (input staging and the kfp.local orchestration), and the run's totals.

Peak RSS per step is exact, not sampled: kfp.local runs each task as its own Python process,
and ``bench/rss_probe/sitecustomize.py`` (put first on their ``PYTHONPATH``) records each
process's high-water mark (``VmHWM``) when it exits, one JSON line per process in
``OUTPUT_DIR/rss_probe.jsonl``. ``--json PATH`` writes
``{"rows", "exit", "wall_s", "cpu_s", "macro_f1", "steps": [{"step", "seconds",
"peak_rss_mb"}]}`` (MB = 10^6 bytes).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipelines.local_run import STEPS, SUMMARY_FILE  # noqa: E402

PROBE_DIR = ROOT / "bench" / "rss_probe"
RUN_LOCAL = "run_local.py (input, orchestration)"
RSS_LOG = "rss_probe.jsonl"


def step_of(argv: list[str]) -> str | None:
    """The pipeline step a recorded process ran, ``RUN_LOCAL``, or None for anything else."""
    if "--function_to_execute" in argv:
        index = argv.index("--function_to_execute") + 1
        if index < len(argv):
            return argv[index].replace("_", "-")
    if argv and argv[0].endswith("run_local.py"):
        return RUN_LOCAL
    return None


def peak_rss_by_step(log: Path) -> dict[str, float]:
    """Peak RSS in MB of each step from the probe's log (the largest if a step ran twice)."""
    peaks: dict[str, float] = {}
    if not log.is_file():
        return peaks
    for line in log.read_text().splitlines():
        record = json.loads(line)
        step = step_of(record["argv"])
        if step is not None:
            mb = record["peak_rss_kb"] * 1024 / 1e6
            peaks[step] = max(peaks.get(step, 0.0), mb)
    return peaks


def step_rows(seconds: dict[str, float], peaks: dict[str, float]) -> list[dict[str, Any]]:
    """One row per step (pipeline order, then ``run_local.py``): seconds and peak RSS."""
    seen = set(seconds) | set(peaks)
    names = [s for s in STEPS if s in seen] + sorted(seen - set(STEPS) - {RUN_LOCAL})
    names += [RUN_LOCAL] if RUN_LOCAL in peaks else []
    return [
        {
            "step": name,
            "seconds": seconds.get(name),
            "peak_rss_mb": round(peaks[name]) if name in peaks else None,
        }
        for name in names
    ]


def format_rows(rows: list[dict[str, Any]]) -> str:
    """The table ``main`` prints."""
    lines = [f"  {'step':<36} {'seconds':>8} {'peak RSS MB':>12}"]
    for row in rows:
        seconds = "-" if row["seconds"] is None else f"{row['seconds']:.1f}"
        rss = "-" if row["peak_rss_mb"] is None else f"{row['peak_rss_mb']:,}"
        lines.append(f"  {row['step']:<36} {seconds:>8} {rss:>12}")
    return "\n".join(lines)


def main() -> int:
    """Run run_local.py once; print (and with ``--json`` write) the per-step table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--output-dir", default=str(ROOT / "build" / "bench_e2e"))
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("extra", nargs="*", help="more run_local.py options (after --)")
    args, unknown = parser.parse_known_args()
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as scratch:
        registry = Path(scratch) / "registry"
        rss_log = Path(args.output_dir) / RSS_LOG  # kept: one line per Python process
        rss_log.parent.mkdir(parents=True, exist_ok=True)
        rss_log.unlink(missing_ok=True)
        env = dict(os.environ, E2E_RSS_LOG=str(rss_log))
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(PROBE_DIR), os.environ.get("PYTHONPATH", "")) if p
        )
        cmd = [
            sys.executable,
            str(ROOT / "run_local.py"),
            "--rows", str(args.rows),
            "--output-dir", args.output_dir,
            "--registry", str(registry),
            *args.extra,
            *unknown,
        ]  # fmt: skip
        started = time.monotonic()
        rc = subprocess.call(cmd, cwd=ROOT, env=env)
        wall = time.monotonic() - started
        peaks = peak_rss_by_step(rss_log)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    summary_path = Path(args.output_dir) / SUMMARY_FILE
    summary: dict[str, Any] = {}
    if rc == 0 and summary_path.is_file():
        summary = json.loads(summary_path.read_text())
    rows = step_rows(summary.get("step_seconds", {}), peaks)
    macro_f1 = summary.get("metrics", {}).get("macro_f1")
    cpu = usage.ru_utime + usage.ru_stime
    print(f"\nrows={args.rows:,}  exit={rc}  wall={wall:.1f} s  cpu={cpu:.1f} s")
    print(format_rows(rows))
    if macro_f1 is not None:
        print(f"  macro F1 {macro_f1:.4f}")
    if args.json:
        result = {
            "rows": args.rows,
            "exit": rc,
            "wall_s": round(wall, 1),
            "cpu_s": round(cpu, 1),
            "macro_f1": macro_f1,
            "steps": rows,
        }
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return rc


if __name__ == "__main__":
    sys.exit(main())
