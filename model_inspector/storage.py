"""The results file format (versioned) and atomic writes.

A results file is a pickled ``dict`` (as the paper's): every key but ``metadata`` holds a list with
one entry per sample, in sample order:

* ``entropy``: float32 array ``[T, L]`` (Shannon entropy in nats, token x layer); other metrics under
  their own keys (``renyi_0.5``, ``renyi_inf``, ``moment_2``...), same shape;
* ``tokens``: int64 array ``[T]`` generated ids (-1 after an early stop);
* ``text``: the generated text (not the prompt); ``input``: the prompt text;
* labels: ``model``, ``task``, ``prompt`` and, per experiment, ``variant``, ``story_index``,
  ``subject``, ``answer``, ``predicted``, ``correct``, ``format``, ``topic``, ``alpha``...

``metadata`` is a dict: ``format`` (``entropy-lens-results``), ``format_version`` (1), ``model``,
``model_id``, ``dtype``, ``device``, ``max_len``, ``seed``, sampling settings, ``metrics``
(key -> definition with unit), ``versions`` (library versions), ``complete`` and counts.

Files of the original code hold raw ``activations`` instead of ``entropy``; ``load_results``
accepts them (``run_tests.py`` recomputes the entropies).

Pickle runs code when loaded: load only files you trust. :func:`save_npz` / :func:`load_npz`
write and read the same content as ``.npz`` with the metadata as JSON, which loads without
executing anything.
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["FORMAT", "FORMAT_VERSION", "ResultsFileError", "atomic_write_bytes", "save_results", "load_results",
           "save_npz", "load_npz", "n_samples"]

FORMAT = "entropy-lens-results"
FORMAT_VERSION = 1


class ResultsFileError(ValueError):
    """A results file is missing, unreadable or not in a known format."""


def atomic_write_bytes(path: str | Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` through a temporary file in the same folder and a rename, so
    that a reader (or a crash) never sees a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_results(path: str | Path, data: dict) -> None:
    """Pickle ``data`` to ``path`` atomically (``.npz`` paths are written with :func:`save_npz`)."""
    if str(path).endswith(".npz"):
        return save_npz(path, data)
    atomic_write_bytes(path, pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL))


def n_samples(data: dict) -> int:
    """Number of samples in a results dict."""
    for key in ("entropy", "activations"):
        if key in data:
            return len(data[key])
    lists = [v for k, v in data.items() if k != "metadata" and isinstance(v, list)]
    return len(lists[0]) if lists else 0


def load_results(path: str | Path) -> dict:
    """Read a results file (ours or the original's). Raises :class:`ResultsFileError` with a
    one-line reason for a missing, corrupt or unknown file. Pickles run code: trusted files only."""
    p = Path(path)
    if not p.is_file():
        raise ResultsFileError(f"results file not found: {p}")
    if p.suffix == ".npz":
        return load_npz(p)
    try:
        with p.open("rb") as fh:
            data = pickle.load(fh)  # noqa: S301 - documented: trusted files only
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError, TypeError, ValueError) as exc:
        raise ResultsFileError(f"{p} is not a readable results pickle ({type(exc).__name__}); it may be truncated "
                               "or corrupt: re-run the experiment (with --resume if a partial file exists)") from None
    return _validate(data, p)


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
