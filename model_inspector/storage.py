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

__all__ = ["OutputLockedError", "RunStorageError", "concat_rows", "atomic_write_bytes", "preflight_output",
           "remove_stale_temporaries", "unpickle", "PartsStore", "OutputLock", "KILL_ENV", "KILL_POINTS", "kill_point",
           "watch_write"]


class OutputLockedError(UserError):
    """Another run holds the lock on this output (the message names it)."""


class RunStorageError(OSError):
    """Writing a run's output failed (disk full, permissions...); the message names the path and what is safe."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ------------------------------------------------------------------------------ the kill hook (for tests)
#: Environment variable naming a point of a run at which the process kills itself with SIGKILL, for tests of what a
#: kill leaves behind: ``ENTROPY_LENS_KILL_AT=during_final_write`` (one of :data:`KILL_POINTS`). Not for users.
KILL_ENV = "ENTROPY_LENS_KILL_AT"
#: The named points: a sidecar part written (``after_part``); the rows complete in the sidecar, nothing written yet
#: (``before_final_write``); the final file's temporary written but not renamed (``during_final_write``); the file
#: in place, the sidecar still there (``after_final_rename``); the sidecar renamed to its tombstone and partly
#: deleted (``during_sidecar_removal``); a data-parallel merge's temporary written (``during_merge_write``) or its
#: file in place with the shard sidecars still there (``after_merge``).
KILL_POINTS = ("after_part", "before_final_write", "during_final_write", "after_final_rename",
               "during_sidecar_removal", "during_merge_write", "after_merge")
_WATCHED: dict[str, str] = {}


def kill_point(name: str) -> None:
    """SIGKILL this process if ``$ENTROPY_LENS_KILL_AT`` names ``name`` (tests only; a no-op otherwise)."""
    if os.environ.get(KILL_ENV) == name:
        import signal

        sys.stdout.flush()
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)


class watch_write:  # noqa: N801 - a context manager used like a function
    """While active, an :func:`atomic_write_bytes` to ``path`` passes the kill point ``point`` after its temporary
    is written and before the rename."""

    def __init__(self, path: str | Path, point: str):
        self.key, self.point = str(Path(path).absolute()), point

    def __enter__(self):
        _WATCHED[self.key] = self.point
        return self

    def __exit__(self, *exc):
        _WATCHED.pop(self.key, None)


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
        if _WATCHED:
            point = _WATCHED.get(str(path.absolute()))
            if point:
                kill_point(point)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def preflight_output(path: str | Path, flag: str = "--results_dir / --out") -> Path:
    """Check, before any work, that ``path`` can be written: not a folder, its folder creatable and
    writable (a probe file is written and removed). Raises ``OSError`` naming the path and ``flag``, the
    command's flag that chooses where its outputs go."""
    p = Path(path)
    if p.is_dir():
        raise RunStorageError(f"the output {p} is a folder; give a file name (or another {flag})")
    parent = p.parent
    if parent.exists() and not parent.is_dir():
        raise RunStorageError(f"the output folder {parent} is a file; choose a folder with {flag}")
    sidecar = PartsStore(p).dir
    if sidecar.exists() and not sidecar.is_dir():
        raise RunStorageError(f"{sidecar} is a file, but that name is this output's sidecar folder (a run's rows while "
                              f"it goes on); move the file aside (or choose another {flag})")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".{p.name}.probe.", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise RunStorageError(f"cannot write in {parent} ({exc.strerror or exc}); choose a writable folder with {flag}, "
                              "or fix its permissions") from None
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


#: A sidecar being removed is first renamed to ``.NAME.parts.removing-PID-XXXX`` (its tombstone), then deleted.
TOMBSTONE = ".removing-"


def remove_stale_temporaries(path: str | Path) -> list[Path]:
    """Delete what killed writes of ``path`` left (call it while holding the output's lock): the temporaries
    ``.NAME.*.tmp`` of an atomic write, the probes ``.NAME.probe.*`` of a preflight, the tombstones
    ``.NAME.parts.removing-*`` of a sidecar being removed, and the temporaries inside the sidecar. Returns what was
    removed."""
    import shutil

    p = Path(path)
    gone: list[Path] = []
    if not p.parent.is_dir():
        return gone
    for pattern in (f".{p.name}.*.tmp", f".{p.name}.probe.*", f".{p.name}.parts{TOMBSTONE}*"):
        for stale in p.parent.glob(pattern):
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)
            gone.append(stale)
    sidecar = PartsStore(p).dir
    if sidecar.is_dir():
        for tmp in sidecar.glob(".*.tmp"):
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
    ``{key: list}`` of the rows completed since the previous part, with ``part-000000.json`` beside it: its row
    count and what made it, e.g. threads and library versions). Every file is written atomically, so a kill or a
    full disk leaves every earlier part readable. :meth:`remove` renames the folder to a tombstone before deleting
    it, so that a kill during the removal never leaves a sidecar with some of its parts."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.dir = self.path.with_name(self.path.name + ".parts")
        self._next: int | None = None

    def exists(self) -> bool:
        return (self.dir / "meta.json").is_file()

    def parts(self) -> list[Path]:
        return sorted(self.dir.glob("part-*.pkl")) if self.dir.is_dir() else []

    def read_meta(self) -> dict:
        where = self.dir / "meta.json"
        try:
            meta = json.loads(where.read_text())
        except (OSError, ValueError) as exc:
            raise ResultsFileError(f"{where} is unreadable ({type(exc).__name__}); move {self.dir} aside and rerun, "
                                   "or rerun with --overwrite") from None
        if not isinstance(meta, dict):
            raise ResultsFileError(f"{where} holds a JSON {type(meta).__name__}, not the run's metadata (an object); "
                                   f"move {self.dir} aside and rerun, or rerun with --overwrite")
        return meta

    def write_meta(self, meta: dict) -> None:
        atomic_write_bytes(self.dir / "meta.json", json.dumps(meta, default=str, indent=1).encode())

    def append(self, rows: dict, info: dict | None = None) -> None:
        """Write the rows ``{key: list}`` as the next part (O(rows), whatever came before); ``info`` (JSON: threads,
        library versions...) is recorded beside it with its row count."""
        if self._next is None:
            existing = self.parts()
            self._next = int(existing[-1].stem.split("-")[1]) + 1 if existing else 0
        name = f"part-{self._next:06d}"
        n = len(next(iter(rows.values()))) if rows else 0
        atomic_write_bytes(self.dir / f"{name}.json", json.dumps({"rows": n, **(info or {})}, default=str).encode())
        atomic_write_bytes(self.dir / f"{name}.pkl", pickle.dumps(rows, protocol=pickle.HIGHEST_PROTOCOL))
        self._next += 1
        kill_point("after_part")

    def part_infos(self) -> list[dict]:
        """What each part's ``.json`` records (``rows``, and what made them), in order (``{}`` where none is)."""
        out = []
        for part in self.parts():
            try:
                info = json.loads(part.with_suffix(".json").read_text())
            except (OSError, ValueError):
                info = {}
            out.append(info if isinstance(info, dict) else {})
        return out

    def read_rows(self, *, trust: bool = False) -> dict:
        out = []
        parts = self.parts()
        for i, part in enumerate(parts):
            try:
                rows = unpickle(part.read_bytes(), source=str(part), trust=trust)
                if not isinstance(rows, dict) or not all(isinstance(v, list) for v in rows.values()):
                    raise ResultsFileError(f"{part} holds a {type(rows).__name__}, not rows")
            except (ResultsFileError, OSError) as exc:  # a refused (unsafe) pickle is no damage: it propagates
                intact = sum(len(next(iter(r.values()), [])) for r in out)
                after = len(parts) - i - 1
                later = f" and the {after} part(s) after it" if after else ""
                raise ResultsFileError(
                    f"{part} is damaged ({type(exc).__name__}); the {intact} rows of the {i} part(s) before it are "
                    f"intact: move it{later} out of {self.dir} (keep them elsewhere) and rerun with --resume to redo "
                    "only those rows") from None
            out.append(rows)
        return concat_rows(out)

    def read_state(self, *, trust: bool = False) -> dict:
        """The rows so far plus ``metadata`` (``complete`` as recorded, False while parts remain)."""
        state = self.read_rows(trust=trust)
        state["metadata"] = self.read_meta()
        return state

    def remove(self) -> None:
        """Delete the sidecar: rename it to its tombstone ``.NAME.parts.removing-*`` first (atomic), so that no kill
        leaves a sidecar with only some of its parts, then delete the tombstone (a stale one is deleted by the next
        run, under the lock: :func:`remove_stale_temporaries`)."""
        import shutil

        self._next = None
        if not self.dir.exists():
            return
        tomb = self.dir.with_name(f".{self.dir.name}{TOMBSTONE}{os.getpid()}-{os.urandom(3).hex()}")
        os.replace(self.dir, tomb)
        files = sorted(tomb.iterdir()) if tomb.is_dir() else []
        for i, f in enumerate(files):
            f.unlink(missing_ok=True)
            if i == 0:
                kill_point("during_sidecar_removal")
        shutil.rmtree(tomb, ignore_errors=True)


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
        """Release the lock and remove its file (removed while still held, so a run never leaves a ``.NAME.lock``
        behind; a refused run never created one it held)."""
        if self._lock is not None:
            try:
                self.lock_path.unlink()
            except OSError:
                pass
            self._lock.release()
            self._lock = None

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
