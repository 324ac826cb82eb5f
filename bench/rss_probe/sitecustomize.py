"""Record this Python process's peak RSS when it exits (used by ``bench/e2e.py`` only).

``bench/e2e.py`` puts this directory first on ``PYTHONPATH`` of the ``run_local.py`` it
starts, so every Python process of the run (``run_local.py`` itself and each kfp.local task,
which SubprocessRunner starts as ``python -m kfp.dsl.executor_main ...``) imports it at
start-up. At exit it appends one JSON line to the file named by ``E2E_RSS_LOG``:
``{"pid", "argv", "peak_rss_kb", "children_max_rss_kb", "seconds"}``. ``peak_rss_kb`` is
the process's own high-water mark (``VmHWM`` in ``/proc/self/status``: reset by ``exec``,
unlike ``ru_maxrss``, which a forked child inherits from its parent), so it belongs to that
task alone and is exact, not sampled. A process killed by a signal writes nothing.
"""

import atexit
import json
import os
import resource
import sys
import time

_LOG = os.environ.get("E2E_RSS_LOG")
_STARTED = time.monotonic()


def _peak_rss_kb() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # not Linux: ru_maxrss


def _record() -> None:
    line = {
        "pid": os.getpid(),
        "argv": [a for a in sys.argv if len(a) < 200],  # the executor input is long
        "peak_rss_kb": _peak_rss_kb(),
        "children_max_rss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
        "seconds": round(time.monotonic() - _STARTED, 1),
    }
    with open(_LOG, "a") as log:  # one short write per process: lines do not interleave
        log.write(json.dumps(line) + "\n")


if _LOG:
    atexit.register(_record)
