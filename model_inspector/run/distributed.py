"""Data-parallel runs on accelerate / torch.distributed: ``accelerate launch --multi_gpu
--num_processes N script.py ...`` or ``torchrun --nproc_per_node N script.py ...``.

Rank 0 holds the output's lock for the whole run (a second run on the same output is refused on
every rank). Every process profiles the batches ``j`` with ``j % N == rank`` on its own device into
its own sidecar (``NAME.shard{r}of{N}.pkl.parts/``; ``--resume`` works per shard); after a barrier,
rank 0 merges the sidecars into the file one process would write (same order, same values for a
fixed seed: each sampled prompt draws from its own stream, seeded by the seed and its index) and removes them.
A complete file is handed back on ``--resume`` only when its run identity matches. A single
process needs no launcher; it finishes the merge of a data-parallel run that was cut short.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import UserError
from ..results.layouts import read as read_results
from ..storage import OutputLock, OutputLockedError, preflight_output
from .loop import existing_file_message, run_profiling
from .output import clean_stale, merge_shards, remove_leftovers, remove_shards, shard_path, shard_stores

__all__ = ["process_state", "run_distributed"]


def process_state():
    """accelerate's ``PartialState`` when launched with several processes, else ``None``."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    import torch
    from accelerate import PartialState

    # cpu=True makes accelerate set up gloo across CPU processes (torchrun, or accelerate launch
    # --multi_gpu on a machine without GPUs); with GPUs each process takes its own GPU (nccl).
    return PartialState(cpu=not torch.cuda.is_available())


def _finish_cut_merge(samples, cfg, out_path: Path, *, resume: bool, overwrite: bool, save,
                      trust_pickle: bool = False) -> dict | None:
    """A single process meeting the sidecars of a data-parallel run of the same output (after
    :func:`remove_leftovers`: the shards a merged file left behind are gone)."""
    found = shard_stores(out_path)
    if not found or overwrite:
        remove_shards(out_path)
        return None
    world, stores = max(found.items())
    if not resume:
        raise FileExistsError(f"an unfinished {world}-process run of {out_path} exists; pass --resume to finish it "
                              "or --overwrite to start again")
    complete = len(stores) == world and all(s.read_meta().get("complete") for s in stores)
    if not complete:
        raise UserError(f"{out_path} has unfinished shards of a {world}-process run; resume it with {world} "
                         f"processes (torchrun --nproc_per_node {world} ...) or pass --overwrite")
    identity = cfg.identity(samples)
    for s in stores:
        identity.check(s.read_meta().get("identity"), s.dir, partial=True)
    return merge_shards(out_path, world, save=save, trust_pickle=trust_pickle)


def run_distributed(samples, cfg, out_path, *, load_inspector, resume=False, overwrite=False, progress=True,
                    save=None, trust_pickle: bool = False, **kwargs) -> dict | None:
    """``run_profiling`` over all processes. Returns the merged results on rank 0 (or the single
    process), ``None`` on the other ranks. ``load_inspector(device)`` gets each process's device."""
    out_path = Path(out_path)
    state = process_state()
    if state is None or state.num_processes == 1:
        preflight_output(out_path)
        with OutputLock(out_path):
            clean_stale(out_path)
            remove_leftovers(out_path, trust_pickle=trust_pickle)
            merged = _finish_cut_merge(samples, cfg, out_path, resume=resume, overwrite=overwrite, save=save,
                                       trust_pickle=trust_pickle)
            if merged is not None:
                return merged
            return run_profiling(samples, cfg, out_path, load_inspector=lambda: load_inspector(None), resume=resume,
                                 overwrite=overwrite, progress=progress, save=save, lock=False,
                                 trust_pickle=trust_pickle, **kwargs)
    from accelerate.utils import broadcast_object_list

    rank, world = state.process_index, state.num_processes
    lock, problem = None, [None]
    if state.is_main_process:
        try:
            preflight_output(out_path)
            lock = OutputLock(out_path).acquire()
            clean_stale(out_path)
            remove_leftovers(out_path, trust_pickle=trust_pickle)
        except (OSError, OutputLockedError) as exc:
            problem = [f"{type(exc).__name__}: {exc}"]
    broadcast_object_list(problem, from_process=0)
    if problem[0] is not None:  # every rank stops with rank 0's reason
        kind, _, msg = problem[0].partition(": ")
        raise (OutputLockedError if kind == "OutputLockedError" else OSError)(msg)
    try:
        if out_path.exists() and not (resume or overwrite):
            raise FileExistsError(existing_file_message(out_path, trust_pickle))
        if out_path.exists() and resume:
            done = read_results(out_path, trust=trust_pickle)
            meta = done.get("metadata") or {}
            identity = cfg.identity(samples)
            identity.check(meta.get("identity"), out_path, partial=True)
            if meta.get("complete"):
                return done if rank == 0 else None
        mine = shard_path(out_path, rank, world)
        run_profiling(samples, cfg, mine, load_inspector=lambda: load_inspector(str(state.device)),
                      resume=resume, overwrite=overwrite, progress=progress and state.is_main_process,
                      shard=(rank, world), save=save, finalize=False, lock=False,  # rank 0 holds the lock
                      trust_pickle=trust_pickle, **kwargs)
        state.wait_for_everyone()
        if not state.is_main_process:
            return None
        return merge_shards(out_path, world, save=save, trust_pickle=trust_pickle)
    finally:
        if lock is not None:
            lock.release()
