"""Bytes on disk: atomic writes, the append-only sidecar of a running experiment, the output lock, and the
preflight check of an output path. (What the bytes mean is :mod:`model_inspector.results`.)

While a run is under way its rows live in an append-only sidecar, :class:`PartsStore` (``NAME.pkl.parts/``:
``meta.json`` and one small pickle per checkpoint), so a checkpoint costs O(rows written), not O(file); the results
file is written once at the end (or on interrupt) and the sidecar removed. :class:`OutputLock` keeps two runs off the
same output. :func:`unpickle` is the one place pickled bytes are read.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import pickle
import socket
import sys
import tempfile
from pathlib import Path

from .errors import ResultsFileError, UserError

__all__ = ["OutputLockedError", "RunStorageError", "concat_rows", "atomic_write_bytes", "preflight_output", "remove_stale_temporaries", "unpickle",
           "PartsStore", "OutputLock"]


class OutputLockedError(UserError):
    """Another run holds the lock on this output (the message names it)."""


class RunStorageError(OSError):
    """Writing a run's output failed (disk full, permissions...); the message names the path and what is safe."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` through a temporary file in the same folder and a rename, so
    that a reader (or a crash) never sees a half-written file. The file gets the permissions a
    plain ``open`` would give (``0666`` less the umask), not ``mkstemp``'s ``0600``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def preflight_output(path: str | Path) -> Path:
    """Check, before any work, that ``path`` can be written: not a folder, its folder creatable and
    writable (a probe file is written and removed). Raises ``OSError`` naming the path."""
    p = Path(path)
    if p.is_dir():
        raise RunStorageError(f"the output {p} is a folder; give a file name (or another --results_dir)")
    parent = p.parent
    if parent.exists() and not parent.is_dir():
        raise RunStorageError(f"the output folder {parent} is a file; pass a folder (--results_dir / --out / --out_dir)")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".{p.name}.probe.", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise RunStorageError(f"cannot write in {parent} ({exc.strerror or exc}); choose a writable --results_dir "
                              "/ --out, or fix its permissions") from None
    return p


def unpickle(payload: bytes, *, source: str, trust: bool = False):
    """The object pickled in ``payload`` (read from ``source``), read by the restricted unpickler
    (:mod:`model_inspector.safe_pickle`: arrays, numbers, strings, tensors and tables only; anything else is refused
    with one line before it runs). ``trust=True`` (``--trust_pickle``): plain ``pickle``, which runs whatever code the
    file holds. Raises :class:`ResultsFileError` with a one-line reason when it is not a readable pickle."""
    from .safe_pickle import UnsafePickleError, safe_loads

    try:
        return safe_loads(payload, source=source, trust=trust)
    except UnsafePickleError:
        raise
    except Exception as exc:  # noqa: BLE001 - any other failure to unpickle is a damaged file
        raise ResultsFileError(f"{source} is not a readable results pickle ({type(exc).__name__}); it may be truncated "
                               "or corrupt: re-run the experiment (with --resume if a partial file exists)") from None


def remove_stale_temporaries(path: str | Path) -> list[Path]:
    """Delete the ``.NAME.*.tmp`` files an earlier, killed write of ``path`` left (call it while
    holding the output's lock). Returns what was removed."""
    p = Path(path)
    gone = []
    for tmp in p.parent.glob(f".{p.name}.*.tmp") if p.parent.is_dir() else []:
        tmp.unlink(missing_ok=True)
        gone.append(tmp)
    return gone



# ------------------------------------------------------------------------------ the append-only sidecar
def concat_rows(parts) -> dict:
    """Concatenate row dicts (``{key: list}``) in order."""
    out: dict = {}
    for part in parts:
        for k, v in part.items():
            out.setdefault(k, []).extend(v)
    return out


class PartsStore:
    """The append-only sidecar of a results file ``NAME``: folder ``NAME.parts/`` holding
    ``meta.json`` (the run's metadata, identity included) and ``part-000000.pkl``, ... (each a
    ``{key: list}`` of the rows completed since the previous part). Every file is written
    atomically, so a kill or a full disk leaves every earlier part readable."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.dir = self.path.with_name(self.path.name + ".parts")
        self._next: int | None = None

    def exists(self) -> bool:
        return (self.dir / "meta.json").is_file()

    def parts(self) -> list[Path]:
        return sorted(self.dir.glob("part-*.pkl")) if self.dir.is_dir() else []

    def read_meta(self) -> dict:
        try:
            return json.loads((self.dir / "meta.json").read_text())
        except (OSError, ValueError) as exc:
            raise ResultsFileError(f"{self.dir}/meta.json is unreadable ({type(exc).__name__}); "
                                   "rerun with --overwrite") from None

    def write_meta(self, meta: dict) -> None:
        atomic_write_bytes(self.dir / "meta.json", json.dumps(meta, default=str, indent=1).encode())

    def append(self, rows: dict) -> None:
        """Write the rows ``{key: list}`` as the next part (O(rows), whatever came before)."""
        if self._next is None:
            existing = self.parts()
            self._next = int(existing[-1].stem.split("-")[1]) + 1 if existing else 0
        atomic_write_bytes(self.dir / f"part-{self._next:06d}.pkl", pickle.dumps(rows, protocol=pickle.HIGHEST_PROTOCOL))
        self._next += 1

    def read_rows(self, *, trust: bool = False) -> dict:
        out = []
        for part in self.parts():
            try:
                out.append(unpickle(part.read_bytes(), source=str(part), trust=trust))
            except ResultsFileError:
                raise ResultsFileError(f"{part} is unreadable; rerun with --overwrite") from None
        return concat_rows(out)

    def read_state(self, *, trust: bool = False) -> dict:
        """The rows so far plus ``metadata`` (``complete`` as recorded, False while parts remain)."""
        state = self.read_rows(trust=trust)
        state["metadata"] = self.read_meta()
        return state

    def remove(self) -> None:
        import shutil

        shutil.rmtree(self.dir, ignore_errors=True)
        self._next = None


# ------------------------------------------------------------------------------ the output lock
class OutputLock:
    """An exclusive lock on a results file for a run's whole life: the hidden file ``.NAME.lock``
    beside it, locked with ``filelock`` (an OS file lock, released by the kernel when the holder
    dies, so a crashed run never leaves a stale lock) and holding the holder's pid, host, start
    time and command line. A second run on the same output gets :class:`OutputLockedError`
    naming the holder."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.lock_path = self.path.with_name(f".{self.path.name}.lock")
        self._lock = None

    def held_by(self) -> str | None:
        """Who holds the lock now (``"pid N on HOST since T (COMMAND)"``), or ``None`` when no run holds it. Creates
        no lock file."""
        import filelock

        if not self.lock_path.exists():
            return None
        probe = filelock.FileLock(str(self.lock_path), timeout=0)
        try:
            probe.acquire()
        except filelock.Timeout:
            h = self.holder()
            return (f"pid {h.get('pid')} on {h.get('host')} since {h.get('since')} ({h.get('command', '?')})" if h
                    else "another process")
        probe.release()
        return None

    def holder(self) -> dict:
        try:
            return json.loads(self.lock_path.read_text() or "{}")
        except (OSError, ValueError):
            return {}

    def acquire(self) -> "OutputLock":
        import filelock

        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(str(self.lock_path), timeout=0)
        try:
            lock.acquire()
        except filelock.Timeout:
            h = self.holder()
            who = (f"pid {h.get('pid')} on {h.get('host')} since {h.get('since')} ({h.get('command', '?')})"
                   if h else "another process")
            raise OutputLockedError(f"{self.path} is being written by {who}; wait for it to finish, or choose "
                                    "another --results_dir / --out") from None
        self._lock = lock
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "since": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "command": " ".join(sys.argv)[:300]}
        with open(self.lock_path, "r+") as fh:
            fh.write(json.dumps(info))
            fh.truncate()
        return self

    def release(self) -> None:
        if self._lock is not None:
            try:
                with open(self.lock_path, "r+") as fh:
                    fh.truncate()
            except OSError:
                pass
            self._lock.release()
            self._lock = None

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
