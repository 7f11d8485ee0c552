"""Shared pytest setup. Offline by default: no test reaches a model hub."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from fmlab.testing import require_or_skip

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# -- a real PostgreSQL server for the Optuna storage tests (quant sweeps, AutoFT) ---------------
PG_BIN = Path("/usr/lib/postgresql/15/bin")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture()
def postgres_url():
    """Start a throw-away PostgreSQL server on loopback (as the postgres user when root)."""
    if not (PG_BIN / "initdb").exists():
        require_or_skip("PostgreSQL 15 server binaries are missing: apt-get install postgresql")
    pytest.importorskip("psycopg")
    root = Path(tempfile.mkdtemp(prefix="fmlab-pg-"))
    os.chmod(root, 0o777)
    prefix: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            require_or_skip("runuser is needed to run PostgreSQL as the postgres user")
        prefix = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres", "postgres")
    data, port = root / "data", _free_port()
    run = lambda *a: subprocess.run([*prefix, *a], check=True, capture_output=True)  # noqa: E731
    run(str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres")
    run(str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-o",
        f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start")
    try:
        run(str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
            "fmlab")
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/fmlab"
    finally:
        subprocess.run([*prefix, str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate",
                        "-w", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
