"""Reading datasets: the HF hub by default, or a local ``--data_file`` (offline)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

__all__ = ["DataError", "read_records", "load_tinystories", "load_mmlu"]


class DataError(ValueError):
    """A data file or dataset request is unusable (the message says how to fix it)."""


def read_records(path: str | Path) -> list[dict]:
    """Records of a ``.jsonl``, ``.json``, ``.parquet``, ``.csv`` or ``.txt`` file.

    A ``.txt`` file gives one ``{"text": ...}`` record per story, stories separated by
    ``<|endoftext|>`` when that marker occurs, else one per non-empty line."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"data file not found: {p} (pass an existing file with --data_file)")
    suffix = p.suffix.lower()
    try:
        if suffix == ".jsonl":
            rows = []
            with p.open(encoding="utf-8") as fh:
                for n, line in enumerate(fh, 1):
                    if line.strip():
                        try:
                            rows.append(json.loads(line))
                        except json.JSONDecodeError as exc:
                            raise DataError(f"{p}: line {n} is not valid JSON ({exc.msg})") from None
            return rows
        if suffix == ".json":
            obj = json.loads(p.read_text(encoding="utf-8"))
            if isinstance(obj, dict):
                obj = obj.get("data", obj.get("rows"))
            if not isinstance(obj, list):
                raise DataError(f"{p}: expected a JSON list of records (or {{'data': [...]}})")
            return obj
        if suffix in (".parquet", ".csv"):
            import pandas as pd

            df = pd.read_parquet(p) if suffix == ".parquet" else pd.read_csv(p)
            return df.to_dict("records")
        if suffix == ".txt":
            content = p.read_text(encoding="utf-8")
            parts = content.split("<|endoftext|>") if "<|endoftext|>" in content else content.splitlines()
            return [{"text": s.strip()} for s in parts if s.strip()]
    except DataError:
        raise
    except (OSError, ValueError) as exc:
        raise DataError(f"{p}: cannot read ({type(exc).__name__}: {exc})") from None
    raise DataError(f"{p}: unsupported data file type {suffix!r}; use .jsonl, .json, .parquet, .csv or .txt")


def _need(rows: list[dict], columns: tuple, path) -> None:
    if not rows:
        raise DataError(f"{path}: no records")
    for i, r in enumerate(rows):
        if not isinstance(r, dict) or any(c not in r for c in columns):
            raise DataError(f"{path}: record {i} lacks column(s) {', '.join(c for c in columns if c not in r)} "
                            f"(need {', '.join(columns)})")


def load_tinystories(n_stories: int, data_file: str | None = None) -> list[str]:
    """The first ``n_stories`` stories of the TinyStories validation split (hub or ``data_file``)."""
    if not isinstance(n_stories, int) or n_stories < 1:
        raise DataError(f"--n_stories must be a positive integer (got {n_stories!r})")
    if data_file:
        rows = read_records(data_file)
        _need(rows, ("text",), data_file)
        texts = [str(r["text"]) for r in rows]
    else:
        texts = _hub("roneneldan/TinyStories", None, "validation", n_stories, "text")
    if len(texts) < n_stories:
        raise DataError(f"only {len(texts)} stories available, {n_stories} requested (lower --n_stories)")
    return texts[:n_stories]


def _hub(name, config, split, n, column):
    try:
        import datasets

        ds = datasets.load_dataset(name, config, split=split if n is None else f"{split}[:{n}]")
    except Exception as exc:  # noqa: BLE001 - the hub failing is a user-facing condition
        raise DataError(
            f"could not load {name} from the HuggingFace hub ({type(exc).__name__}); offline, pass a local "
            f"copy with --data_file (jsonl/json/parquet/csv with a '{column}' column)"
        ) from None
    return ds[column] if column == "text" else [dict(r) for r in ds]


def load_mmlu(data_file: str | None = None, subjects=None, n_questions: int | None = None, seed: int = 0) -> list[dict]:
    """MMLU test rows (``question``, ``subject``, ``choices``, ``answer``, ``index``), all subjects
    unless ``subjects``; ``n_questions`` draws a reproducible subsample (by ``seed``) that keeps
    the dataset's order."""
    if data_file:
        rows = read_records(data_file)
    else:
        rows = _hub("cais/mmlu", "all", "test", None, "question")
    _need(rows, ("question", "subject", "choices", "answer"), data_file or "cais/mmlu")
    rows = [dict(r, index=i) for i, r in enumerate(rows)]
    if subjects:
        known = sorted({r["subject"] for r in rows})
        unknown = [s for s in subjects if s not in known]
        if unknown:
            raise DataError(f"unknown subject(s) {', '.join(unknown)}; known: {', '.join(known[:8])}, ... "
                            f"({len(known)} in all)")
        rows = [r for r in rows if r["subject"] in set(subjects)]
    for r in rows:
        if len(r["choices"]) != 4 or int(r["answer"]) not in range(4):
            raise DataError(f"MMLU row {r['index']} needs 4 choices and an answer 0-3")
    if n_questions is not None:
        if n_questions < 1:
            raise DataError(f"--n_questions must be a positive integer (got {n_questions})")
        if n_questions < len(rows):
            pick = np.sort(np.random.default_rng(seed).choice(len(rows), n_questions, replace=False))
            rows = [rows[i] for i in pick]
    return rows
