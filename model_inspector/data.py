"""Reading datasets: the HF hub by default, or a local ``--data_file`` (offline).

Every row is parsed into a typed record by explicit rules; nothing is coerced. A bad row is
reported as ``FILE:LINE: what is wrong`` (with the count of bad rows), or skipped and counted with
``skip_bad_rows=True`` (``--skip_bad_rows``).

* TinyStories (:class:`Story`): ``text``, a non-empty string.
* MMLU (:class:`MMLUQuestion`): ``question`` and ``subject`` non-empty strings; ``choices`` four
  strings (in CSV: a JSON list, or four columns ``A``-``D``); ``answer`` an integer 0-3 or a
  letter A-D (not a float, not a boolean).
"""

from __future__ import annotations

import json
import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import UserError

__all__ = ["DataError", "Story", "MMLUQuestion", "read_records", "load_tinystories", "load_mmlu", "parse_rows"]


class DataError(UserError):
    """A data file or dataset request is unusable (the message says how to fix it)."""


@dataclass(frozen=True)
class Story:
    text: str
    index: int


@dataclass(frozen=True)
class MMLUQuestion:
    question: str
    subject: str
    choices: tuple
    answer: int  # 0-3
    index: int

    def as_row(self) -> dict:
        return {"question": self.question, "subject": self.subject, "choices": list(self.choices),
                "answer": self.answer, "index": self.index}


def read_records(path: str | Path) -> list[tuple[str, dict]]:
    """``(where, record)`` pairs of a ``.jsonl``, ``.json``, ``.parquet``, ``.csv`` or ``.txt`` file;
    ``where`` is ``FILE:LINE`` (jsonl, csv) or ``FILE:item N`` / ``FILE:row N``.

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
                            rows.append((f"{p}:{n}", json.loads(line)))
                        except json.JSONDecodeError as exc:
                            raise DataError(f"{p}: line {n} is not valid JSON ({exc.msg})") from None
            return rows
        if suffix == ".json":
            obj = json.loads(p.read_text(encoding="utf-8"))
            if isinstance(obj, dict):
                obj = obj.get("data", obj.get("rows"))
            if not isinstance(obj, list):
                raise DataError(f"{p}: expected a JSON list of records (or {{'data': [...]}})")
            return [(f"{p}:item {i}", r) for i, r in enumerate(obj)]
        if suffix in (".parquet", ".csv"):
            import pandas as pd

            if suffix == ".parquet":
                df = pd.read_parquet(p)
                return [(f"{p}:row {i}", r) for i, r in enumerate(df.to_dict("records"))]
            df = pd.read_csv(p, keep_default_na=False)
            return [(f"{p}:{i + 2}", r) for i, r in enumerate(df.to_dict("records"))]  # line 1 is the header
        if suffix == ".txt":
            content = p.read_text(encoding="utf-8")
            parts = content.split("<|endoftext|>") if "<|endoftext|>" in content else content.splitlines()
            return [(f"{p}:story {i}", {"text": s.strip()}) for i, s in enumerate(x for x in parts if x.strip())]
    except DataError:
        raise
    except (OSError, ValueError) as exc:
        raise DataError(f"{p}: cannot read ({type(exc).__name__}: {exc})") from None
    raise DataError(f"{p}: unsupported data file type {suffix!r}; use .jsonl, .json, .parquet, .csv or .txt")


def parse_rows(rows: list[tuple[str, dict]], parse: Callable[[dict, int], object], *, skip_bad_rows: bool = False,
               source: str = "") -> tuple[list, int]:
    """Parse each ``(where, record)`` with ``parse(record, index)`` (raising ``ValueError`` with what
    is wrong). Returns ``(records, n_bad)``; without ``skip_bad_rows`` a bad row raises
    :class:`DataError` ``FILE:LINE: what is wrong (N bad rows in all ...)``."""
    if not rows:
        raise DataError(f"{source}: no records")
    good, bad = [], []
    for i, (where, r) in enumerate(rows):
        try:
            if not isinstance(r, dict):
                raise ValueError(f"expected a record (an object with named fields), got {type(r).__name__}")
            good.append(parse(r, i))
        except ValueError as exc:
            bad.append(f"{where}: {exc}")
    if bad and not skip_bad_rows:
        more = f" ({len(bad)} bad rows in all; fix them or pass --skip_bad_rows to skip and count them)"
        raise DataError(bad[0] + more)
    if bad:
        print(f"skipped {len(bad)} bad rows (first: {bad[0]})")
    return good, len(bad)


def _string(r: dict, key: str) -> str:
    if key not in r:
        raise ValueError(f"lacks column(s) {key}")
    v = r[key]
    if not isinstance(v, str):
        raise ValueError(f"{key} must be a string (got {type(v).__name__} {v!r})")
    if not v.strip():
        raise ValueError(f"{key} is empty")
    return v


def _story(r: dict, i: int) -> Story:
    return Story(_string(r, "text"), i)


def _choices(r: dict) -> tuple:
    if "choices" in r:
        c = r["choices"]
        if isinstance(c, str):  # CSV: a JSON list
            try:
                c = json.loads(c)
            except json.JSONDecodeError:
                raise ValueError("choices must be a list of 4 strings (in CSV: a JSON list such as "
                                 '["a", "b", "c", "d"])') from None
        if isinstance(c, np.ndarray):  # parquet
            c = c.tolist()
    elif all(k in r for k in "ABCD"):
        c = [r[k] for k in "ABCD"]
    else:
        raise ValueError("lacks column(s) choices (or four columns A, B, C, D)")
    if not isinstance(c, (list, tuple)) or len(c) != 4 or not all(isinstance(x, str) for x in c):
        raise ValueError(f"choices must be 4 strings (got {c!r:.80})")
    return tuple(c)


def _answer(v) -> int:
    if isinstance(v, str) and v.strip().upper() in ("A", "B", "C", "D"):
        return "ABCD".index(v.strip().upper())
    if isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_)) and 0 <= int(v) <= 3:
        return int(v)
    raise ValueError(f"answer must be an integer 0-3 or a letter A-D (got {type(v).__name__} {v!r})")


def _mmlu(r: dict, i: int) -> MMLUQuestion:
    missing = [c for c in ("question", "subject", "answer") if c not in r]
    if missing:
        raise ValueError(f"lacks column(s) {', '.join(missing)} (need question, subject, choices, answer)")
    return MMLUQuestion(_string(r, "question"), _string(r, "subject"), _choices(r), _answer(r["answer"]), i)


def load_tinystories(n_stories: int, data_file: str | None = None, *, skip_bad_rows: bool = False,
                     stats: dict | None = None) -> list[str]:
    """The first ``n_stories`` stories of the TinyStories validation split (hub or ``data_file``).
    ``stats["n_bad_rows"]`` receives the number of rows skipped."""
    if not isinstance(n_stories, int) or n_stories < 1:
        raise DataError(f"--n_stories must be a positive integer (got {n_stories!r})")
    if data_file:
        stories, n_bad = parse_rows(read_records(data_file), _story, skip_bad_rows=skip_bad_rows, source=data_file)
        texts = [s.text for s in stories]
    else:
        texts, n_bad = _hub("roneneldan/TinyStories", None, "validation", n_stories, "text"), 0
    if stats is not None:
        stats["n_bad_rows"] = n_bad
    if len(texts) < n_stories:
        raise DataError(f"only {len(texts)} stories available, {n_stories} requested (lower --n_stories)")
    return texts[:n_stories]


def _hub(name, config, split, n, column):
    from .loading import hub_offline, hub_unreachable

    need = "a 'text' column" if column == "text" else "columns question, subject, choices, answer"
    reason = None if hub_offline() else hub_unreachable()  # offline: the datasets cache may still have it
    if reason:
        raise DataError(f"{name} needs the HuggingFace hub, which is not available ({reason}); pass a local copy "
                        f"with --data_file (jsonl/json/parquet/csv with {need}); offline, set HF_HUB_OFFLINE=1 "
                        "so that this fails at once (or reads the datasets cache)")
    try:
        import datasets

        ds = datasets.load_dataset(name, config, split=split if n is None else f"{split}[:{n}]")
    except Exception as exc:  # noqa: BLE001 - the hub failing is a user-facing condition
        raise DataError(
            f"could not load {name} from the HuggingFace hub ({type(exc).__name__}); offline, pass a local "
            f"copy with --data_file (jsonl/json/parquet/csv with {need}) (HF_HUB_OFFLINE=1 skips the hub)"
        ) from None
    return ds[column] if column == "text" else [dict(r) for r in ds]


def load_mmlu(data_file: str | None = None, subjects=None, n_questions: int | None = None, seed: int = 0, *,
              skip_bad_rows: bool = False, stats: dict | None = None) -> list[dict]:
    """MMLU test rows (``question``, ``subject``, ``choices``, ``answer`` 0-3, ``index``), all subjects
    unless ``subjects``; ``n_questions`` draws a reproducible subsample (by ``seed``) that keeps
    the dataset's order. ``stats["n_bad_rows"]`` receives the number of rows skipped."""
    if data_file:
        rows = read_records(data_file)
    else:
        rows = [(f"cais/mmlu:row {i}", r) for i, r in enumerate(_hub("cais/mmlu", "all", "test", None, "question"))]
    parsed, n_bad = parse_rows(rows, _mmlu, skip_bad_rows=skip_bad_rows, source=data_file or "cais/mmlu")
    if stats is not None:
        stats["n_bad_rows"] = n_bad
    out = [q.as_row() for q in parsed]
    if subjects:
        known = sorted({r["subject"] for r in out})
        unknown = [s for s in subjects if s not in known]
        if unknown:
            raise DataError(f"unknown subject(s) {', '.join(unknown)}; known: {', '.join(known[:8])}, ... "
                            f"({len(known)} in all)")
        out = [r for r in out if r["subject"] in set(subjects)]
    if n_questions is not None:
        if n_questions < 1:
            raise DataError(f"--n_questions must be a positive integer (got {n_questions})")
        if n_questions < len(out):
            pick = np.sort(np.random.default_rng(seed).choice(len(out), n_questions, replace=False))
            out = [out[i] for i in pick]
    return out
