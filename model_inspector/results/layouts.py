"""The layouts of a results file on disk, each with one writer and one reader.

* ``samples`` (the paper's): a pickled dict, every key but ``metadata`` a list with one entry per sample;
* ``npz``: the same content without pickle: arrays stacked per key (``[sample, ...]``), labels as string or JSON
  arrays, metadata as JSON (read with ``allow_pickle=False``);
* ``format_records`` (the format experiment's, as the paper saved it): a pickled ``pandas.DataFrame`` with one row
  per (sample, Rényi order): ``sample``, the sample's other columns, ``alpha`` and ``entropy`` (that order's
  ``[window, layer]`` profile); ``DataFrame.attrs["metadata"]`` holds the metadata. Every per-sample column the run
  wrote is kept, whatever the experiment declared;
* an unfinished run's sidecar (``NAME.pkl.parts/``, :class:`~model_inspector.storage.PartsStore`), read when the
  file itself does not exist.

:func:`write` and :func:`read` pick the layout (by suffix, ``metadata["layout"]`` and content).
"""

from __future__ import annotations

import io
import json
import pickle
import sys
from pathlib import Path

import numpy as np

from ..errors import ResultsFileError
from ..storage import PartsStore, atomic_write_bytes, unpickle
from .schema import FORMAT, check_shapes, n_samples, validate

__all__ = ["write", "read", "save_npz", "load_npz", "records_from_state", "state_from_records", "alpha_key"]

RECORDS = "format_records"


def alpha_key(alpha: float) -> str:
    """The results key of the Rényi order ``alpha`` (``entropy`` for 1)."""
    from ..metrics import Metric

    return Metric("shannon").key if float(alpha) == 1 else Metric("renyi", float(alpha)).key


# ------------------------------------------------------------------------------------------ writing
def write(path: str | Path, state: dict) -> None:
    """Write ``state`` atomically: ``.npz`` by suffix, else the layout ``metadata["layout"]`` names (default: the
    paper's dict). A ragged profile column (one sample's ``[token, layer]`` of another shape) is refused first."""
    check_shapes(state, path)
    if str(path).lower().endswith(".npz"):
        return save_npz(path, state)
    if (state.get("metadata") or {}).get("layout") == RECORDS:
        obj = records_from_state(state)
    else:
        obj = state
    atomic_write_bytes(path, pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))


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
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def records_from_state(state: dict):
    """The format-records DataFrame of a run's state: one row per (sample, alpha in ``metadata["alphas"]``)."""
    import pandas as pd

    meta = state.get("metadata") or {}
    alphas = meta["alphas"]
    keys = {a: alpha_key(a) for a in alphas}
    n = n_samples(state)
    index = state.get("sample_index") or list(range(n))  # the sample's index in the run (rows may be in batch order)
    per_sample = [k for k in state if k not in ("metadata", "sample_index") and k not in keys.values()]
    rows = []
    for i in range(n):
        base = {k: state[k][i] for k in per_sample}
        for a in alphas:
            rows.append({"sample": int(index[i]), **base, "alpha": float(a), "entropy": state[keys[a]][i]})
    preferred = ["sample", "format", "topic", "alpha", "entropy", "text", "input", "model"]
    columns = [c for c in preferred if c in ("sample", "alpha", "entropy") or c in per_sample]
    columns += [c for c in per_sample if c not in columns]
    df = pd.DataFrame(rows, columns=columns)
    df.attrs["metadata"] = meta
    return df


# ------------------------------------------------------------------------------------------ reading
def read(path: str | Path, *, trust: bool = False) -> dict:
    """Read a results file in any layout (or an unfinished run's sidecar when the file does not exist) into a
    run's state. Raises :class:`ResultsFileError` with a one-line reason for a missing, corrupt or unknown file.
    Pickles are read by the restricted unpickler (:func:`~model_inspector.storage.unpickle`; ``trust=True``: plain
    pickle, which runs whatever code the file holds: your own files only)."""
    p = Path(path)
    if not p.is_file():
        store = PartsStore(p)
        if store.exists() and not p.exists():
            if not store.parts():
                raise ResultsFileError(f"{p} does not exist yet: its run ({store.dir}) has finished no rows; continue "
                                       "it with --resume")
            return validate(store.read_state(trust=trust), store.dir)
        raise ResultsFileError(f"results file not found: {p}")
    if p.suffix.lower() == ".npz":
        return load_npz(p)
    data = unpickle(p.read_bytes(), source=str(p), trust=trust)
    if type(data).__name__ == "DataFrame" or (isinstance(data, list) and data and isinstance(data[0], dict)):
        data = state_from_records(data, p)
    data = validate(data, p)
    meta = data.get("metadata")
    if not (isinstance(meta, dict) and meta.get("format") == FORMAT):
        print(f"warning: {p} was not written by entropy-lens (no metadata.format): read as the original code's "
              "format, with no run identity", file=sys.stderr)
    return data


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
            try:
                value = z[name]
            except (ValueError, OSError) as exc:  # an object array needs pickle, which this reader never runs
                why = ("an object array (it needs pickle, never run here)" if "pickle" in str(exc)
                       else type(exc).__name__)
                raise ResultsFileError(f"{p}: entry {name!r} is {why}; write the file with entropy-lens "
                                       "(Results.to_npz) or load it yourself with numpy if you trust it") from None
            try:
                if name == "__metadata__":
                    data["metadata"] = json.loads(str(value))
                else:
                    kind, _, key = name.partition(":")
                    if kind == "arr":
                        data[key] = list(value)
                    elif kind == "str":
                        data[key] = [str(s) for s in value]
                    else:
                        data[key] = json.loads(str(value))
            except ValueError as exc:
                raise ResultsFileError(f"{p}: entry {name!r} is not valid JSON ({type(exc).__name__}); not an "
                                       "entropy-lens .npz") from None
    return validate(data, p)


def state_from_records(records, path: str | Path = "<records>") -> dict:
    """A run's state from format records (a DataFrame, or the original code's list of record dicts): one entry
    per sample, each alpha's profile under its metric key (:func:`alpha_key`)."""
    import pandas as pd

    df = records if isinstance(records, pd.DataFrame) else pd.DataFrame(records)
    if not {"format", "alpha", "entropy"} <= set(df.columns):
        raise ResultsFileError(f"{path}: expected records with format, alpha and entropy")
    state = {"metadata": dict(df.attrs.get("metadata", {}))}
    if df.empty:
        return state
    if "sample" not in df.columns:  # the original's records: one row per (prompt, alpha), prompts in order
        n_alpha = df["alpha"].nunique()
        df = df.assign(sample=np.arange(len(df)) // max(1, n_alpha))
    per_sample = [c for c in df.columns if c not in ("sample", "alpha", "entropy")]
    for i, grp in df.groupby("sample", sort=False):  # the file's row order (a partial run's is its batch order)
        first = grp.iloc[0]
        state.setdefault("sample_index", []).append(int(i))
        for k in per_sample:
            state.setdefault(k, []).append(first[k])
        for _, r in grp.iterrows():
            state.setdefault(alpha_key(r["alpha"]), []).append(r["entropy"])
    state["metadata"].setdefault("alphas", sorted(float(a) for a in df["alpha"].unique()))
    state["metadata"].setdefault("layout", RECORDS)
    return state
