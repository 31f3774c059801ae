"""The results file format (versioned) and atomic writes.

A results file is a pickled ``dict`` (as the paper's): every key but ``metadata`` holds a list with
one entry per sample, in sample order:

* ``entropy``: float32 array ``[T, L]`` (Shannon entropy in nats, token x layer); other metrics under
  their own keys (``renyi_0.5``, ``renyi_inf``, ``moment_2``...), same shape;
* ``tokens``: int64 array ``[T]`` generated ids (-1 after an early stop);
* ``text``: the generated text (not the prompt); ``input``: the prompt text;
* ``sample_index``: the sample's position in the run's prompt list (the sidecar of an unfinished
  run holds rows in batch order; :func:`in_sample_order` sorts them);
* labels: ``model``, ``task``, ``prompt`` and, per experiment, ``variant``, ``story_index``,
  ``subject``, ``answer``, ``predicted``, ``correct``, ``format``, ``topic``, ``alpha``...

``metadata`` is a dict: ``format`` (``entropy-lens-results``), ``format_version`` (:data:`FORMAT_VERSION`), ``model``,
``model_id``, ``dtype``, ``device``, ``max_len``, ``seed``, sampling settings, ``metrics``
(key -> definition with unit), ``versions`` (library versions), ``complete`` and counts.

Files of the original code hold raw ``activations`` instead of ``entropy``; ``load_results``
accepts them (``run_tests.py`` recomputes the entropies).

Pickle runs code when loaded: load only files you trust. :func:`save_npz` / :func:`load_npz`
write and read the same content as ``.npz`` with the metadata as JSON, which loads without
executing anything.

While a run is under way its rows live in an append-only sidecar, :class:`PartsStore`
(``NAME.pkl.parts/``: ``meta.json`` and one small pickle per checkpoint), so a checkpoint costs
O(rows written), not O(file); the ``.pkl`` is written once at the end (or on interrupt) and the
sidecar removed. :class:`OutputLock` keeps two runs off the same output.
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

import numpy as np

from .errors import UserError

__all__ = ["FORMAT", "FORMAT_VERSION", "in_sample_order", "ResultsFileError", "OutputLockedError", "atomic_write_bytes", "save_results",
           "load_results", "save_npz", "load_npz", "n_samples", "PartsStore", "OutputLock", "concat_rows",
           "remove_stale_temporaries"]

FORMAT = "entropy-lens-results"
#: 2: ``metadata.identity`` (the run identity) added; version-1 files load but cannot be resumed.
#: 3: ``top_ids`` / ``top_probs`` columns (top lens tokens) and ``metadata.token_strings`` added.
#: 4: ``sample_index`` column and ``identity.batch_order`` (batches by token length, one seed per prompt).
FORMAT_VERSION = 4


class ResultsFileError(UserError):
    """A results file is missing, unreadable or not in a known format."""


class OutputLockedError(UserError):
    """Another run holds the lock on this output (the message names it)."""


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


def save_results(path: str | Path, data: dict) -> None:
    """Pickle ``data`` to ``path`` atomically (``.npz`` paths are written with :func:`save_npz`)."""
    if str(path).lower().endswith(".npz"):
        return save_npz(path, data)
    atomic_write_bytes(path, pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL))


def in_sample_order(data: dict) -> dict:
    """``data`` with every per-sample list sorted by its ``sample_index`` column (rows are stored in
    batch order while a run goes on; a finished file is in sample order). Without the column: as is."""
    index = data.get("sample_index")
    if not index or len(index) != n_samples(data):
        return data
    order = np.argsort(np.asarray(index), kind="stable")
    if np.array_equal(order, np.arange(len(order))):
        return data
    n = len(order)
    return {k: ([v[i] for i in order] if k != "metadata" and isinstance(v, list) and len(v) == n else v)
            for k, v in data.items()}


def n_samples(data: dict) -> int:
    """Number of samples in a results dict."""
    for key in ("entropy", "activations"):
        if key in data:
            return len(data[key])
    lists = [v for k, v in data.items() if k != "metadata" and isinstance(v, list)]
    return len(lists[0]) if lists else 0


def remove_stale_temporaries(path: str | Path) -> list[Path]:
    """Delete the ``.NAME.*.tmp`` files an earlier, killed write of ``path`` left (call it while
    holding the output's lock). Returns what was removed."""
    p = Path(path)
    gone = []
    for tmp in p.parent.glob(f".{p.name}.*.tmp") if p.parent.is_dir() else []:
        tmp.unlink(missing_ok=True)
        gone.append(tmp)
    return gone


def load_results(path: str | Path) -> dict:
    """Read a results file (ours or the original's). Raises :class:`ResultsFileError` with a
    one-line reason for a missing, corrupt or unknown file. Pickles run code: trusted files only;
    a ``.pkl`` this library did not write (no ``metadata.format``) gets a one-line warning.

    When ``path`` does not exist but a run's sidecar ``path.parts/`` does (a run killed, or one
    that ran out of disk, before its final write), the rows completed so far are returned, with
    ``metadata["complete"] = False``."""
    p = Path(path)
    if not p.is_file():
        store = PartsStore(p)
        if store.exists() and not p.exists():
            return store.read_state()
        raise ResultsFileError(f"results file not found: {p}")
    if p.suffix.lower() == ".npz":
        return load_npz(p)
    try:
        with p.open("rb") as fh:
            data = pickle.load(fh)  # noqa: S301 - documented: trusted files only
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError, TypeError, ValueError) as exc:
        raise ResultsFileError(f"{p} is not a readable results pickle ({type(exc).__name__}); it may be truncated "
                               "or corrupt: re-run the experiment (with --resume if a partial file exists)") from None
    if type(data).__name__ == "DataFrame" and "alpha" in getattr(data, "columns", ()):  # a formats file
        from .formats import formats_to_state

        data = formats_to_state(data)
    data = _validate(data, p)
    meta = data.get("metadata")
    if not (isinstance(meta, dict) and meta.get("format") == FORMAT):
        print(f"warning: {p} was not written by entropy-lens (no metadata.format); loading a pickle runs code, so "
              "load only files you trust", file=sys.stderr)
    return data


def _validate(data, p) -> dict:
    if not isinstance(data, dict):
        raise ResultsFileError(f"{p}: expected a dict of lists, found {type(data).__name__}")
    if "entropy" not in data and "activations" not in data:
        raise ResultsFileError(f"{p}: holds neither 'entropy' nor 'activations' (keys: {', '.join(map(str, data))})")
    meta = data.get("metadata") or {}
    version = meta.get("format_version") if isinstance(meta, dict) else None
    if version is not None and version > FORMAT_VERSION:
        raise ResultsFileError(f"{p}: format version {version} is newer than this library's ({FORMAT_VERSION}); "
                               "update entropy-lens")
    n = n_samples(data)
    bad = [k for k, v in data.items() if k != "metadata" and isinstance(v, list) and len(v) != n]
    if bad:
        raise ResultsFileError(f"{p}: lists of unequal length ({', '.join(bad)} vs {n} samples)")
    return data


def save_npz(path: str | Path, data: dict) -> None:
    """Write ``data`` as a pickle-free ``.npz``: numeric per-sample lists are stacked into arrays
    (``[sample, ...]``), labels become string/number arrays, ``metadata`` is stored as JSON."""
    arrays = {}
    for key, values in data.items():
        if key == "metadata":
            arrays["__metadata__"] = np.array(json.dumps(values, default=str))
            continue
        if values and isinstance(values[0], np.ndarray):
            arrays[f"arr:{key}"] = np.stack(values)
        elif values and all(isinstance(v, str) for v in values):
            arrays[f"str:{key}"] = np.array(values, dtype=str)
        else:
            arrays[f"json:{key}"] = np.array(json.dumps(values, default=lambda o: o.item() if hasattr(o, "item") else str(o)))
    import io

    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def load_npz(path: str | Path) -> dict:
    """Read a file written by :func:`save_npz`; never unpickles (``allow_pickle=False``)."""
    p = Path(path)
    try:
        z = np.load(p, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ResultsFileError(f"{p} is not a readable .npz results file ({type(exc).__name__})") from None
    data = {}
    with z:
        for name in z.files:
            if name == "__metadata__":
                data["metadata"] = json.loads(str(z[name]))
            else:
                kind, _, key = name.partition(":")
                if kind == "arr":
                    data[key] = list(z[name])
                elif kind == "str":
                    data[key] = [str(s) for s in z[name]]
                else:
                    data[key] = json.loads(str(z[name]))
    return _validate(data, p)


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

    def read_rows(self) -> dict:
        out = []
        for part in self.parts():
            try:
                out.append(pickle.loads(part.read_bytes()))  # noqa: S301 - our own sidecar
            except Exception as exc:  # noqa: BLE001
                raise ResultsFileError(f"{part} is unreadable ({type(exc).__name__}); rerun with --overwrite") from None
        return concat_rows(out)

    def read_state(self) -> dict:
        """The rows so far plus ``metadata`` (``complete`` as recorded, False while parts remain)."""
        state = self.read_rows()
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
