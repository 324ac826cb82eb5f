"""Run a local test server in its own process (stdlib only: used by both the v1 and v1beta1 envs).

A server module's ``main`` calls :func:`serve_table_main`; benches and tests start it with
:func:`serve_in_subprocess`, which waits for the ``LISTENING host:port`` line and stops the
child when the ``with`` block ends (closing its stdin is the lifeline).
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports free on 127.0.0.1 right now (bound together, then released)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@contextlib.contextmanager
def serve_in_subprocess(
    module: str,
    rows: int,
    *,
    table: str,
    kind: str = "wide",
    seed: int = 0,
    batch_rows: int = 4096,
    max_streams_returned: int | None = None,
    session_lifetime_s: float | None = None,
    read_only_projects: Sequence[str] = (),
    python: str = sys.executable,
) -> Iterator[str]:
    """Run ``python -m module`` serving one generated table; yield its ``host:port``.

    ``max_streams_returned``, ``session_lifetime_s`` and ``read_only_projects`` are the
    server's settings of the same names (v1 server only; None / empty: its defaults).
    """
    options = [f"--read-only-project={p}" for p in read_only_projects]
    if max_streams_returned is not None:
        options.append(f"--max-streams={max_streams_returned}")
    if session_lifetime_s is not None:
        options.append(f"--session-lifetime-s={session_lifetime_s}")
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
        *options,
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
            ``address`` and ``stop(grace)``; the behaviour flags, when given, become the
            keyword arguments ``max_streams_returned``, ``session_lifetime_s`` and
            ``read_only_projects``.
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
    parser.add_argument(
        "--max-streams", type=int, help="the most streams a session gets (default: as asked)"
    )
    parser.add_argument("--session-lifetime-s", type=float, help="read session lifetime")
    parser.add_argument(
        "--read-only-project",
        action="append",
        default=[],
        help="project that refuses read sessions (repeatable)",
    )
    args = parser.parse_args(argv)
    options: dict[str, Any] = {}
    if args.max_streams is not None:
        options["max_streams_returned"] = args.max_streams
    if args.session_lifetime_s is not None:
        options["session_lifetime_s"] = args.session_lifetime_s
    if args.read_only_project:
        options["read_only_projects"] = tuple(args.read_only_project)
    server = server_class(batch_rows=args.batch_rows, **options)
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
