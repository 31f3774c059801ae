"""The profiling loop: preflight, identity checks, lock, batches, checkpoints, resume.

:func:`run_profiling` profiles a list of :class:`~model_inspector.experiments.Sample`:

1. *preflight*, before any weights load: the output is not a folder and its folder is writable (a probe write), an
   exclusive :class:`~model_inspector.storage.OutputLock` is taken, and the
   :class:`~model_inspector.run.config.RunIdentity` (resolved model and its fingerprint, dtype, device, decoding,
   metrics, budget, data fingerprint) is compared with any existing file or sidecar;
2. completed rows are appended every ``update_steps`` samples to the sidecar ``NAME.parts/`` (O(new rows) per
   checkpoint), and on SIGINT/SIGTERM the completed batches are saved first;
3. the results file is written once, atomically, at the end (also on interrupt, as a partial snapshot), and the
   sidecar removed (:mod:`.output`).

``resume=True`` continues from the sidecar (or a partial file) and yields exactly the file an uninterrupted run with
the same identity writes (each sampled prompt draws from its own stream seeded by the seed and its index). Any
``OSError`` while writing becomes :class:`RunStorageError`, naming the path, with every completed checkpoint safe in
the sidecar.
"""

from __future__ import annotations

import datetime as _dt
import platform
import signal
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import RunInterrupted, UserError
from ..results.layouts import read as read_results
from ..results.schema import FORMAT, FORMAT_VERSION, in_sample_order, n_samples, profile_fields, token_strings
from ..storage import OutputLock, PartsStore, preflight_output, remove_stale_temporaries
from .batching import plan_batches
from .config import IdentityMismatch, RunConfig, RunIdentity, fingerprint_path, model_label
from .output import RunStorageError, write_results

if TYPE_CHECKING:
    from ..experiments.base import Sample

__all__ = ["run_profiling", "RunStorageError", "library_versions", "loaded_identity"]


def loaded_identity(identity: RunIdentity, cfg: RunConfig, mi) -> RunIdentity:
    """Fill the fields known once the model is loaded; a requested dtype/device that the loaded
    model does not have is an error."""
    dtype = str(mi.dtype).replace("torch.", "")
    device = mi.device.type
    for name, want, got in (("dtype", cfg.dtype, dtype), ("device", cfg.device, device)):
        if want is not None and want != got:
            raise IdentityMismatch(f"the model loaded as {name} {got}, not the requested {want}")
    fp = identity.model_fingerprint
    if fp is None:
        _, local = cfg.source()  # the files exist now (a converted GGUF, the hub's cache)
        fp = fingerprint_path(local) if local is not None else "(no local files)"
    return identity.with_loaded(dtype=dtype, device=device, model_fingerprint=fp)


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


@contextmanager
def _sigterm_as_interrupt():
    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        old = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not in the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _check_inputs(rows: dict, samples: Sequence[Sample], batch_size: int, path: Path) -> int:
    done = n_samples(rows)
    if done > len(samples):
        raise UserError(f"cannot resume {path}: it holds {done} samples but this run has only {len(samples)}")
    if rows.get("input", [])[:done] != [s.text for s in samples[:done]]:
        raise UserError(f"cannot resume {path}: its prompts differ from this run's (other data or order)")
    if done % batch_size and done != len(samples):
        raise UserError(f"cannot resume {path}: {done} samples is not a whole number of batches")
    return done


@contextmanager
def _storage_errors(path: Path, store: PartsStore, n_done: Callable[[], int]):
    try:
        yield
    except OSError as exc:
        if isinstance(exc, RunStorageError):
            raise
        where = exc.filename or path
        raise RunStorageError(
            f"cannot write {where} ({exc.strerror or exc}); the {n_done()} samples completed before are safe in "
            f"{store.dir}: free space or fix permissions, then rerun with --resume") from None


def _existing(out_path: Path, store: PartsStore, identity: RunIdentity, *, resume: bool,
              overwrite: bool, trust_pickle: bool = False) -> tuple[dict, dict]:
    """``(rows so far, recorded metadata)`` of an existing sidecar or file, after the identity check."""
    if overwrite:
        store.remove()
        if out_path.exists():
            out_path.unlink()
        return {}, {}
    if store.exists():
        meta = store.read_meta()
        if not resume:
            raise FileExistsError(f"an unfinished run of {out_path} exists ({store.dir}); pass --resume to continue "
                                  "it or --overwrite to start again")
        identity.check(meta.get("identity"), out_path, partial=True)
        return store.read_rows(trust=trust_pickle), meta
    if out_path.exists():
        if not resume:
            raise FileExistsError(f"{out_path} exists; pass --resume to continue it or --overwrite to replace it")
        state = read_results(out_path, trust=trust_pickle)  # any layout (see results.layouts)
        meta = dict(state.pop("metadata", None) or {})
        identity.check(meta.get("identity"), out_path, partial=True)
        return state, meta
    return {}, {}


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
    restricted unpickler (``--trust_pickle``). Returns the results dict."""
    out_path = Path(out_path)
    if update_steps is None or update_steps < 1:
        raise UserError(f"--update_steps must be a positive integer (got {update_steps})")
    if not samples:
        raise UserError("no samples to profile (all skipped or none requested)")
    preflight_output(out_path)
    identity = cfg.identity(samples)
    store = PartsStore(out_path)
    with (OutputLock(out_path) if lock else nullcontext()), _storage_errors(out_path, store, lambda: 0):
        remove_stale_temporaries(out_path)
        rows, old_meta = _existing(out_path, store, identity, resume=resume, overwrite=overwrite,
                                   trust_pickle=trust_pickle)
        return _run(samples, cfg, out_path, store, identity, rows, old_meta, load_inspector=load_inspector,
                    update_steps=update_steps, label_fn=label_fn, batch_label_fn=batch_label_fn,
                    fields_fn=fields_fn or profile_fields,
                    save=save or write_results,
                    metadata=metadata, progress=progress, shard=shard, finalize=finalize)


def _run(samples, cfg, out_path, store, identity, rows, old_meta, *, load_inspector, update_steps, label_fn,
         batch_label_fn, fields_fn, save, metadata, progress, shard, finalize) -> dict:
    meta = dict(old_meta)
    meta.update({"format": FORMAT, "format_version": FORMAT_VERSION, "config": cfg.as_dict(),
                 "metrics": {m.key: m.definition for m in cfg.metrics}, "versions": library_versions(),
                 **(metadata or {})})
    meta.setdefault("created", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    rank, world = shard
    state = {**rows, "metadata": meta}
    if old_meta.get("complete") and identity.complete:
        meta["identity"] = identity.as_dict()
        if finalize and store.exists():  # a finished sidecar whose final write was cut: finish it
            state = in_sample_order(state)
            save(out_path, state)
            store.remove()
        return state

    mi = load_inspector()
    identity = loaded_identity(identity, cfg, mi)
    if old_meta:
        identity.check(old_meta.get("identity"), out_path)
    meta.update({"identity": identity.as_dict(), "model_id": getattr(mi.model.config, "_name_or_path", cfg.model),
                 "dtype": str(mi.dtype), "device": str(mi.device), "n_layers": mi.n_layers, "d_model": mi.d_model,
                 "d_vocab": mi.d_vocab, "prepend_bos_resolved": mi.prepend_bos(cfg.prepend_bos),
                 "threads": _torch_threads()})
    if old_meta.get("complete"):
        return state
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
    decode = cfg.decode
    # Batches of the kept prompts (positions in ``kept``), in the run's batch order; this process
    # takes batches rank, rank + world, ...; rows are stored in that order and put back in sample
    # order (``sample_index``) when the file is written.
    plan = plan_batches([lengths[i] for i in kept], cfg.batch_size, order=cfg.batch_order)
    mine = [np.asarray(kept)[b] for b in plan[rank::world]]
    own = [samples[i] for b in mine for i in b]
    done = _check_inputs(rows, own, cfg.batch_size, out_path) if n_samples(rows) else 0
    todo = [b for b, upto in zip(mine, np.cumsum([len(b) for b in mine])) if upto > done]
    meta["complete"] = False
    if not store.exists() or not store.parts():  # a fresh sidecar, or rows carried over from a partial file
        store.write_meta(meta)
        if n_samples(rows):
            store.append(rows)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(own), initial=done, unit="sample", dynamic_ncols=True, smoothing=0.1)
    pending: dict = {}
    t0 = time.time()

    def flush():
        if pending:
            store.append(pending)
            for k, v in pending.items():
                state.setdefault(k, []).extend(v)
            pending.clear()

    def n_safe():
        return n_samples({k: v for k, v in state.items() if k != "metadata"})

    try:
        with _sigterm_as_interrupt(), _storage_errors(out_path, store, n_safe):
            for idx in todo:
                batch = [samples[i] for i in idx]
                prof = mi.profile([s.text for s in batch], decode, metrics=cfg.metrics, batch_size=len(batch),
                                  indices=idx, batch_order="given", check_context=False)  # too long: skipped above
                batch_labels = batch_label_fn(mi, batch, prof) if batch_label_fn is not None else None
                for i, s in enumerate(batch):
                    fields = fields_fn(prof, i)
                    labels = {"model": model_label(cfg.model), **s.labels}
                    if label_fn is not None:
                        labels.update(label_fn(s, fields))
                    if batch_labels is not None:  # grading with the model has the last word
                        labels.update(batch_labels[i])
                    row = {"input": s.text, "sample_index": int(idx[i]), "prompt_tokens": int(lengths[idx[i]]),
                           **labels, **fields}
                    for k, v in row.items():
                        pending.setdefault(k, []).append(v)
                if bar is not None:
                    bar.update(len(batch))
                if n_samples(pending) >= update_steps:
                    flush()
    except KeyboardInterrupt:
        with _storage_errors(out_path, store, n_safe):
            flush()
            meta["elapsed_s"] = meta.get("elapsed_s", 0) + time.time() - t0
            store.write_meta(meta)
            if finalize:
                save(out_path, state)  # a partial snapshot (complete: False); the sidecar stays the truth
        raise RunInterrupted(
            f"interrupted after {n_safe()} of {len(own)} samples; saved to {out_path if finalize else store.dir}; "
            "continue with --resume"
        ) from None
    finally:
        if bar is not None:
            bar.close()
    with _storage_errors(out_path, store, n_safe):
        flush()
        meta["elapsed_s"] = meta.get("elapsed_s", 0) + time.time() - t0
        meta["token_strings"] = token_strings(mi.tokenizer, state)
        meta["complete"] = True
        store.write_meta(meta)
        if finalize:
            state = in_sample_order(state)
            save(out_path, state)
            store.remove()
    return state


