"""What determines a run's numbers, recorded in its results and checked on every resume.

:class:`RunIdentity` holds the resolved model (a path, ``embedded:ALIAS`` or ``hub:ID@REVISION``,
plus a fingerprint of its files), dtype, device type, decoding, metrics, the lens's chunk budget and
compile path, and a fingerprint of the input data. It is written to ``metadata["identity"]`` and
compared field by field (:meth:`RunIdentity.differences`) before the model loads; fields that are
only known once the weights are loaded (a hub model's files, the dtype a model object arrived in)
are ``None`` until then and compared again after loading, before any profiling.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from .errors import UserError

__all__ = ["RunIdentity", "fingerprint_path", "fingerprint_samples", "IdentityMismatch"]

#: Files up to this size are hashed whole; larger ones by their size and 16 blocks of 64 KiB.
_WHOLE = 4 * 2**20
_BLOCK = 64 * 2**10


class IdentityMismatch(UserError):
    """An existing results file was made with other settings (the message names each difference)."""


def _hash_file(h, f: Path) -> None:
    size = f.stat().st_size
    h.update(f"{f.name}:{size}\n".encode())
    with f.open("rb") as fh:
        if size <= _WHOLE:
            h.update(fh.read())
            return
        for i in range(16):
            fh.seek(min(size - _BLOCK, i * (size - _BLOCK) // 15))
            h.update(fh.read(_BLOCK))


def fingerprint_path(path: str | Path) -> str:
    """A content fingerprint (16 hex digits) of a model file or folder: every file's name, size and
    content (whole up to 4 MiB, else 16 evenly spaced 64 KiB blocks). Re-converting the same
    weights gives the same fingerprint; other weights, config or tokenizer files a different one."""
    p = Path(path)
    h = hashlib.sha256()
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))
    for f in files:
        _hash_file(h, f)
    return h.hexdigest()[:16]


def fingerprint_samples(samples) -> str:
    """A fingerprint (16 hex digits) of the prompts and labels to profile, in order."""
    h = hashlib.sha256()
    for s in samples:
        h.update(json.dumps([s.text, s.labels], sort_keys=True, default=str).encode())
        h.update(b"\n")
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class RunIdentity:
    """Everything that determines a results file's numbers (``None``: not known yet)."""

    model: str
    model_fingerprint: str | None
    dtype: str | None
    device: str | None
    dataset: str
    data_fingerprint: str
    n_samples: int
    max_len: int
    metrics: tuple
    batch_size: int
    sample: bool
    temperature: float | None
    seed: int
    chat_template: bool
    prepend_bos: str
    budget_mb: float
    compile: bool
    keep_top_tokens: int = 0
    batch_order: str = "length"
    extra: str = "{}"

    def as_dict(self) -> dict:
        d = asdict(self)
        d["metrics"] = list(self.metrics)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "RunIdentity":
        names = {f.name for f in fields(cls)}
        known = {k: v for k, v in d.items() if k in names}
        known["metrics"] = tuple(known.get("metrics", ()))
        missing = names - set(known) - {"extra"}
        known.update({k: "(not recorded)" for k in missing})
        return cls(**known)

    def with_loaded(self, **values) -> "RunIdentity":
        """A copy with the fields only known after loading filled in."""
        return replace(self, **values)

    def differences(self, recorded: dict, *, partial: bool = False) -> list[str]:
        """``"field: file X vs now Y"`` for each field that differs from ``recorded`` (a file's
        ``metadata["identity"]``). ``partial``: skip fields not known yet (``None`` now)."""
        now = self.as_dict()
        out = []
        for k, v in now.items():
            if partial and v is None:
                continue
            old = recorded.get(k, "(not recorded)")
            if old != v:
                out.append(f"{k}: file {old!r} vs now {v!r}")
        return out

    def check(self, recorded: dict | None, path, *, partial: bool = False) -> None:
        """Raise :class:`IdentityMismatch` naming every difference from ``recorded``."""
        if recorded is None:
            raise IdentityMismatch(f"{path} records no run identity (written by an older entropy-lens), so it cannot "
                                   "be resumed safely; rerun with --overwrite")
        diff = self.differences(recorded, partial=partial)
        if diff:
            raise IdentityMismatch(f"cannot resume {path}: settings differ ({'; '.join(diff)}); "
                                   "use the same settings, or --overwrite to start again")
