"""The output-format dataset: records ``(format, topic, alpha, entropy [windows, L], text)``.

A formats file is a pickled ``pandas.DataFrame``, one row per (sample, alpha), with columns
``sample`` (index of the prompt), ``format`` (chat, poem, scientific), ``topic``, ``alpha`` (Rényi
order; 1 = Shannon), ``entropy`` (float32 ``[num_windows, L]``, window means of the Rényi entropy
in nats over the generated tokens), ``text`` (generated text), ``input`` (the prompt) and
``model``; ``DataFrame.attrs["metadata"]`` holds the run's metadata (as in results files).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd

from .metrics import Metric, window_mean
from .storage import ResultsFileError, atomic_write_bytes

__all__ = ["alpha_metric", "windowed_fields", "save_formats", "load_formats", "formats_to_state", "read_formats_table"]


def alpha_metric(alpha: float) -> Metric:
    """The Rényi metric of order ``alpha`` (Shannon for 1)."""
    return Metric("shannon") if alpha == 1 else Metric("renyi", float(alpha))


def windowed_fields(num_windows: int):
    """A ``fields_fn`` for the runner: every metric reduced to ``[num_windows, L]`` window means."""

    def fields(profile, i):
        out = {k: window_mean(v[i], num_windows, axis=0).astype(np.float32) for k, v in profile.metrics.items()}
        out["text"] = profile.texts[i]
        return out

    return fields


def _records(state: dict, alphas) -> pd.DataFrame:
    rows = []
    n = len(state.get("input", []))
    index = state.get("sample_index") or list(range(n))  # the sample's index in the run (rows may be in batch order)
    for i in range(n):
        for a in alphas:
            rows.append({"sample": int(index[i]), "format": state["format"][i], "topic": state["topic"][i], "alpha": float(a),
                         "entropy": state[alpha_metric(a).key][i], "text": state["text"][i],
                         "input": state["input"][i], "model": state["model"][i]})
    df = pd.DataFrame(rows, columns=["sample", "format", "topic", "alpha", "entropy", "text", "input", "model"])
    df.attrs["metadata"] = state.get("metadata", {})
    return df


def save_formats(path, state: dict) -> None:
    """Write the runner's state as a records DataFrame, atomically."""
    alphas = state["metadata"]["alphas"]
    atomic_write_bytes(path, pickle.dumps(_records(state, alphas), protocol=pickle.HIGHEST_PROTOCOL))


def read_formats_table(path) -> pd.DataFrame:
    """A formats file as a DataFrame (also accepts a pickled list of record dicts). Trusted files only."""
    p = Path(path)
    if not p.is_file():
        raise ResultsFileError(f"formats file not found: {p} (create it with generate_format_dataset.py)")
    try:
        with p.open("rb") as fh:
            obj = pickle.load(fh)  # noqa: S301 - documented: trusted files only
    except Exception as exc:  # noqa: BLE001
        raise ResultsFileError(f"{p} is not a readable formats pickle ({type(exc).__name__})") from None
    df = obj if isinstance(obj, pd.DataFrame) else pd.DataFrame(obj) if isinstance(obj, list) else None
    if df is None or not {"format", "alpha", "entropy"} <= set(df.columns):
        raise ResultsFileError(f"{p}: expected records with format, alpha and entropy")
    return df


def formats_to_state(df: pd.DataFrame) -> dict:
    """Back from records to the runner's state (for ``--resume``)."""
    state = {"metadata": dict(df.attrs.get("metadata", {}))}
    if df.empty:
        return state
    for i, grp in df.groupby("sample", sort=False):  # the file's row order (a partial run's is its batch order)
        first = grp.iloc[0]
        state.setdefault("sample_index", []).append(int(i))
        for k in ("input", "format", "topic", "model", "text"):
            state.setdefault(k, []).append(first[k])
        for _, r in grp.iterrows():
            state.setdefault(alpha_metric(r["alpha"]).key, []).append(r["entropy"])
    return state


def load_formats(path) -> dict:
    return formats_to_state(read_formats_table(path))
