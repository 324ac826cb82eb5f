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
from typing import Any


@contextlib.contextmanager
def serve_in_subprocess(
    module: str,
    rows: int,
    *,
    table: str,
    kind: str = "wide",
    seed: int = 0,
    batch_rows: int = 4096,
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
    server_class: Callable[..., Any],
    description: str,
    default_table: str,
) -> int:
    """Parse the standard flags, serve one generated table until SIGTERM/SIGINT or stdin EOF.

    Args:
        argv: command-line arguments (None: ``sys.argv``).
        server_class: the server; ``server_class(batch_rows=)`` with ``add_table``, ``start``,
            ``address`` and ``stop(grace)``.
        description: ``--help`` text.
        default_table: default for ``--table``.
    """
    from fakes.arrow_tables import TABLE_KINDS, make_table

    parser = argparse.ArgumentParser(
        description=f"{description} Prints 'LISTENING 127.0.0.1:PORT' when ready."
    )
    parser.add_argument("--rows", type=int, default=100_000, help="rows in the table")
    parser.add_argument("--kind", default="wide", choices=TABLE_KINDS, help="table generator")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--table", default=default_table, help="table to serve it as")
    parser.add_argument("--batch-rows", type=int, default=4096, help="rows per response")
    parser.add_argument(
        "--stdin-lifeline", action="store_true", help="also stop when stdin reaches end of file"
    )
    args = parser.parse_args(argv)
    server = server_class(batch_rows=args.batch_rows)
    server.add_table(args.table, make_table(args.kind, args.rows, args.seed))
    server.start()
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
