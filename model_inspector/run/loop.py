"""The profiling loop: preflight, identity checks, lock, batches, checkpoints, resume.

:func:`run_profiling` profiles a list of :class:`~model_inspector.experiments.Sample`:

1. *preflight*, before any weights load: the output is not a folder and its folder is writable (a probe write), an
   exclusive :class:`~model_inspector.storage.OutputLock` is taken, and the
   :class:`~model_inspector.run.config.RunIdentity` (resolved model and its fingerprint, dtype, device, decoding,
   metrics, budget, data fingerprint) is compared with any existing file or sidecar;
2. completed batches are appended every ``update_steps`` samples to the sidecar ``NAME.parts/`` (O(new rows) per
   checkpoint, each part recording the threads and library versions that made it); on SIGINT/SIGTERM, and on any
   exception (out of memory, a bug, a row with NaN metrics), the completed batches are saved first;
3. the rows complete, the results file is written once, atomically, verified and only then the sidecar removed
   (:func:`~.output.finalize`: one sequence, that ``--resume`` finishes from any point a kill left).

``resume=True`` continues from the sidecar (or a partial file) and yields exactly the file an uninterrupted run with
the same identity writes (each sampled prompt draws from its own stream seeded by the seed and its index; the thread
count the file recorded is used again unless ``threads`` is given). Any ``OSError`` while writing becomes
:class:`RunStorageError`, naming the path, with every completed checkpoint safe in the sidecar.
"""

from __future__ import annotations

import datetime as _dt
import platform
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import UserError
from ..results.layouts import read as read_results
from ..results.schema import FORMAT, FORMAT_VERSION, n_samples, profile_fields, token_strings
from ..storage import OutputLock, PartsStore, preflight_output, remove_stale_temporaries
from .batching import plan_batches
from .batchloop import BatchLoop, NonFiniteRow, RunAborted, _storage_errors
from .config import IdentityMismatch, RunConfig, RunIdentity, fingerprint_path
from .output import RunStorageError, count_nonfinite, provenance, remove_leftovers, write_results
from .output import finalize as finish_output

if TYPE_CHECKING:
    from ..experiments.base import Sample

__all__ = ["run_profiling", "RunStorageError", "RunAborted", "NonFiniteRow", "library_versions", "loaded_identity"]


def loaded_identity(identity: RunIdentity, cfg: RunConfig, mi) -> RunIdentity:
    """Fill the fields known once the model is loaded; a requested dtype/device that the loaded
    model does not have is an error."""
    dtype = str(mi.dtype).replace("torch.", "")
    device = mi.device.type
    for name, want, got in (("dtype", cfg.dtype, dtype), ("device", cfg.device, device)):
        if want is not None and want != got:
            raise IdentityMismatch(f"the model loaded as {name} {got}, not the requested {want}")
    fp = identity.model_fingerprint
    local = identity.local
    if fp is None:
        _, local = cfg.source()  # the files exist now (a converted GGUF, the hub's cache)
        fp = fingerprint_path(local) if local is not None else "(no local files)"
    return identity.with_loaded(dtype=dtype, device=device, model_fingerprint=fp, local=local)


def _torch_threads() -> int:
    import torch

    return int(torch.get_num_threads())


def library_versions() -> dict:
    import sklearn
    import torch
    import transformers

    from .. import __version__

    return {"entropy_lens": __version__, "torch": str(torch.__version__), "transformers": transformers.__version__,
            "numpy": np.__version__, "scikit-learn": sklearn.__version__, "python": platform.python_version()}


def _check_inputs(rows: dict, samples: Sequence[Sample], batch_size: int, path: Path) -> int:
    done = n_samples(rows)
    if done > len(samples):
        raise UserError(f"cannot resume {path}: it holds {done} samples but this run has only {len(samples)}")
    if rows.get("input", [])[:done] != [s.text for s in samples[:done]]:
        raise UserError(f"cannot resume {path}: its prompts differ from this run's (other data or order)")
    if done % batch_size and done != len(samples):
        raise UserError(f"cannot resume {path}: {done} samples is not a whole number of batches")
    return done


def _check_version(meta: dict, where) -> None:
    version = meta.get("format_version")
    if meta.get("format") == FORMAT and isinstance(version, int) and version < 4:
        raise UserError(f"{where} is in results format version {version}: files of format version < 4 cannot be "
                        "continued exactly (their batches were consecutive prompts sharing one random stream, with no "
                        "sample_index; version 4 gives each prompt its own seeded stream), so new rows would not "
                        "match the old ones; rerun with --overwrite")


def _existing(out_path: Path, store: PartsStore, identity: RunIdentity, *, resume: bool,
              overwrite: bool, trust_pickle: bool = False) -> tuple[dict, dict, str]:
    """``(rows so far, recorded metadata, where from)`` of an existing sidecar or file, after the identity check.
    ``where from``: ``"sidecar"``, ``"file"`` or ``""`` (nothing). (A complete file's leftover sidecar, after a kill
    between the final write and the sidecar's removal, was removed before: :func:`~.output.remove_leftovers`.)"""
    if overwrite:
        store.remove()
        if out_path.exists():
            out_path.unlink()
        return {}, {}, ""
    if store.dir.is_dir() and not store.exists():
        if store.parts():
            raise UserError(f"{store.dir} holds parts but no meta.json (an older run's removal was cut?); move it "
                            "aside, or rerun with --overwrite")
        store.remove()  # an empty folder
    if store.exists():
        meta = store.read_meta()
        if not resume:
            raise FileExistsError(f"an unfinished run of {out_path} exists ({store.dir}); pass --resume to continue "
                                  "it or --overwrite to start again")
        _check_version(meta, store.dir)
        identity.check(meta.get("identity"), out_path, partial=True)
        return store.read_rows(trust=trust_pickle), meta, "sidecar"
    if out_path.exists():
        if not resume:
            raise FileExistsError(existing_file_message(out_path, trust_pickle))
        state = read_results(out_path, trust=trust_pickle)  # any layout (see results.layouts)
        meta = dict(state.pop("metadata", None) or {})
        _check_version(meta, out_path)
        identity.check(meta.get("identity"), out_path, partial=True)
        return state, meta, "file"
    return {}, {}, ""


def existing_file_message(out_path: Path, trust_pickle: bool = False) -> str:
    """What to do with a results file that is already there (a complete one has nothing to resume)."""
    try:
        state = read_results(out_path, trust=trust_pickle)
    except UserError:
        return f"{out_path} exists and cannot be read; pass --overwrite to replace it (or choose another output)"
    meta = state.get("metadata") or {}
    n = n_samples(state)
    if meta.get("complete"):
        return (f"{out_path} is already complete ({n} samples): pass --overwrite to make it again, or choose another "
                "--results_dir / --out (--resume has nothing to add)")
    return f"{out_path} holds an unfinished run ({n} samples so far); pass --resume to continue it or --overwrite"


def run_profiling(
    samples: Sequence[Sample],
    cfg: RunConfig,
    out_path: str | Path,
    *,
    load_inspector: Callable[[], object],
    update_steps: int = 1000,
    resume: bool = False,
    overwrite: bool = False,
    label_fn: Callable[[Sample, dict], dict] | None = None,
    batch_label_fn: Callable | None = None,
    fields_fn: Callable | None = None,
    save: Callable[[Path, dict], None] | None = None,
    metadata: dict | None = None,
    progress: bool = True,
    shard: tuple[int, int] = (0, 1),
    finalize: bool = True,
    lock: bool = True,
    trust_pickle: bool = False,
    threads: int | None = None,
    keep_nonfinite: bool = False,
) -> dict:
    """Profile ``samples`` and write the results dict to ``out_path``.

    ``load_inspector()`` is called only once there is work to do (or an identity field needs the
    loaded model). ``label_fn(sample, fields)`` adds labels computed from the generation (e.g. MMLU
    ``correct``); ``batch_label_fn(inspector, samples, profile)`` labels a whole batch with the model at hand (a
    list of dicts; MMLU's log-likelihood grading). ``shard=(rank, world)``: run only the batches ``j`` with ``j % world == rank``
    (data-parallel processes; each keeps its own sidecar, merged by :func:`merge_shards`).
    ``fields_fn(profile, i)``: the per-sample fields of a profile row (default: :func:`profile_fields`).
    ``finalize=False`` leaves the rows in the sidecar (marked complete) instead of writing the
    file; ``save(path, state)`` overrides how it is written (default: :func:`write_results`, in the
    layout ``metadata["layout"]`` names). ``trust_pickle``: read an existing file or sidecar without the
    restricted unpickler (``--trust_pickle``). ``threads``: the CPU threads the user asked for (``None``: on a
    resume, the count the file recorded). ``keep_nonfinite``: keep rows whose metrics hold NaN/inf at a valid step
    (counted in ``metadata["n_nonfinite"]``) instead of stopping at the first (:class:`NonFiniteRow`). Returns the
    results dict (as written and verified on disk when finalised)."""
    out_path = Path(out_path)
    if update_steps is None or isinstance(update_steps, bool) or not isinstance(update_steps, (int, np.integer)) \
            or update_steps < 1:
        raise UserError(f"--update_steps must be a positive integer (got {update_steps!r})")
    if not samples:
        raise UserError("no samples to profile (all skipped or none requested)")
    preflight_output(out_path)
    identity = cfg.identity(samples)
    store = PartsStore(out_path)
    with (OutputLock(out_path) if lock else nullcontext()), _storage_errors(out_path, store, lambda: 0):
        remove_stale_temporaries(out_path)
        if not overwrite:
            remove_leftovers(out_path, shards=False, trust_pickle=trust_pickle)  # a finished file's sidecar
        rows, old_meta, source = _existing(out_path, store, identity, resume=resume, overwrite=overwrite,
                                           trust_pickle=trust_pickle)
        return _run(samples, cfg, out_path, store, identity, rows, old_meta, source, load_inspector=load_inspector,
                    update_steps=int(update_steps), label_fn=label_fn, batch_label_fn=batch_label_fn,
                    fields_fn=fields_fn or profile_fields,
                    save=save or write_results, metadata=metadata, progress=progress, shard=shard,
                    finalize=finalize, trust_pickle=trust_pickle, threads=threads, keep_nonfinite=keep_nonfinite)


def _use_threads(threads: int | None, old_meta: dict, store: PartsStore, resuming: bool) -> None:
    """Apply ``threads`` (asked for), else on a resume the thread count the rows so far were made with."""
    from ..threads import set_threads

    if threads is not None:
        if threads != _torch_threads():
            set_threads(threads)
        return
    if not resuming:
        return
    recorded = [i.get("threads") for i in store.part_infos() if isinstance(i.get("threads"), int)]
    n = recorded[-1] if recorded else old_meta.get("threads")
    if isinstance(n, int) and n >= 1 and n != _torch_threads():
        set_threads(n)
        print(f"using {n} CPU threads, as the run so far did (its numbers depend on it; --threads to choose)")


def _run(samples, cfg, out_path, store, identity, rows, old_meta, source, *, load_inspector, update_steps, label_fn,
         batch_label_fn, fields_fn, save, metadata, progress, shard, finalize, trust_pickle, threads, keep_nonfinite) -> dict:
    rank, world = shard
    expected = old_meta.get("n_rows")
    if old_meta.get("complete") and source == "sidecar" and isinstance(expected, int) and n_samples(rows) < expected:
        print(f"{store.dir} is marked complete but holds {n_samples(rows)} of its {expected} rows (parts were moved "
              "aside): profiling the missing ones")
        old_meta = {**old_meta, "complete": False}
    if old_meta.get("complete"):
        if not identity.complete:
            identity = loaded_identity(identity, cfg, load_inspector())
            identity.check(old_meta.get("identity"), out_path)
        if source == "file":  # a finished file: handed back as it is on disk
            return {**rows, "metadata": old_meta}
        state = {**rows, "metadata": dict(old_meta)}
        if not finalize:
            return state
        return finish_output(out_path, state, [store], save=save, trust_pickle=trust_pickle)  # rows complete: write

    versions = library_versions()
    meta = dict(old_meta)
    meta.update({"format": FORMAT, "format_version": FORMAT_VERSION, "config": cfg.as_dict(),
                 "metrics": {m.key: m.definition for m in cfg.metrics}, "versions": versions, **(metadata or {})})
    meta.setdefault("created", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    state = {**rows, "metadata": meta}
    mi = load_inspector()
    identity = loaded_identity(identity, cfg, mi)
    if old_meta:
        identity.check(old_meta.get("identity"), out_path)
    _use_threads(threads, old_meta, store, resuming=bool(n_samples(rows)))
    meta.update({"identity": identity.as_dict(), "model_id": getattr(mi.model.config, "_name_or_path", cfg.model),
                 "dtype": str(mi.dtype), "device": str(mi.device), "n_layers": mi.n_layers, "d_model": mi.d_model,
                 "d_vocab": mi.d_vocab, "prepend_bos_resolved": mi.prepend_bos(cfg.prepend_bos),
                 "threads": _torch_threads(), **mi.lens.precision_info()})
    # Policy for prompts longer than the model's context (prompt tokens + max_len): skipped and
    # counted, like the paper's length limits. The decision depends on the model alone, so a
    # resumed run skips the same prompts.
    texts = [s.text for s in samples]
    lengths = mi.prompt_lengths(texts, chat_template=cfg.chat_template, prepend_bos=cfg.prepend_bos)
    long = set(mi.too_long(texts, cfg.max_len, lengths=lengths))
    kept = [i for i in range(len(samples)) if i not in long]
    if long:
        print(f"{len(long)} prompts do not fit the context of {mi.context_length} tokens with "
              f"max_len={cfg.max_len}: skipped")
        if not kept:
            raise UserError("every prompt is longer than the model's context; lower --max_len or use shorter prompts")
    meta["n_skipped_context"] = len(long)
    meta["n_total"] = len(kept)
    meta["shard"] = [rank, world]
    # Batches of the kept prompts (positions in ``kept``), in the run's batch order; this process
    # takes batches rank, rank + world, ...; rows are stored in that order and put back in sample
    # order (``sample_index``) when the file is written.
    plan = plan_batches([lengths[i] for i in kept], cfg.batch_size, order=cfg.batch_order)
    mine = [np.asarray(kept)[b] for b in plan[rank::world]]
    own = [samples[i] for b in mine for i in b]
    meta["n_rows"] = len(own)
    done = _check_inputs(rows, own, cfg.batch_size, out_path) if n_samples(rows) else 0
    todo = [b for b, upto in zip(mine, np.cumsum([len(b) for b in mine])) if upto > done]
    meta["complete"] = False
    info = {"threads": _torch_threads(), "versions": versions}
    if not store.exists() or not store.parts():  # a fresh sidecar, or rows carried over from a partial file
        store.write_meta(meta)
        if n_samples(rows):
            store.append(rows, {"threads": None, "versions": None, "note": f"carried over from {out_path}"})
    loop = BatchLoop(cfg, samples, mi, store, state, own, info, update_steps, label_fn, fields_fn, keep_nonfinite,
                     lengths, batch_label_fn=batch_label_fn, snapshot=save if finalize else None)
    t0 = time.time()
    loop.go(todo, out_path, progress, done)
    with _storage_errors(out_path, store, loop.n_safe):
        loop.flush()
        meta["elapsed_s"] = meta.get("elapsed_s", 0) + time.time() - t0
        meta["token_strings"] = token_strings(mi.tokenizer, state)
        meta["complete"] = True
        meta["n_nonfinite"] = count_nonfinite(state)
        meta.update(provenance([store]))
        store.write_meta(meta)
        if finalize:
            return finish_output(out_path, state, [store], save=save, trust_pickle=trust_pickle)
    return state
