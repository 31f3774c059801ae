"""Data-parallel runs on accelerate / torch.distributed: ``accelerate launch --multi_gpu
--num_processes N script.py ...`` or ``torchrun --nproc_per_node N script.py ...``.

Every process profiles the batches ``j`` with ``j % N == rank`` on its own device and writes its
shard file atomically (``--resume`` works per shard); after a barrier, rank 0 merges the shards into
the file one process would write (same order, same values for a fixed seed: per-batch seeds depend
only on the seed and the batch's first index). A single process needs no launcher.
"""

from __future__ import annotations

import os
from pathlib import Path

from .experiment import merge_shards, run_profiling, shard_path
from .storage import load_results, save_results

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


def run_distributed(samples, cfg, out_path, *, load_inspector, resume=False, overwrite=False, progress=True,
                    save=save_results, load=load_results, **kwargs) -> dict | None:
    """``run_profiling`` over all processes. Returns the merged results on rank 0 (or the single
    process), ``None`` on the other ranks. ``load_inspector(device)`` gets each process's device."""
    state = process_state()
    if state is None or state.num_processes == 1:
        return run_profiling(samples, cfg, out_path, load_inspector=lambda: load_inspector(None), resume=resume,
                             overwrite=overwrite, progress=progress, save=save, load=load, **kwargs)
    rank, world = state.process_index, state.num_processes
    out_path = Path(out_path)
    if out_path.exists() and not (resume or overwrite):
        raise FileExistsError(f"{out_path} exists; pass --resume to continue it or --overwrite to replace it")
    if out_path.exists() and resume:
        done = load(out_path)
        if done["metadata"].get("complete"):
            return done if rank == 0 else None
    mine = shard_path(out_path, rank, world)
    run_profiling(samples, cfg, mine, load_inspector=lambda: load_inspector(str(state.device)),
                  resume=resume, overwrite=overwrite or not resume, progress=progress and state.is_main_process,
                  shard=(rank, world), save=save, load=load, **kwargs)
    state.wait_for_everyone()
    merged = None
    if state.is_main_process:
        merged = merge_shards(out_path, world, cfg.batch_size, save=save, load=load)
    state.wait_for_everyone()
    return merged
