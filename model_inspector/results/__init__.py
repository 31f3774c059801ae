"""Results: per-sample columns plus metadata, the schema they follow and every layout they are stored in.

:class:`Results` wraps the results dict the paper's code reads (every key but ``metadata`` a list with one entry per
sample). It knows its sample count, its metric columns and its labels, and reads and writes every layout
(:mod:`.layouts`: the paper's dict pickle, a pickle-free ``.npz``, the format experiment's DataFrame of records, an
unfinished run's sidecar), so that callers never filter the ``metadata`` key by hand. :mod:`.schema` declares the
columns and metadata keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UserError
from . import layouts
from .schema import FORMAT, FORMAT_VERSION, is_profile

__all__ = ["Results", "FORMAT", "FORMAT_VERSION", "load_results", "save_results"]


@dataclass
class Results:
    """Columns ``{key: list}`` (one entry per sample, in order) and ``metadata`` (a dict).

    Profile columns hold float32 ``[token, layer]`` arrays (entropies in nats; ``[window, layer]`` in format
    files); ``tokens`` int64 ``[token]``; labels are strings or numbers."""

    columns: dict = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)

    def __post_init__(self):
        lengths = {k: len(v) for k, v in self.columns.items()}
        if len(set(lengths.values())) > 1:
            raise UserError(f"columns of unequal length: {lengths}")

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_dict(cls, data: dict) -> "Results":
        """From the paper's dict (``metadata`` key plus per-sample lists)."""
        return cls({k: list(v) for k, v in data.items() if k != "metadata"}, dict(data.get("metadata") or {}))

    @classmethod
    def load(cls, path: str | Path, *, trust: bool = False) -> "Results":
        """Read a results file in any layout (see :mod:`.layouts`)."""
        return cls.from_dict(layouts.read(path, trust=trust))

    # ----------------------------------------------------------------- views
    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    def __getitem__(self, key: str) -> list:
        return self.columns[key]

    def __setitem__(self, key: str, values: list) -> None:
        if self.columns and len(values) != len(self):
            raise ValueError(f"column {key!r} has {len(values)} entries for {len(self)} samples")
        self.columns[key] = list(values)

    def __contains__(self, key: str) -> bool:
        return key in self.columns

    def get(self, key: str, default=None):
        return self.columns.get(key, default)

    def keys(self):
        return self.columns.keys()

    @property
    def metric_keys(self) -> list[str]:
        """Columns of ``[token, layer]`` profiles (``entropy``, ``renyi_0.5``...)."""
        return [k for k, v in self.columns.items() if v and is_profile(np.asarray(v[0]))]

    @property
    def label_keys(self) -> list[str]:
        """Columns of strings or numbers (``prompt``, ``task``, ``correct``...)."""
        return [k for k, v in self.columns.items() if v and isinstance(v[0], (str, int, float, np.integer, np.floating))]

    def profiles(self, key: str = "entropy") -> np.ndarray:
        """The ``key`` column stacked: ``[sample, token, layer]`` (float32)."""
        if key not in self.columns:
            raise UserError(f"no {key!r} profiles; this file has {', '.join(self.metric_keys) or 'none'}")
        return np.stack([np.asarray(v, dtype=np.float32) for v in self.columns[key]])

    # ----------------------------------------------------------------- output
    def to_dict(self) -> dict:
        """The paper's dict: every column plus ``metadata``."""
        return {**self.columns, "metadata": self.metadata}

    def to_pickle(self, path: str | Path) -> None:
        """Write atomically in the file's layout: the paper's dict, or, when ``metadata["layout"]`` is
        ``"format_records"`` (the output-format experiment), the paper's DataFrame of records."""
        layouts.write(path, self.to_dict())

    def to_records(self):
        """The format experiment's DataFrame of records (one row per sample and Rényi order in
        ``metadata["alphas"]``; see :mod:`.layouts`)."""
        if not self.metadata.get("alphas"):
            raise UserError("these results hold no Rényi orders (metadata 'alphas'): not a formats file")
        return layouts.records_from_state(self.to_dict())

    def to_npz(self, path: str | Path) -> None:
        layouts.save_npz(path, self.to_dict())

    def to_pandas(self):
        """One row per sample: label columns as they are, profile columns as ``[token, layer]`` arrays;
        ``DataFrame.attrs["metadata"]`` holds the metadata."""
        import pandas as pd

        df = pd.DataFrame(self.columns)
        df.attrs["metadata"] = self.metadata
        return df

    def __repr__(self) -> str:
        shape = ""
        keys = self.metric_keys
        if keys:
            shape = f", profiles [token, layer] = {tuple(np.shape(self.columns[keys[0]][0]))}"
        model = (self.metadata.get("identity") or {}).get("model") or self.metadata.get("model_id", "?")
        return (f"Results({len(self)} samples, model {model}, metrics {keys}{shape}, "
                f"labels {self.label_keys}, complete={self.metadata.get('complete')})")


def load_results(path: str | Path, *, trust: bool = False) -> dict:
    """A results file as the paper's dict (any layout; see :mod:`.layouts`)."""
    return layouts.read(path, trust=trust)


def save_results(path: str | Path, data: dict) -> None:
    """Write the paper's dict ``data`` atomically in its layout (``.npz`` by suffix)."""
    layouts.write(path, data)
