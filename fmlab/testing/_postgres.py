"""A throw-away PostgreSQL server on loopback, for the Optuna storage tests and benchmarks.

``with postgres_server() as url:`` starts ``initdb`` + ``pg_ctl`` in a temporary folder (as the
``postgres`` user when run as root), creates database ``fmlab`` and yields
``postgresql+psycopg://postgres@127.0.0.1:PORT/fmlab``; the server is stopped and its folder
removed afterwards.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["PG_BIN", "postgres_missing", "postgres_server"]

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def postgres_missing() -> str | None:
    """Why a server cannot start here (with the install command), or ``None``."""
    if not (PG_BIN / "initdb").exists():
        return "PostgreSQL 15 server binaries are missing: apt-get install postgresql"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "runuser is needed to run PostgreSQL as the postgres user"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return 'psycopg is missing: pip install "psycopg[binary]"'
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """Start a throw-away server; yield its SQLAlchemy URL (see the module docstring)."""
    reason = postgres_missing()
    if reason:
        raise RuntimeError(reason)
    root = Path(tempfile.mkdtemp(prefix="fmlab-pg-"))
    os.chmod(root, 0o777)
    prefix: list[str] = []
    if os.geteuid() == 0:
        prefix = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres", "postgres")
    data, port = root / "data", _free_port()

    def run(*args: str) -> None:
        subprocess.run([*prefix, *args], check=True, capture_output=True)

    try:
        run(str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres")
        run(str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-o",
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start")
        run(str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
            "fmlab")
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/fmlab"
    finally:
        subprocess.run([*prefix, str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate",
                        "-w", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
