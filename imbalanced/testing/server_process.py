"""Run a local test server in its own process (stdlib only: used by both the v1 and v1beta1 envs).

A server module's ``main`` calls :func:`serve_table_main`; benches and tests start it with
:func:`serve_in_subprocess`, which waits for the ``LISTENING host:port`` line and stops the
child when the ``with`` block ends (closing its stdin is the lifeline).
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence


@contextlib.contextmanager
def serve_in_subprocess(
    module: str,
    *,
    rows: int,
    kind: str,
    seed: int,
    table: str,
    batch_rows: int,
    python: str = sys.executable,
) -> Iterator[str]:
    """Run ``python -m module`` serving one generated table; yield its ``host:port``."""
    cmd = [
        python,
        "-m",
        module,
        f"--rows={rows}",
        f"--kind={kind}",
        f"--seed={seed}",
        f"--table={table}",
        f"--batch-rows={batch_rows}",
        "--stdin-lifeline",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        if not line.startswith("LISTENING "):
            raise RuntimeError(f"{module} did not start (exit {proc.poll()}): {line!r}")
        yield line.split()[1]
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def serve_table_main(
    argv: Sequence[str] | None,
    *,
    description: str,
    kinds: Sequence[str],
    default_table: str,
    start: Callable[[argparse.Namespace], object],
) -> int:
    """Parse the standard flags, start the server, serve until SIGTERM/SIGINT or stdin EOF.

    Args:
        argv: command-line arguments (None: ``sys.argv``).
        description: ``--help`` text.
        kinds: table generator names for ``--kind``.
        default_table: default for ``--table``.
        start: builds and starts the server from the parsed flags; returns an object with
            ``address`` and ``stop(grace)``.
    """
    parser = argparse.ArgumentParser(
        description=f"{description} Prints 'LISTENING 127.0.0.1:PORT' when ready."
    )
    parser.add_argument("--rows", type=int, default=100_000, help="rows in the table")
    parser.add_argument("--kind", default=kinds[0], choices=kinds, help="table generator")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--table", default=default_table, help="table to serve it as")
    parser.add_argument("--batch-rows", type=int, default=4096, help="rows per response")
    parser.add_argument(
        "--stdin-lifeline", action="store_true", help="also stop when stdin reaches end of file"
    )
    args = parser.parse_args(argv)
    server = start(args)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    print(f"LISTENING {server.address}", flush=True)

    def watch_stdin() -> None:
        sys.stdin.read()
        done.set()

    if args.stdin_lifeline:
        threading.Thread(target=watch_stdin, daemon=True).start()
    done.wait()
    server.stop(0)
    return 0
