"""What determines a run's numbers: :class:`RunConfig` (the settings, validated once) and :class:`RunIdentity`
(what a results file records and every resume checks).

Both are derived from the option declarations (:mod:`model_inspector.options`): ``RunConfig`` holds every option
marked ``identity`` plus the model, the dataset, the experiment's own identity values (``extra``) and the hub
revision; the identity adds the resolved model (a path, ``embedded:ALIAS`` or ``hub:ID@REVISION``) with a
fingerprint of its files and a fingerprint of the input data. It is written to ``metadata["identity"]`` and compared
field by field before the model loads; fields only known once the weights are loaded (a hub model's files) are
*pending* until then and compared again after loading, before any profiling.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ..errors import UserError
from ..options import MISSING, Settings, identity_options, option

__all__ = ["RunConfig", "RunIdentity", "IdentityMismatch", "fingerprint_path", "file_digest", "legacy_fingerprint",
           "fingerprint_samples", "model_label", "FINGERPRINT_INDEX"]

#: The index of file digests under the cache folder (:func:`model_inspector.loading.cache_dir`).
FINGERPRINT_INDEX = "fingerprints.json"
_CHUNK = 2**20


class IdentityMismatch(UserError):
    """An existing results file was made with other settings (the message names each difference)."""


def _stamp(st) -> list[int]:
    """What identifies one version of a file: size, mtime and ctime (ns) and inode. A user can restore a file's
    mtime (``os.utime``) but not its ctime, so an edit in place always changes the stamp."""
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def _index_file() -> Path:
    from ..loading import cache_dir

    return cache_dir() / FINGERPRINT_INDEX


def _read_index() -> dict:
    try:
        index = json.loads(_index_file().read_text())
    except (OSError, ValueError):
        return {}
    return index if isinstance(index, dict) else {}


def _write_index(index: dict) -> None:
    from ..storage import atomic_write_bytes

    merged = {**_read_index(), **index}  # another process may have added entries meanwhile
    keep = {}
    for key, entry in merged.items():
        try:
            if isinstance(entry, dict) and entry.get("stat") == _stamp(os.stat(key)):
                keep[key] = entry  # entries of files gone or changed since are dropped
        except OSError:
            pass
    try:
        atomic_write_bytes(_index_file(), json.dumps(keep, indent=0, sort_keys=True).encode())
    except OSError:  # a read-only cache: the digests are computed again next time
        pass


def file_digest(path: str | Path, index: dict | None = None) -> str:
    """The sha256 (hex) of every byte of the file ``path``, streamed; looked up first in ``index`` (``{resolved
    path: {"stat": stamp, "digest": hex}}``, updated in place) by the file's size, mtime, ctime and inode."""
    f = Path(path).resolve()
    key = str(f)
    before = _stamp(f.stat())
    hit = (index or {}).get(key)
    if isinstance(hit, dict) and hit.get("stat") == before and isinstance(hit.get("digest"), str):
        return hit["digest"]
    h = hashlib.sha256()
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    with open(f, "rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            h.update(view[:n])
    digest = h.hexdigest()
    if index is not None and _stamp(f.stat()) == before:  # not changed while read
        index[key] = {"stat": before, "digest": digest}
    return digest


def _files(p: Path) -> list[Path]:
    return [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))


def fingerprint_path(path: str | Path) -> str:
    """A content fingerprint (16 hex digits) of a model file or folder: every file's path (relative to the folder),
    size and the sha256 of all its bytes (weights, config, tokenizer). Re-converting the same weights gives the same
    fingerprint; any other byte a different one. Each file is read once per version: its digest is cached in
    ``<cache>/fingerprints.json`` by (resolved path, size, mtime, ctime, inode), written atomically."""
    p = Path(path)
    h = hashlib.sha256()
    index = _read_index()
    before = {k: v for k, v in index.items()}
    for f in _files(p):
        rel = f.name if f == p else f.relative_to(p).as_posix()
        h.update(f"{rel}:{f.stat().st_size}:{file_digest(f, index)}\n".encode())
    if index != before:
        _write_index(index)
    return h.hexdigest()[:16]


def legacy_fingerprint(path: str | Path) -> str:
    """The fingerprint entropy-lens wrote before every byte was hashed: each file's name, size and content (whole up
    to 4 MiB, else 16 evenly spaced 64 KiB blocks). Only used to explain a mismatch with an older file."""
    whole, block = 4 * 2**20, 64 * 2**10
    h = hashlib.sha256()
    for f in _files(Path(path)):
        size = f.stat().st_size
        h.update(f"{f.name}:{size}\n".encode())
        with f.open("rb") as fh:
            if size <= whole:
                h.update(fh.read())
                continue
            for i in range(16):
                fh.seek(min(size - block, i * (size - block) // 15))
                h.update(fh.read(block))
    return h.hexdigest()[:16]


def fingerprint_samples(samples) -> str:
    """A fingerprint (16 hex digits) of the prompts and labels to profile, in order."""
    h = hashlib.sha256()
    for s in samples:
        h.update(json.dumps([s.text, s.labels], sort_keys=True, default=str).encode())
        h.update(b"\n")
    return h.hexdigest()[:16]


class RunConfig(Settings):
    """Everything that determines a run's numbers (compared on ``--resume``): every option marked ``identity``
    (decoding, metrics, batch size and order, the lens's budget and compile path, the requested dtype name and device
    type: ``None`` means as loaded), plus ``model``, ``dataset``, ``extra`` (the experiment's identity values) and
    ``revision`` (of a hub model). Validated once, when made; ``cfg.decode`` is its
    :class:`~model_inspector.decoding.DecodeConfig`."""

    _identity = True
    _fields = {"model": None, "dataset": None, "extra": {}, "revision": None}

    def _check(self) -> None:
        for name in ("model", "dataset"):
            if not isinstance(self._values[name], str) or not self._values[name]:
                raise UserError(f"RunConfig needs a {name} (got {self._values[name]!r})")
        if not isinstance(self._values["extra"], dict):
            raise UserError(f"RunConfig extra must be a dict (got {type(self._values['extra']).__name__})")

    @property
    def decode(self):
        """The run's decoding, as one object (the ``decode`` options of this config)."""
        from ..decoding import DecodeConfig

        return DecodeConfig(**{o.name: self._values[o.name] for o in DecodeConfig.options()})

    def source(self):
        """What the model name resolves to, without loading: ``(reference, local files or None)``."""
        from ..loading import model_source

        return model_source(self.model, self.revision)

    def identity(self, samples) -> "RunIdentity":
        """The run identity known before loading: the model resolved and fingerprinted from its files where they
        exist (pending until then)."""
        ref, local = self.source()
        fields = {"model": ref, "model_fingerprint": fingerprint_path(local) if local is not None else None}
        values = self._values
        for o in identity_options():
            fields[o.name] = o.identity_value(values)
        fields.update({"dataset": self.dataset, "data_fingerprint": fingerprint_samples(samples),
                       "n_samples": len(samples), "extra": json.dumps(self.extra, sort_keys=True, default=str)})
        pending = {k for k in ("model_fingerprint", "dtype", "device") if fields[k] is None}
        return RunIdentity(fields, pending, local=local)


class RunIdentity:
    """Everything that determines a results file's numbers, as recorded in ``metadata["identity"]``.

    ``pending``: the fields not known until the model is loaded (the fingerprint of a hub model's files, the dtype
    and device a model arrives with); :meth:`with_loaded` fills them."""

    #: the fields besides the identity options, in the order a file records them
    FIXED = ("model", "model_fingerprint", "dtype", "device", "dataset", "data_fingerprint", "n_samples")

    def __init__(self, fields: dict, pending=(), *, local: Path | None = None):
        self._fields = dict(fields)
        self.pending = frozenset(pending)
        #: the model's local files (a folder or file), where known: only to explain a fingerprint mismatch
        self.local = local

    def __getattr__(self, name):
        fields = self.__dict__.get("_fields", {})
        if name in fields:
            return fields[name]
        raise AttributeError(name)

    def __eq__(self, other):
        return isinstance(other, RunIdentity) and other._fields == self._fields and other.pending == self.pending

    def __repr__(self) -> str:
        return f"RunIdentity({self._fields!r}, pending={sorted(self.pending)})"

    @property
    def complete(self) -> bool:
        """Whether every field is known (the model has been resolved and, where needed, loaded)."""
        return not self.pending

    def as_dict(self) -> dict:
        d = dict(self._fields)
        if isinstance(d.get("metrics"), tuple):
            d["metrics"] = list(d["metrics"])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "RunIdentity":
        return cls(d)

    def with_loaded(self, **values) -> "RunIdentity":
        """A copy with the fields only known after loading filled in."""
        local = values.pop("local", self.local)
        return RunIdentity({**self._fields, **values}, self.pending - set(values), local=local)

    def digest(self) -> str:
        """16 hex digits that change with any field (evaluation outputs record it, to match their results file)."""
        return hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True, default=str).encode()).hexdigest()[:16]

    def differences(self, recorded: dict, *, partial: bool = False) -> list[str]:
        """``"field: file X vs now Y"`` for each field that differs from ``recorded`` (a file's
        ``metadata["identity"]``). ``partial``: skip the pending fields. A field the file does not record counts as
        the option's ``legacy`` value where the option declares one (files written before the option existed)."""
        out = []
        for k, v in self.as_dict().items():
            if partial and k in self.pending:
                continue
            if k in recorded:
                old = recorded[k]
            else:
                legacy = option(k).legacy if k not in self.FIXED and k != "extra" and _known(k) else MISSING
                old = "(not recorded)" if legacy is MISSING else legacy
            if old != v:
                out.append(self._legacy_note(old, v) if k == "model_fingerprint" else f"{k}: file {old!r} vs now {v!r}")
        return out

    def _legacy_note(self, old, now) -> str:
        line = f"model_fingerprint: file {old!r} vs now {now!r}"
        try:
            legacy = legacy_fingerprint(self.local) if self.local is not None and isinstance(old, str) else None
        except OSError:
            legacy = None
        if legacy is not None and legacy == old:
            line += (" (the file's was taken by an older entropy-lens from 16 sampled blocks per file; this model "
                     "matches those blocks, but that cannot vouch for every byte: finish the run with that version, "
                     "or --overwrite)")
        return line

    def check(self, recorded: dict | None, path, *, partial: bool = False) -> None:
        """Raise :class:`IdentityMismatch` naming every difference from ``recorded``."""
        if recorded is None:
            raise IdentityMismatch(f"{path} records no run identity (written by an older entropy-lens), so it cannot "
                                   "be resumed safely; rerun with --overwrite")
        diff = self.differences(recorded, partial=partial)
        if diff:
            raise IdentityMismatch(f"cannot resume {path}: settings differ ({'; '.join(diff)}); "
                                   "use the same settings, or --overwrite to start again")


def _known(name: str) -> bool:
    from ..options import REGISTRY

    return name in REGISTRY


def model_label(name: str) -> str:
    """The model's name in file names and labels: the last path component."""
    return Path(str(name).rstrip("/")).name
