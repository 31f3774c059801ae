"""A run's output: the one finalisation sequence, the merge of data-parallel shards, and what a resume finds.

Finalisation is one state machine, the same for one process and for the merge of ``N`` shards:

1. the rows are complete in the sidecar(s) (``meta.json``: ``complete: true``);
2. the results file is written atomically (a temporary, then a rename), in sample order and in the layout its
   metadata names;
3. it is read back and verified (row count, ``complete``, run identity);
4. only then the sidecar(s) are removed, safely (each renamed to a tombstone, then deleted).

A kill at any point leaves a state that ``--resume`` recognises (:func:`remove_leftovers`, then the resume in
:mod:`model_inspector.run.loop`) and goes on from there: the
rows in a complete sidecar are written again (1-2), a complete file whose sidecar is still there (3-4) is the truth
and the sidecar is removed; stale temporaries and tombstones are cleaned under the output's lock
(:func:`clean_stale`). The named kill points (:data:`~model_inspector.storage.KILL_POINTS`) let the tests stop a
run at each step.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..errors import ResultsFileError, UserError
from ..results.layouts import read as read_layout
from ..results.layouts import write as write_layout
from ..results.schema import in_sample_order, n_samples, nonfinite
from ..storage import PartsStore, RunStorageError, kill_point, remove_stale_temporaries, watch_write
from .config import IdentityMismatch

__all__ = ["RunStorageError", "write_results", "shard_path", "shard_stores", "merge_shards", "finalize",
           "verify_written", "provenance", "clean_stale", "remove_shards", "remove_leftovers", "count_nonfinite"]


def write_results(path: Path, state: dict) -> None:
    """Write a run's state as its results file, in the layout its metadata names (see
    :mod:`model_inspector.results.layouts`)."""
    write_layout(path, state)


def shard_path(out_path: str | Path, rank: int, world: int) -> Path:
    """The file of process ``rank`` of ``world``: ``name.shard{rank}of{world}.ext`` beside ``out_path``."""
    p = Path(out_path)
    return p.with_name(f"{p.stem}.shard{rank}of{world}{p.suffix}")


def shard_stores(out_path: str | Path) -> dict[int, list[PartsStore]]:
    """The sidecars of data-parallel shards of ``out_path`` on disk, by number of processes."""
    p = Path(out_path)
    found: dict[int, list[PartsStore]] = {}
    for d in sorted(p.parent.glob(f"{p.stem}.shard*of*{p.suffix}.parts")) if p.parent.is_dir() else []:
        name = d.name[len(p.stem) + len(".shard"):-len(p.suffix + ".parts")]
        rank, _, world = name.partition("of")
        if rank.isdigit() and world.isdigit() and d.is_dir():
            found.setdefault(int(world), []).append(PartsStore(shard_path(p, int(rank), int(world))))
    return found


def clean_stale(out_path: str | Path) -> list[Path]:
    """Remove what killed writes left beside ``out_path`` and its shards (temporaries, probes, tombstones); call it
    under the output's lock."""
    p = Path(out_path)
    gone = remove_stale_temporaries(p)
    if p.parent.is_dir():
        pattern = re.compile(rf"\.?({re.escape(p.stem)}\.shard\d+of\d+{re.escape(p.suffix)})")
        names = {m.group(1) for q in p.parent.glob(f"*{p.stem}.shard*of*") if (m := pattern.match(q.name))}
        for name in sorted(names):
            gone += remove_stale_temporaries(p.with_name(name))
    return gone


def remove_shards(out_path: str | Path) -> None:
    """Remove every shard sidecar of ``out_path`` (each through its tombstone)."""
    for stores in shard_stores(out_path).values():
        for s in stores:
            s.remove()


# ------------------------------------------------------------------------------------------------ provenance
def provenance(stores: list[PartsStore]) -> dict:
    """What made the rows of ``stores`` (in row order), from each part's record: ``parts`` (runs of parts made alike,
    each ``{"rows", "threads", "versions"}`` plus ``rank`` for a shard; ``None`` where not recorded, e.g. rows carried
    over from a partial file), ``threads`` (the count, or a sorted list of counts when they differ) and ``versions``
    (a dict, or a list of the distinct dicts)."""
    runs: list[dict] = []
    for rank, store in enumerate(stores):
        for info in store.part_infos():
            entry = {"rows": int(info.get("rows", 0)), "threads": info.get("threads"), "versions": info.get("versions")}
            if len(stores) > 1:
                entry["rank"] = rank
            last = runs[-1] if runs else None
            if last is not None and {k: v for k, v in last.items() if k != "rows"} == {
                    k: v for k, v in entry.items() if k != "rows"}:
                last["rows"] += entry["rows"]
            else:
                runs.append(entry)
    threads = sorted({r["threads"] for r in runs if r["threads"] is not None})
    versions: list = []
    for r in runs:
        if r["versions"] is not None and r["versions"] not in versions:
            versions.append(r["versions"])
    out: dict = {"parts": runs}
    if threads:
        out["threads"] = threads[0] if len(threads) == 1 else threads
    if versions:
        out["versions"] = versions[0] if len(versions) == 1 else versions
    return out


def count_nonfinite(state: dict) -> int:
    """Rows whose metrics hold NaN or inf at a valid step (see :func:`~model_inspector.results.schema.nonfinite`)."""
    keys = [k for k in state if k != "metadata"]
    n = n_samples(state)
    return sum(bool(nonfinite({k: state[k][i] for k in keys})) for i in range(n))


# ------------------------------------------------------------------------------------------------ finalisation
def _same(a, b) -> bool:
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def verify_written(path: Path, *, n: int, identity: dict | None, trust_pickle: bool = False) -> dict:
    """Read ``path`` back and check it holds ``n`` rows, ``complete: true`` and ``identity``; returns what was read.
    Raises :class:`ResultsFileError` naming the difference."""
    back = read_layout(path, trust=trust_pickle)
    meta = back.get("metadata") or {}
    problems = []
    if n_samples(back) != n:
        problems.append(f"{n_samples(back)} rows instead of {n}")
    if meta.get("complete") is not True:
        problems.append("not marked complete")
    if identity is not None and not _same(meta.get("identity"), identity):
        problems.append("another run identity")
    if problems:
        raise ResultsFileError(f"{path} reads back wrong after its write ({'; '.join(problems)})")
    return back


def finalize(out_path: str | Path, state: dict, sidecars: list[PartsStore], *, save=None, merge: bool = False,
             trust_pickle: bool = False) -> dict:
    """Steps 2-4 of the sequence (the rows of ``state`` are complete in ``sidecars``): write ``out_path`` atomically,
    verify it, then remove ``sidecars``. Returns ``state`` (in sample order) as verified on disk. A verification that
    fails keeps the sidecars and raises :class:`ResultsFileError` saying where the rows are."""
    out_path = Path(out_path)
    state = in_sample_order(state)
    meta = state.get("metadata") or {}
    if meta.get("complete") is not True:
        raise UserError(f"internal: {out_path} finalised before its rows are complete")
    kill_point("before_final_write")
    with watch_write(out_path, "during_merge_write" if merge else "during_final_write"):
        (save or write_results)(out_path, state)
    kill_point("after_merge" if merge else "after_final_rename")
    try:
        verify_written(out_path, n=n_samples(state), identity=meta.get("identity"), trust_pickle=trust_pickle)
    except ResultsFileError as exc:
        where = ", ".join(str(s.dir) for s in sidecars) or "memory only"
        raise ResultsFileError(f"{exc}; the rows are still in {where}: rerun with --resume") from None
    for s in sidecars:
        s.remove()
    return state


def merge_shards(out_path: str | Path, world: int, *, save=None, trust_pickle: bool = False) -> dict:
    """Join the sidecars of ``world`` shards, sort the rows into sample order (``sample_index``), write
    ``out_path`` atomically, verify it and delete the sidecars (:func:`finalize`). Each shard's rows are read once.
    The result equals the file one process writes with the same settings (metadata aside). A merge cut short is
    finished by the next ``--resume``."""
    stores = [PartsStore(shard_path(out_path, r, world)) for r in range(world)]
    missing = [str(s.dir) for s in stores if not s.exists()]
    if missing:
        raise ResultsFileError(f"cannot merge: shard(s) {', '.join(missing)} are missing; rerun with --resume")
    metas = [s.read_meta() for s in stores]
    incomplete = [str(s.dir) for s, m in zip(stores, metas) if not m.get("complete")]
    if incomplete:
        raise UserError(f"cannot merge: shard(s) {', '.join(incomplete)} are incomplete; rerun with --resume "
                        f"with {world} processes")
    ids = {json.dumps(m.get("identity"), sort_keys=True) for m in metas}
    if len(ids) != 1:
        raise IdentityMismatch(f"cannot merge {out_path}: its shards were made with other settings; --overwrite")
    parts = [s.read_rows(trust=trust_pickle) for s in stores]
    merged: dict = {k: [v for d in parts for v in d[k]] for k in parts[0]}
    if "sample_index" not in merged:
        raise ResultsFileError(f"cannot merge {out_path}: its shards were written by an older entropy-lens (no "
                               "sample_index); --overwrite")
    meta = dict(metas[0])
    meta["token_strings"] = {k: v for m in metas for k, v in (m.get("token_strings") or {}).items()}
    meta.update({"shard": [0, 1], "n_processes": world, "complete": True,
                 "elapsed_s": max(m.get("elapsed_s", 0) for m in metas),
                 "n_nonfinite": sum(int(m.get("n_nonfinite", 0)) for m in metas)})
    meta.update(provenance(stores))
    merged["metadata"] = meta
    return finalize(out_path, merged, stores, save=save, merge=True, trust_pickle=trust_pickle)


def remove_leftovers(out_path: str | Path, *, shards: bool = True, trust_pickle: bool = False) -> list[Path]:
    """Remove the sidecars (``shards``: the shard sidecars too) that a finished ``out_path`` left behind: a kill after
    the final rename, or during the removal, leaves a complete sidecar beside the complete file it was written to
    (same run identity). Call under the output's lock; returns the folders removed."""
    out_path = Path(out_path)
    stores = [PartsStore(out_path)]
    if shards:
        stores += [s for group in shard_stores(out_path).values() for s in group]
    stores = [s for s in stores if s.exists()]
    if not stores or not out_path.is_file():
        return []
    try:
        meta = read_layout(out_path, trust=trust_pickle).get("metadata") or {}
    except UserError:
        return []  # not a readable file: not ours to judge here
    if meta.get("complete") is not True or not meta.get("identity"):
        return []
    gone = []
    for s in stores:
        try:
            smeta = s.read_meta()
        except ResultsFileError:
            continue
        if smeta.get("complete") and _same(smeta.get("identity"), meta["identity"]):
            s.remove()
            gone.append(s.dir)
    return gone
