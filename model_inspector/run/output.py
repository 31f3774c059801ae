"""A run's output: the final write, and the merge of data-parallel shards.

A single process writes ``NAME.pkl`` once its rows are complete (in sample order, in the layout its metadata names),
then removes its sidecar. A data-parallel run's processes each leave a complete sidecar
``NAME.shard{r}of{N}.pkl.parts/``; :func:`merge_shards` joins them into the file one process writes.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import ResultsFileError, UserError
from ..results.layouts import write as write_layout
from ..results.schema import in_sample_order
from ..storage import PartsStore, RunStorageError
from .config import IdentityMismatch

__all__ = ["RunStorageError", "write_results", "shard_path", "shard_stores", "merge_shards"]

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
        if rank.isdigit() and world.isdigit():
            found.setdefault(int(world), []).append(PartsStore(shard_path(p, int(rank), int(world))))
    return found


def merge_shards(out_path: str | Path, world: int, *, save=None, trust_pickle: bool = False) -> dict:
    """Join the sidecars of ``world`` shards, sort the rows into sample order (``sample_index``), write
    ``out_path`` atomically and delete the sidecars. Each shard's rows are read once. The result
    equals the file one process writes with the same settings (metadata aside). A merge cut short is
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
                 "elapsed_s": max(m.get("elapsed_s", 0) for m in metas)})
    merged["metadata"] = meta
    merged = in_sample_order(merged)
    (save or write_results)(out_path, merged)
    for s in stores:
        s.remove()
    return merged
