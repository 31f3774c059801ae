"""The profiling loop shared by the experiment scripts: identity, lock, batches, checkpoints, resume.

``run_profiling`` profiles a list of :class:`~model_inspector.tasks.Sample`:

1. *preflight*, before any weights load: the output is not a folder and its folder is writable (a
   probe write), an exclusive :class:`~model_inspector.storage.OutputLock` is taken, and the
   :class:`~model_inspector.identity.RunIdentity` (resolved model and its fingerprint, dtype, device,
   decoding, metrics, budget, data fingerprint) is compared with any existing file or sidecar;
2. completed rows are appended every ``update_steps`` samples to the sidecar ``NAME.parts/``
   (O(new rows) per checkpoint), and on SIGINT/SIGTERM the completed batches are saved first;
3. the results file is written once, atomically, at the end (also on interrupt, as a partial
   snapshot), and the sidecar removed.

``resume=True`` continues from the sidecar (or a partial file) and yields exactly the file an
uninterrupted run with the same identity writes (per-batch seeds depend only on the seed and the
batch's first index). Any ``OSError`` while writing becomes :class:`RunStorageError`, naming the
path, with every completed checkpoint safe in the sidecar.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import signal
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .batching import BATCH_ORDERS, plan_batches
from .decoding import DecodeConfig
from .errors import RunInterrupted, UserError
from .identity import IdentityMismatch, RunIdentity, fingerprint_path, fingerprint_samples
from .metrics import parse_metrics
from .results import Results
from .storage import (
    FORMAT,
    FORMAT_VERSION,
    OutputLock,
    PartsStore,
    ResultsFileError,
    in_sample_order,
    load_results,
    n_samples,
    remove_stale_temporaries,
)
from .tasks import Sample

__all__ = ["RunConfig", "RunInterrupted", "RunStorageError", "run_profiling", "library_versions", "model_label",
           "preflight_output", "merge_shards", "shard_path"]


class RunStorageError(OSError):
    """Writing a run's output failed (disk full, permissions...); the message names the path and what is safe."""


@dataclass
class RunConfig:
    """Everything that determines a run's numbers (compared on ``--resume``)."""

    model: str
    dataset: str
    max_len: int
    metrics: tuple = ("shannon",)
    batch_size: int = 8
    sample: bool = False
    temperature: float = 1.0
    seed: int = 0
    chat_template: bool = False
    prepend_bos: str = "auto"
    extra: dict = field(default_factory=dict)
    #: requested dtype name (``float32``...) and device type (``cpu``, ``cuda``...); ``None``: as loaded
    dtype: str | None = None
    device: str | None = None
    #: the lens's vocabulary-chunk budget (MiB) and compile path: they change the summation order
    budget_mb: float = 256
    compile: bool = False
    #: revision of a hub model (``None``: main)
    revision: str | None = None
    #: top lens tokens kept per generated token and layer (``top_ids`` / ``top_probs`` columns; 0: none)
    keep_top_tokens: int = 0
    #: which prompts share a batch (:data:`~model_inspector.batching.BATCH_ORDERS`): ``length`` batches
    #: prompts of similar token length (less padding), ``given`` consecutive ones
    batch_order: str = "length"

    def __post_init__(self):
        if not isinstance(self.max_len, int) or self.max_len < 1:
            raise UserError(f"--max_len must be a positive integer (got {self.max_len})")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise UserError(f"--batch_size must be a positive integer (got {self.batch_size})")
        if self.batch_order not in BATCH_ORDERS:
            raise UserError(f"--batch_order must be one of {', '.join(BATCH_ORDERS)} (got {self.batch_order!r})")
        self.metrics = parse_metrics(self.metrics)
        self.decode  # validates the decoding settings once

    def as_dict(self) -> dict:
        d = asdict(self)
        d["metrics"] = [m.key for m in self.metrics]
        return d

    @property
    def decode(self) -> DecodeConfig:
        """The run's decoding, as one object (validated when the config is made)."""
        return DecodeConfig(max_len=self.max_len, sample=self.sample, temperature=self.temperature, seed=self.seed,
                            chat_template=self.chat_template, prepend_bos=self.prepend_bos,
                            keep_top_tokens=self.keep_top_tokens)

    def identity(self, samples: Sequence[Sample]) -> RunIdentity:
        """The run identity known before loading: the model is resolved and fingerprinted from its
        files where they exist (``None`` until then)."""
        from . import loading as model_manager

        ref, local = model_manager.model_source(self.model, self.revision)
        return RunIdentity(
            model=ref, model_fingerprint=fingerprint_path(local) if local is not None else None,
            dtype=self.dtype, device=self.device, dataset=self.dataset, data_fingerprint=fingerprint_samples(samples),
            n_samples=len(samples), max_len=self.max_len, metrics=tuple(m.key for m in self.metrics),
            batch_size=self.batch_size, sample=self.sample, temperature=self.temperature if self.sample else None,
            seed=self.seed, chat_template=self.chat_template, prepend_bos=self.prepend_bos,
            budget_mb=float(self.budget_mb), compile=bool(self.compile), keep_top_tokens=int(self.keep_top_tokens),
            batch_order=self.batch_order, extra=json.dumps(self.extra, sort_keys=True, default=str))


def loaded_identity(identity: RunIdentity, cfg: RunConfig, mi) -> RunIdentity:
    """Fill the fields known once the model is loaded; a requested dtype/device that the loaded
    model does not have is an error."""
    from . import loading as model_manager

    dtype = str(mi.dtype).replace("torch.", "")
    device = mi.device.type
    for name, want, got in (("dtype", cfg.dtype, dtype), ("device", cfg.device, device)):
        if want is not None and want != got:
            raise IdentityMismatch(f"the model loaded as {name} {got}, not the requested {want}")
    fp = identity.model_fingerprint
    if fp is None:
        _, local = model_manager.model_source(cfg.model, cfg.revision)
        fp = fingerprint_path(local) if local is not None else "(no local files)"
    return identity.with_loaded(dtype=dtype, device=device, model_fingerprint=fp)


def _torch_threads() -> int:
    import torch

    return int(torch.get_num_threads())


def preflight_output(path: str | Path) -> Path:
    """Check, before any work, that ``path`` can be written: not a folder, its folder creatable and
    writable (a probe file is written and removed). Raises :class:`RunStorageError` naming the path."""
    p = Path(path)
    if p.is_dir():
        raise RunStorageError(f"the output {p} is a folder; give a file name (or another --results_dir)")
    parent = p.parent
    if parent.exists() and not parent.is_dir():
        raise RunStorageError(f"the output folder {parent} is a file; pass a folder (--results_dir / --out / --out_dir)")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".{p.name}.probe.", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise RunStorageError(f"cannot write in {parent} ({exc.strerror or exc}); choose a writable --results_dir "
                              "/ --out, or fix its permissions") from None
    return p


def model_label(name: str) -> str:
    """The model's name in file names and labels: the last path component."""
    return Path(str(name).rstrip("/")).name


def library_versions() -> dict:
    import sklearn
    import torch
    import transformers

    from . import __version__

    return {"entropy_lens": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "numpy": np.__version__, "scikit-learn": sklearn.__version__, "python": platform.python_version()}


def default_fields(profile, i: int) -> dict:
    """Per-sample fields kept from row ``i`` of a Profile: every metric ``[T, L]``, tokens, text and,
    when kept, the top lens tokens: ``top_ids`` int32 ``[T, L, K]`` and ``top_probs`` float16 ``[T, L, K]``."""
    out = {k: v[i] for k, v in profile.metrics.items()}
    out["tokens"] = profile.token_ids[i]
    out["text"] = profile.texts[i]
    if profile.top_ids is not None:
        out["top_ids"] = profile.top_ids[i].astype(np.int32)
        out["top_probs"] = np.exp(profile.top_logprobs[i]).astype(np.float16)
    return out


def token_strings(tokenizer, state: dict) -> dict:
    """``{str(id): text}`` for every id in the ``tokens`` and ``top_ids`` columns (so that a reader
    of the file, the explorer say, needs no tokenizer)."""
    ids: set = set()
    for key in ("tokens", "top_ids"):
        for arr in state.get(key, []):
            ids.update(int(t) for t in np.unique(arr) if t >= 0)
    return {str(t): tokenizer.decode([t]) for t in sorted(ids)}


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
              overwrite: bool) -> tuple[dict, dict]:
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
        return store.read_rows(), meta
    if out_path.exists():
        if not resume:
            raise FileExistsError(f"{out_path} exists; pass --resume to continue it or --overwrite to replace it")
        state = load_results(out_path)  # either layout (see Results.to_pickle)
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
    fields_fn: Callable = default_fields,
    save: Callable[[Path, dict], None] | None = None,
    metadata: dict | None = None,
    progress: bool = True,
    shard: tuple[int, int] = (0, 1),
    finalize: bool = True,
    lock: bool = True,
) -> dict:
    """Profile ``samples`` and write the results dict to ``out_path``.

    ``load_inspector()`` is called only once there is work to do (or an identity field needs the
    loaded model). ``label_fn(sample, fields)`` adds labels computed from the generation (e.g. MMLU
    ``correct``). ``shard=(rank, world)``: run only the batches ``j`` with ``j % world == rank``
    (data-parallel processes; each keeps its own sidecar, merged by :func:`merge_shards`).
    ``finalize=False`` leaves the rows in the sidecar (marked complete) instead of writing the
    file; ``save(path, state)`` overrides how it is written (default: :func:`write_results`, in the
    layout ``metadata["layout"]`` names). Returns the results dict."""
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
        rows, old_meta = _existing(out_path, store, identity, resume=resume, overwrite=overwrite)
        return _run(samples, cfg, out_path, store, identity, rows, old_meta, load_inspector=load_inspector,
                    update_steps=update_steps, label_fn=label_fn, fields_fn=fields_fn, save=save or write_results,
                    metadata=metadata, progress=progress, shard=shard, finalize=finalize)


def _run(samples, cfg, out_path, store, identity, rows, old_meta, *, load_inspector, update_steps, label_fn,
         fields_fn, save, metadata, progress, shard, finalize) -> dict:
    meta = dict(old_meta)
    meta.update({"format": FORMAT, "format_version": FORMAT_VERSION, "config": cfg.as_dict(),
                 "metrics": {m.key: m.definition for m in cfg.metrics}, "versions": library_versions(),
                 **(metadata or {})})
    meta.setdefault("created", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    rank, world = shard
    state = {**rows, "metadata": meta}
    if old_meta.get("complete") and None not in identity.as_dict().values():
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
                for i, s in enumerate(batch):
                    fields = fields_fn(prof, i)
                    labels = {"model": model_label(cfg.model), **s.labels}
                    if label_fn is not None:
                        labels.update(label_fn(s, fields))
                    for k, v in {"input": s.text, "sample_index": int(idx[i]), **labels, **fields}.items():
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


def write_results(path: Path, state: dict) -> None:
    """Write a run's state as its results file, in the layout its metadata names (see :class:`Results`)."""
    Results.from_dict(state).to_pickle(path)


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


def merge_shards(out_path: str | Path, world: int, *, save=None) -> dict:
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
    parts = [s.read_rows() for s in stores]
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
