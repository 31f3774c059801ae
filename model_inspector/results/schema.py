"""The results schema: what a results file holds, declared in one place.

A run's state is a dict: every key but ``metadata`` holds a list with one entry per sample (the paper's layout).

* metric columns: float32 ``[token, layer]`` per metric key (``entropy``, ``renyi_0.5``...; entropies in nats), or
  ``[window, layer]`` window means in the format experiment's files;
* the columns of :data:`RUN_COLUMNS` (prompt, generated text and ids, top lens tokens, sample index, model);
* each experiment's label columns, which it declares (``Experiment.columns``): every layout keeps them.

``metadata`` (a dict) holds the keys of :data:`METADATA_KEYS`. :data:`FORMAT_VERSION` says what changed when.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ResultsFileError

__all__ = ["FORMAT", "FORMAT_VERSION", "Column", "RUN_COLUMNS", "METADATA_KEYS", "profile_fields", "token_strings",
           "n_samples", "in_sample_order", "validate", "check_shapes", "is_profile", "nonfinite"]

FORMAT = "entropy-lens-results"
#: 2: ``metadata.identity`` (the run identity) added; version-1 files load but cannot be resumed.
#: 3: ``top_ids`` / ``top_probs`` columns (top lens tokens) and ``metadata.token_strings`` added.
#: 4: ``sample_index`` column and ``identity.batch_order`` (batches by token length, one seed per prompt).
FORMAT_VERSION = 4


@dataclass(frozen=True)
class Column:
    """One per-sample column: ``name``, ``description``, and for arrays their ``axes`` and ``dtype``."""

    name: str
    description: str
    axes: str | None = None
    dtype: str | None = None


#: The columns every profiling run writes besides its metric columns and its experiment's labels.
RUN_COLUMNS = (
    Column("input", "the prompt"),
    Column("text", "the generated text (without the prompt)"),
    Column("tokens", "generated token ids (-1 after an early stop)", "[token]", "int64"),
    Column("top_ids", "the top K lens tokens per generated token and layer (--keep_top_tokens)",
           "[token, layer, K]", "int32"),
    Column("top_probs", "their probabilities", "[token, layer, K]", "float16"),
    Column("sample_index", "the sample's position in the experiment's list of prompts (before prompts too long for "
           "the context are skipped)"),
    Column("model", "the model's name (last path component)"),
    Column("prompt_tokens", "the prompt's length in tokens as the model saw it (BOS policy and chat template applied)"),
)

#: metadata key -> what it holds
METADATA_KEYS = {
    "format": f"always {FORMAT!r}", "format_version": "FORMAT_VERSION of the writer",
    "identity": "the run identity (everything that determines the numbers; see run.config.RunIdentity)",
    "token_strings": "{id: text} for every id in tokens and top_ids (readers need no tokenizer)",
    "config": "the run's settings", "metrics": "metric key -> definition with unit", "model_id": "the model's id",
    "dtype": "torch dtype", "device": "torch device", "n_layers": "L", "d_model": "d", "d_vocab": "V",
    "prepend_bos_resolved": "whether a BOS token was prepended",
    "versions": "library versions (a list of the distinct sets when the rows' parts were made with different ones)",
    "n_total": "samples to profile",
    "n_rows": "rows this process profiles (all of them but in a data-parallel shard)",
    "n_skipped": "prompts skipped by length",
    "n_bad_rows": "data rows skipped (--skip_bad_rows)", "n_skipped_context": "prompts too long for the context",
    "threads": "CPU threads (a sorted list when the rows' parts were made with different counts)",
    "parts": "per sidecar part, in row order: rows, threads, library versions (and the shard's rank) that made them",
    "n_nonfinite": "rows kept with NaN/inf metrics at valid steps (--keep_nonfinite)",
    "complete": "False while the run is unfinished", "created": "UTC start time",
    "elapsed_s": "seconds of profiling",
    "lens_precision": "the lens product's precision as run (fp32, bf16, bf16x2, bf16x3)",
    "lens_precision_requested": "the precision asked for (a device without bf16 runs fp32)",
    "lens_kernel": "the product the lens used, in words",
    "lens_precision_deviation": "a reduced-precision run's deviation from fp32 on its first batch: metric -> max, mean, n", "layout": "'format_records' for the format experiment's DataFrame",
}


def is_profile(value) -> bool:
    """Whether a column entry is a ``[token, layer]`` (or ``[window, layer]``) profile."""
    return isinstance(value, np.ndarray) and value.ndim == 2 and value.dtype.kind == "f"


def profile_fields(profile, i: int) -> dict:
    """The per-sample fields of row ``i`` of a :class:`~model_inspector.profiling.Profile`: every metric
    ``[token, layer]``, ``tokens``, ``text`` and, when kept, ``top_ids`` int32 ``[token, layer, K]`` and
    ``top_probs`` float16 ``[token, layer, K]``."""
    out = {k: v[i] for k, v in profile.metrics.items()}
    out["tokens"] = profile.token_ids[i]
    out["text"] = profile.texts[i]
    if profile.top_ids is not None:
        out["top_ids"] = profile.top_ids[i].astype(np.int32)
        out["top_probs"] = np.exp(profile.top_logprobs[i]).astype(np.float16)
    return out


def token_strings(tokenizer, state: dict) -> dict:
    """``{str(id): text}`` for every id in the ``tokens`` and ``top_ids`` columns (so that a reader of the file,
    the explorer say, needs no tokenizer)."""
    ids: set = set()
    for key in ("tokens", "top_ids"):
        for arr in state.get(key, []):
            ids.update(int(t) for t in np.unique(arr) if t >= 0)
    return {str(t): tokenizer.decode([t]) for t in sorted(ids)}


def n_samples(data: dict) -> int:
    """Number of samples in a results dict."""
    for key in ("entropy", "activations"):
        if key in data:
            return len(data[key])
    lists = [v for k, v in data.items() if k != "metadata" and isinstance(v, list)]
    return len(lists[0]) if lists else 0


def in_sample_order(data: dict) -> dict:
    """``data`` with every per-sample list sorted by its ``sample_index`` column (rows are stored in batch order
    while a run goes on; a finished file is in sample order). Without the column: as is."""
    index = data.get("sample_index")
    if not index or len(index) != n_samples(data):
        return data
    order = np.argsort(np.asarray(index), kind="stable")
    if np.array_equal(order, np.arange(len(order))):
        return data
    n = len(order)
    return {k: ([v[i] for i in order] if k != "metadata" and isinstance(v, list) and len(v) == n else v)
            for k, v in data.items()}


def validate(data, path: str | Path) -> dict:
    """``data`` if it is a results dict this library can read (lists of equal length, a known format version),
    else :class:`ResultsFileError` naming ``path`` and what is wrong."""
    p = path
    if not isinstance(data, dict):
        raise ResultsFileError(f"{p}: expected a dict of lists, found {type(data).__name__}")
    profiles = [k for k, v in data.items() if k != "metadata" and isinstance(v, list) and v and is_profile(v[0])]
    if not profiles and "activations" not in data:
        raise ResultsFileError(f"{p}: holds no [token, layer] profiles and no 'activations' (keys: "
                               f"{', '.join(map(str, data))})")
    meta = data.get("metadata") or {}
    version = meta.get("format_version") if isinstance(meta, dict) else None
    if version is not None and version > FORMAT_VERSION:
        raise ResultsFileError(f"{p}: format version {version} is newer than this library's ({FORMAT_VERSION}); "
                               "update entropy-lens")
    n = n_samples(data)
    bad = [k for k, v in data.items() if k != "metadata" and isinstance(v, list) and len(v) != n]
    if bad:
        raise ResultsFileError(f"{p}: lists of unequal length ({', '.join(bad)} vs {n} samples)")
    check_shapes(data, p)
    return data


def check_shapes(data: dict, path: str | Path) -> None:
    """Every entry of a profile column has the shape of the column's first entry (``[token, layer]``); else
    :class:`ResultsFileError` naming ``path``, the column and the first sample that differs."""
    for k, v in data.items():
        if k == "metadata" or not isinstance(v, list) or not v or not is_profile(v[0]):
            continue
        shape = np.shape(v[0])
        for i, x in enumerate(v):
            if not isinstance(x, np.ndarray) or x.shape != shape:
                got = tuple(x.shape) if isinstance(x, np.ndarray) else type(x).__name__
                where = _sample_name(data, i)
                raise ResultsFileError(f"{path}: column {k!r} is ragged: {where} has shape {got}, the samples before "
                                       f"it {tuple(shape)} [token, layer]; every sample of a column must have one "
                                       "shape")


def _sample_name(data: dict, i: int) -> str:
    index = data.get("sample_index")
    if isinstance(index, list) and len(index) > i:
        return f"row {i} (sample_index {index[i]})"
    return f"sample {i}"


def nonfinite(fields: dict) -> dict[str, int]:
    """``{metric key: number of NaN/inf values}`` of one sample's ``[token, layer]`` metrics, at its valid steps
    only (``tokens >= 0``: a row stopped early at EOS is NaN after it, by design). Empty when all are finite."""
    tokens = fields.get("tokens")
    valid = None
    if isinstance(tokens, np.ndarray) and tokens.ndim == 1:
        valid = np.asarray(tokens) >= 0
    out = {}
    for k, v in fields.items():
        if not is_profile(v):
            continue
        x = v[valid] if valid is not None and len(valid) == v.shape[0] else v
        bad = int(np.size(x) - np.isfinite(x).sum())
        if bad:
            out[k] = bad
    return out
