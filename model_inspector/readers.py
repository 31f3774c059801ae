"""Reading datasets: a local ``--data_file`` (offline) or the HuggingFace hub, into typed, validated records.

Shared by every experiment and knowing none of them: an experiment says what a row is (a :class:`Record` of
:class:`Field` rules) and where its data lives on the hub (a :class:`HubSource`). Every row is parsed by explicit
rules; nothing is coerced (a CSV file is read with every cell as the string written, and each rule parses its
field from that string: ``1`` is the integer 1, ``1.0`` is not an integer). A bad row is reported as
``FILE:LINE: what is wrong`` (with the count of bad rows), or
skipped and counted with ``skip_bad_rows=True`` (``--skip_bad_rows``).
"""

from __future__ import annotations

import json
import numbers
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UserError

__all__ = ["DataError", "Field", "Text", "Choices", "AnswerIndex", "Record", "DataSource", "HubSource", "read_records",
           "parse_rows", "load_rows"]


class DataError(UserError):
    """A data file or dataset request is unusable (the message says how to fix it)."""


# ------------------------------------------------------------------------------------------------ row rules
class Field:
    """A rule for one column: ``parse(row, name) -> value`` raising ``ValueError`` with what is wrong."""

    def parse(self, row: dict, name: str):
        raise NotImplementedError


@dataclass(frozen=True)
class Text(Field):
    """A non-empty string."""

    def parse(self, row, name):
        if name not in row:
            raise ValueError(f"lacks column(s) {name}")
        v = row[name]
        if not isinstance(v, str):
            raise ValueError(f"{name} must be a string (got {type(v).__name__} {v!r})")
        if not v.strip():
            raise ValueError(f"{name} is empty")
        return v


@dataclass(frozen=True)
class Choices(Field):
    """``n`` strings: a list (in CSV: a JSON list), or ``n`` columns named by ``columns`` (``A``-``D``)."""

    n: int = 4
    columns: str = "ABCD"

    def parse(self, row, name):
        if name in row:
            c = row[name]
            if isinstance(c, str):  # CSV: a JSON list
                try:
                    c = json.loads(c)
                except json.JSONDecodeError:
                    raise ValueError(f"{name} must be a list of {self.n} strings (in CSV: a JSON list such as "
                                     '["a", "b", "c", "d"])') from None
            if hasattr(c, "tolist"):  # parquet
                c = c.tolist()
        elif all(k in row for k in self.columns):
            c = [row[k] for k in self.columns]
        else:
            raise ValueError(f"lacks column(s) {name} (or {len(self.columns)} columns {', '.join(self.columns)})")
        if not isinstance(c, (list, tuple)) or len(c) != self.n or not all(isinstance(x, str) for x in c):
            raise ValueError(f"{name} must be {self.n} strings (got {c!r:.80})")
        return tuple(c)


@dataclass(frozen=True)
class AnswerIndex(Field):
    """An integer ``0..n-1`` or a capital letter ``A..`` exactly (not a float, not a boolean, not ``"b"`` or
    ``" B "``); a string of digits (a CSV cell) is that integer."""

    letters: str = "ABCD"

    def parse(self, row, name):
        if name not in row:
            raise ValueError(f"lacks column(s) {name}")
        v = row[name]
        if isinstance(v, str) and len(v) == 1 and v in self.letters:
            return self.letters.index(v)
        if isinstance(v, str) and v.isascii() and v.isdigit() and 0 <= int(v) < len(self.letters):
            return int(v)
        if isinstance(v, numbers.Integral) and not isinstance(v, bool) and type(v).__name__ != "bool_" and (
                0 <= int(v) < len(self.letters)):
            return int(v)
        shown = repr(v) if isinstance(v, str) else f"{type(v).__name__} {v!r}"
        raise ValueError(f"{name} must be an integer 0-{len(self.letters) - 1} or a letter "
                         f"{self.letters[0]}-{self.letters[-1]} (got {shown})")


@dataclass(frozen=True)
class Record:
    """What a row of a dataset is: ``fields`` (column -> :class:`Field`), parsed in order into a dict with the
    row's ``index``."""

    fields: dict = field(default_factory=dict)

    def describe(self) -> str:
        return "columns " + ", ".join(self.fields)

    def parse(self, row: dict, index: int) -> dict:
        missing = [k for k, f in self.fields.items() if k not in row and not isinstance(f, Choices)]
        if len(missing) > 1:
            raise ValueError(f"lacks column(s) {', '.join(missing)} (need {', '.join(self.fields)})")
        return {**{k: f.parse(row, k) for k, f in self.fields.items()}, "index": index}


@dataclass(frozen=True)
class DataSource:
    """Where an experiment's rows come from: what a row is (``record``), the HuggingFace hub dataset read by default
    (``hub``; ``None``: a local file only) and the ``--data_file`` flag's help."""

    record: Record
    hub: "HubSource | None" = None
    help: str = "local data (jsonl/json/parquet/csv) instead of the hub"


@dataclass(frozen=True)
class HubSource:
    """Where a dataset lives on the HuggingFace hub: ``name``, ``config``, ``split``; ``head``: only the first N
    rows are read when the experiment asks for N (``split[:N]``)."""

    name: str
    config: str | None = None
    split: str = "test"
    head: bool = False


# ------------------------------------------------------------------------------------------------ reading
@dataclass(frozen=True)
class Unreadable:
    """A line of a data file that is not a record at all (invalid JSON): a bad row with its ``reason``."""

    reason: str


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
                        except json.JSONDecodeError as exc:  # a bad row like any other (--skip_bad_rows skips it)
                            rows.append((f"{p}:{n}", Unreadable(f"line {n} is not valid JSON ({exc.msg})")))
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
            # every cell as the string written (no type guessing per column, no NaN for a blank cell): each rule
            # parses its own field
            df = pd.read_csv(p, dtype=str, keep_default_na=False)
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
            if isinstance(r, Unreadable):
                raise ValueError(r.reason)
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


def _hub_rows(source: HubSource, record: Record, limit: int | None) -> list[tuple[str, dict]]:
    from .loading import hub_offline, hub_unreachable, offline_hint

    need = record.describe()
    reason = None if hub_offline() else hub_unreachable()  # offline: the datasets cache may still have it
    if reason:
        raise DataError(f"{source.name} needs the HuggingFace hub, which is not available ({reason}); pass a local "
                        f"copy with --data_file (jsonl/json/parquet/csv with {need}){offline_hint()}")
    try:
        import datasets

        split = source.split if not (source.head and limit) else f"{source.split}[:{limit}]"
        ds = datasets.load_dataset(source.name, source.config, split=split)
    except Exception as exc:  # noqa: BLE001 - the hub failing is a user-facing condition
        raise DataError(
            f"could not load {source.name} from the HuggingFace hub ({type(exc).__name__}); offline, pass a local "
            f"copy with --data_file (jsonl/json/parquet/csv with {need}){offline_hint()}"
        ) from None
    return [(f"{source.name}:row {i}", dict(r)) for i, r in enumerate(ds)]


def load_rows(record: Record, *, data_file: str | None = None, hub: HubSource | None = None,
              limit: int | None = None, skip_bad_rows: bool = False, stats: dict | None = None) -> list[dict]:
    """The parsed rows of ``data_file``, else of the hub dataset ``hub`` (``limit``: a head the source may read
    alone). ``stats["n_bad_rows"]`` receives the number of rows skipped."""
    if data_file:
        rows, source = read_records(data_file), str(data_file)
    elif hub is not None:
        rows, source = _hub_rows(hub, record, limit), hub.name
    else:
        raise DataError("this experiment reads a local file: pass --data_file")
    parsed, n_bad = parse_rows(rows, record.parse, skip_bad_rows=skip_bad_rows, source=source)
    if stats is not None:
        stats["n_bad_rows"] = n_bad
    return parsed
