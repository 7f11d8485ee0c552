"""Atomic file writes and checksums, so that an interrupted job never leaves a half-written file."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = [
    "atomic_dir",
    "atomic_write",
    "clean_stale",
    "file_lock",
    "file_sha256",
    "read_npy",
    "read_table",
    "write_json",
]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _publish_mode(path: Path, *, directory: bool) -> None:
    """Give a temporary file or folder the mode a plainly created one would have.

    ``mkstemp``/``mkdtemp`` create 0600/0700 entries; results others read (reports, caches) should
    follow the umask like any other file.
    """
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on success rename it over ``path`` (atomic on POSIX).

    On an exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        _publish_mode(Path(tmp), directory=False)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary directory beside ``path``; on success it replaces ``path`` whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        _publish_mode(tmp, directory=True)
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def file_lock(path: str | os.PathLike[str]) -> Iterator[None]:
    """Hold an exclusive lock beside ``path`` (``.<name>.lock``) for the duration of the block, so
    that concurrent processes build or publish ``path`` one at a time."""
    path = Path(path)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: rely on the atomic renames alone
        yield
        return
    lock = path.parent / f".{path.name}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def clean_stale(path: str | os.PathLike[str]) -> list[Path]:
    """Remove what a killed :func:`atomic_dir` / :func:`atomic_write` of ``path`` left behind
    (``.<name>.*.tmp`` and ``.<name>.old``). Call it while holding :func:`file_lock` of ``path``,
    so that no live writer's temporary is removed. Returns the removed paths."""
    path = Path(path)
    removed = []
    for stale in [*path.parent.glob(f".{path.name}.*.tmp"), path.parent / f".{path.name}.old"]:
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
            removed.append(stale)
        elif stale.exists():
            stale.unlink(missing_ok=True)
            removed.append(stale)
    return removed


def write_json(path: str | os.PathLike[str], obj: Any, **kwargs: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_write(path) as fh:
        json.dump(obj, fh, indent=2, sort_keys=False, default=_json_default, **kwargs)
        fh.write("\n")


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_npy(path: str | os.PathLike[str], *, what: str = "array") -> Any:
    """Read a ``.npy`` file safely: never unpickles (object arrays are refused) and checks the
    header against the file size before allocating, so a forged shape fails with a sentence that
    names the file instead of numpy asking for terabytes.

    Raises:
        ValueError: Not a ``.npy`` file, an object array, or a header that does not match the
            data (truncated or forged).
    """
    import numpy as np
    from numpy.lib import format as npformat

    name = str(path)
    size = os.path.getsize(name)
    with open(name, "rb") as fh:
        try:
            version = npformat.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = npformat.read_array_header_1_0(fh)
            else:
                shape, fortran, dtype = npformat.read_array_header_2_0(fh)
        except Exception as exc:  # numpy parses the header dict with tokenize/ast: any error
            first = " ".join(str(exc).split())[:160]
            raise ValueError(f"The {what} file {name!r} is not a valid .npy file "
                             f"({type(exc).__name__}: {first}).") from None
        if dtype.hasobject:
            raise ValueError(f"The {what} file {name!r} holds Python objects (dtype {dtype}); "
                             "fmlab never unpickles files. Save numbers, e.g. "
                             "np.save(path, arr.astype(np.float32)).")
        n_bytes = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
        data_bytes = size - fh.tell()
        if n_bytes != data_bytes:
            raise ValueError(f"The {what} file {name!r} is truncated or its header is forged: "
                             f"shape {shape} of {dtype} needs {n_bytes:,} bytes, the file holds "
                             f"{data_bytes:,}.")
    return np.load(name, allow_pickle=False)


def _parse(read: Any, name: str, what: str, fmt: str) -> Any:
    try:
        return read()
    except MemoryError:
        raise ValueError(f"The {what} file {name!r} is too large or corrupt to read.") from None
    except Exception as exc:  # pandas/pyarrow parser errors (many subclass ValueError)
        first = " ".join(str(exc).split())[:200]
        raise ValueError(f"The {what} file {name!r} cannot be parsed as {fmt} "
                         f"({type(exc).__name__}: {first}).") from None


_TABLE_SUFFIXES = (".csv", ".tsv", ".txt", ".parquet", ".pq", ".json", ".jsonl")
_TABLE_EXAMPLE = "n_params,n_tokens,loss"


def read_table(path: str | os.PathLike[str], *, what: str = "table") -> Any:
    """Read a user's table (CSV/TSV, Parquet, JSON records or columns, JSON Lines) into a
    DataFrame, with messages that name the file and say what was expected.

    Refused rather than guessed: an empty file or one without rows, duplicate column names
    (pandas would silently rename the second to ``name.1``), non-UTF-8 text, JSON that is not
    records (``[{"n_params": 1e8, "loss": 3.1}, ...]``) or columns (``{"loss": [...]}``), and
    files the format's reader cannot parse.
    """
    import pandas as pd

    p = Path(path)
    name = str(p)
    if not p.is_file():
        raise FileNotFoundError(f"The {what} file {name!r} does not exist.")
    suffix = p.suffix.lower()
    if suffix not in _TABLE_SUFFIXES:
        raise ValueError(f"Unsupported {what} file type {suffix!r} for {name!r}. Use .csv, .tsv, "
                         ".parquet or .json/.jsonl.")
    expected = f"a header row such as {_TABLE_EXAMPLE!r} and one row per run"
    try:
        if suffix in (".csv", ".tsv", ".txt"):
            sep = "\t" if suffix == ".tsv" else ","
            text = p.read_text(encoding="utf-8")
            if not text.strip():
                raise ValueError(f"The {what} file {name!r} is empty; expected {expected}.")
            import csv
            import io

            first = next(line for line in text.splitlines() if line.strip())  # pandas skips blanks
            header = next(csv.reader(io.StringIO(first), delimiter=sep))
            header = [h.strip() for h in header]
            dup = sorted({h for h in header if header.count(h) > 1})
            if dup:
                raise ValueError(f"The {what} file {name!r} names column(s) {dup} more than "
                                 "once; rename them so each column is unique.")
            if any(not h for h in header):
                raise ValueError(f"The {what} file {name!r} has an unnamed column in its header "
                                 f"{header}; expected {expected}.")
            frame = _parse(lambda: pd.read_csv(io.StringIO(text), sep=sep), name, what, "CSV")
        elif suffix in (".parquet", ".pq"):
            frame = _parse(lambda: pd.read_parquet(p), name, what, "Parquet")
        else:
            text = p.read_text(encoding="utf-8")
            if suffix == ".jsonl":
                obj: Any = [json.loads(x) for x in text.splitlines() if x.strip()]
            else:
                obj = json.loads(text)
                if isinstance(obj, dict) and "runs" in obj:
                    obj = obj["runs"]
            records = isinstance(obj, list) and all(isinstance(r, dict) for r in obj)
            columns = isinstance(obj, dict) and all(isinstance(v, list) for v in obj.values())
            if not (records or columns):
                kind = type(obj).__name__
                inner = f" of {type(obj[0]).__name__}" if isinstance(obj, list) and obj else ""
                raise ValueError(
                    f"The {what} file {name!r} holds a JSON {kind}{inner}; expected records "
                    '([{"n_params": 1e8, "n_tokens": 2e9, "loss": 3.1}, ...]) or columns '
                    '({"n_params": [...], "loss": [...]}).')
            if columns and len({len(v) for v in obj.values()}) > 1:
                raise ValueError(f"The {what} file {name!r} has columns of different lengths "
                                 f"{ {k: len(v) for k, v in obj.items()} }.")
            frame = pd.DataFrame(obj)
    except UnicodeDecodeError as exc:
        raise ValueError(f"The {what} file {name!r} is not UTF-8 text (byte {exc.start}: "
                         f"{exc.reason}); save it as UTF-8.") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"The {what} file {name!r} is not valid JSON (line {exc.lineno}, "
                         f"column {exc.colno}: {exc.msg}).") from None
    except (ValueError, FileNotFoundError):
        raise
    except Exception as exc:  # pandas/pyarrow parser errors on a malformed file
        raise ValueError(f"The {what} file {name!r} cannot be parsed as {suffix[1:]} "
                         f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]}).") \
            from None
    if len(frame.columns) == 0 or len(frame) == 0:
        raise ValueError(f"The {what} file {name!r} has no rows; expected {expected}.")
    cols = [str(c) for c in frame.columns]
    dup = sorted({c for c in cols if cols.count(c) > 1})
    if dup:
        raise ValueError(f"The {what} file {name!r} names column(s) {dup} more than once.")
    return frame
