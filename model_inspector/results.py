"""A typed results container: per-sample columns plus metadata, with one home for reading and writing.

:class:`Results` wraps the results dict the paper's code reads (every key but ``metadata`` a list
with one entry per sample). It knows its sample count, its metric columns and its labels, and writes
itself as the paper's pickle, as a pickle-free ``.npz`` or as a pandas DataFrame, so that callers
never filter the ``metadata`` key by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import UserError

__all__ = ["Results"]


@dataclass
class Results:
    """Columns ``{key: list}`` (one entry per sample, in order) and ``metadata`` (a dict).

    Profile columns hold float32 ``[T, L]`` arrays (generated token x layer; entropies in nats);
    ``tokens`` int64 ``[T]``; labels are strings or numbers."""

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
    def load(cls, path: str | Path) -> "Results":
        """Read a results file (``.pkl``, ``.npz``, an unfinished run's sidecar, or the output-format
        experiment's DataFrame of records); see :func:`model_inspector.storage.load_results`."""
        from .storage import load_results

        return cls.from_dict(load_results(path))

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
        """Columns of ``[T, L]`` profiles (``entropy``, ``renyi_0.5``...)."""
        return [k for k, v in self.columns.items() if v and isinstance(v[0], np.ndarray) and v[0].ndim == 2]

    @property
    def label_keys(self) -> list[str]:
        """Columns of strings or numbers (``prompt``, ``task``, ``correct``...)."""
        return [k for k, v in self.columns.items() if v and isinstance(v[0], (str, int, float, np.integer, np.floating))]

    def profiles(self, key: str = "entropy") -> np.ndarray:
        """The ``key`` column stacked: ``[sample, T, L]`` (float32)."""
        if key not in self.columns:
            raise UserError(f"no {key!r} profiles; this file has {', '.join(self.metric_keys) or 'none'}")
        return np.stack([np.asarray(v, dtype=np.float32) for v in self.columns[key]])

    def append(self, rows: dict) -> None:
        """Add rows ``{key: list}`` (same keys as the existing columns, once there are any)."""
        if self.columns and set(rows) != set(self.columns):
            raise ValueError(f"rows have keys {sorted(rows)}, the results {sorted(self.columns)}")
        for k, v in rows.items():
            self.columns.setdefault(k, []).extend(v)

    # ----------------------------------------------------------------- output
    def to_dict(self) -> dict:
        """The paper's dict: every column plus ``metadata``."""
        return {**self.columns, "metadata": self.metadata}

    def to_pickle(self, path: str | Path) -> None:
        """Write atomically in the file's layout: the paper's dict, or, when ``metadata["layout"]`` is
        ``"format_records"`` (the output-format experiment), the paper's DataFrame of records."""
        from .storage import save_results

        if self.metadata.get("layout") == "format_records":
            from .formats import save_formats

            save_formats(path, self.to_dict())
        else:
            save_results(path, self.to_dict())

    def to_npz(self, path: str | Path) -> None:
        from .storage import save_npz

        save_npz(path, self.to_dict())

    def to_pandas(self):
        """One row per sample: label columns as they are, profile columns as ``[T, L]`` arrays;
        ``DataFrame.attrs["metadata"]`` holds the metadata."""
        import pandas as pd

        df = pd.DataFrame(self.columns)
        df.attrs["metadata"] = self.metadata
        return df

    def __repr__(self) -> str:
        shape = ""
        if "entropy" in self.columns and self.columns["entropy"]:
            shape = f", profiles [T, L] = {tuple(np.shape(self.columns['entropy'][0]))}"
        model = self.metadata.get("identity", {}).get("model") or self.metadata.get("model_id", "?")
        return (f"Results({len(self)} samples, model {model}, metrics {self.metric_keys}{shape}, "
                f"labels {self.label_keys}, complete={self.metadata.get('complete')})")
