"""The profiling loop shared by the experiment scripts: batches, progress, checkpoints, resume.

``run_profiling`` profiles a list of :class:`~model_inspector.tasks.Sample` and keeps a results
dict (see :mod:`model_inspector.storage`). It writes the file atomically every ``update_steps``
samples and at the end; on SIGINT/SIGTERM it saves the completed batches and stops. With
``resume=True`` it continues a partial file and yields exactly the file an uninterrupted run with
the same settings writes (per-batch seeds depend only on the seed and the batch's first index).
"""

from __future__ import annotations

import datetime as _dt
import platform
import signal
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .architecture import BOS_POLICIES
from .metrics import parse_metrics
from .storage import FORMAT, FORMAT_VERSION, ResultsFileError, load_results, n_samples, save_results
from .tasks import Sample

__all__ = ["RunConfig", "RunInterrupted", "run_profiling", "library_versions", "model_label"]


class RunInterrupted(RuntimeError):
    """The run was stopped by a signal after saving what was complete."""


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

    def __post_init__(self):
        if not isinstance(self.max_len, int) or self.max_len < 1:
            raise ValueError(f"--max_len must be a positive integer (got {self.max_len})")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"--batch_size must be a positive integer (got {self.batch_size})")
        if self.prepend_bos not in BOS_POLICIES:
            raise ValueError(f"--prepend_bos must be one of {', '.join(BOS_POLICIES)} (got {self.prepend_bos!r})")
        if self.sample and not self.temperature > 0:
            raise ValueError(f"--temperature must be > 0 (got {self.temperature})")
        self.metrics = parse_metrics(self.metrics)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["metrics"] = [m.key for m in self.metrics]
        return d


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
    """Per-sample fields kept from row ``i`` of a Profile: every metric ``[T, L]``, tokens, text."""
    out = {k: v[i] for k, v in profile.metrics.items()}
    out["tokens"] = profile.token_ids[i]
    out["text"] = profile.texts[i]
    return out


@contextmanager
def _sigterm_as_interrupt():
    def handler(signum, frame):  # noqa: ARG001
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


def _check_config(state: dict, cfg: RunConfig, path: Path) -> None:
    meta = state.get("metadata") or {}
    old = meta.get("config")
    new = cfg.as_dict()
    if old is None:
        raise ResultsFileError(f"{path} has no run configuration in its metadata, so it cannot be resumed")
    diff = [k for k in new if old.get(k) != new[k]]
    if diff:
        detail = ", ".join(f"{k}: file {old.get(k)!r} vs now {new[k]!r}" for k in diff)
        raise ValueError(f"cannot resume {path}: settings differ ({detail}); use the same flags, or --overwrite")


def _check_inputs(state: dict, samples: Sequence[Sample], path: Path) -> int:
    done = n_samples(state)
    if done > len(samples):
        raise ValueError(f"cannot resume {path}: it holds {done} samples but this run has only {len(samples)}")
    if state.get("input", [])[:done] != [s.text for s in samples[:done]]:
        raise ValueError(f"cannot resume {path}: its prompts differ from this run's (other data or order)")
    if done % (state["metadata"]["config"]["batch_size"]) and done != len(samples):
        raise ValueError(f"cannot resume {path}: {done} samples is not a whole number of batches")
    return done


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
    save: Callable[[Path, dict], None] = save_results,
    load: Callable[[Path], dict] = load_results,
    metadata: dict | None = None,
    progress: bool = True,
    shard: tuple[int, int] = (0, 1),
) -> dict:
    """Profile ``samples`` and write the results dict to ``out_path``.

    ``load_inspector()`` is called only once there is work to do. ``label_fn(sample, fields)``
    adds labels computed from the generation (e.g. MMLU ``correct``). ``shard=(rank, world)``:
    run only the batches ``j`` with ``j % world == rank`` (data-parallel processes; each writes
    its own file, merged by :func:`merge_shards`). Returns the results dict."""
    out_path = Path(out_path)
    if update_steps is None or update_steps < 1:
        raise ValueError(f"--update_steps must be a positive integer (got {update_steps})")
    if not samples:
        raise ValueError("no samples to profile (all skipped or none requested)")
    state: dict = {}
    if out_path.exists() and resume:
        state = load(out_path)
        _check_config(state, cfg, out_path)
    elif out_path.exists() and not overwrite:
        raise FileExistsError(f"{out_path} exists; pass --resume to continue it or --overwrite to replace it")
    meta = dict(state.get("metadata") or {})
    meta.update({"format": FORMAT, "format_version": FORMAT_VERSION, "config": cfg.as_dict(),
                 "metrics": {m.key: m.definition for m in cfg.metrics}, "versions": library_versions(),
                 **(metadata or {})})
    meta.setdefault("created", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    state["metadata"] = meta
    if meta.get("complete") and resume:
        return state

    mi = load_inspector()
    meta.update({"model_id": getattr(mi.model.config, "_name_or_path", cfg.model), "dtype": str(mi.dtype),
                 "device": str(mi.device), "n_layers": mi.n_layers, "d_model": mi.d_model, "d_vocab": mi.d_vocab})
    # Policy for prompts longer than the model's context (prompt tokens + max_len): skipped and
    # counted, like the paper's length limits. The decision depends on the model alone, so a
    # resumed run skips the same prompts.
    meta["prepend_bos_resolved"] = mi.prepend_bos(cfg.prepend_bos)
    long = set(mi.too_long([s.text for s in samples], cfg.max_len, cfg.chat_template, cfg.prepend_bos))
    if long:
        print(f"{len(long)} prompts do not fit the context of {mi.context_length} tokens with max_len={cfg.max_len}: "
              "skipped")
        samples = [s for i, s in enumerate(samples) if i not in long]
        if not samples:
            raise ValueError("every prompt is longer than the model's context; lower --max_len or use shorter prompts")
    meta["n_skipped_context"] = len(long)
    meta["n_total"] = len(samples)
    rank, world = shard
    meta["shard"] = [rank, world]
    starts = [s for j, s in enumerate(range(0, len(samples), cfg.batch_size)) if j % world == rank]
    own = [samples[i] for s in starts for i in range(s, min(s + cfg.batch_size, len(samples)))]
    done = _check_inputs(state, own, out_path) if resume and n_samples(state) else 0
    starts = [s for s, upto in zip(starts, np.cumsum([min(cfg.batch_size, len(samples) - s) for s in starts]))
              if upto > done]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(own), initial=done, unit="sample", dynamic_ncols=True, smoothing=0.1)
    since_save = 0
    t0 = time.time()
    meta["complete"] = False
    try:
        with _sigterm_as_interrupt():
            for start in starts:
                batch = list(samples[start : start + cfg.batch_size])
                prof = mi.profile([s.text for s in batch], max_len=cfg.max_len, metrics=cfg.metrics,
                                  batch_size=len(batch), sample=cfg.sample, temperature=cfg.temperature,
                                  seed=cfg.seed, first_index=start, chat_template=cfg.chat_template,
                                  prepend_bos=cfg.prepend_bos,
                                  check_context=False)  # too long prompts were skipped above
                for i, s in enumerate(batch):
                    fields = fields_fn(prof, i)
                    labels = {"model": model_label(cfg.model), **s.labels}
                    if label_fn is not None:
                        labels.update(label_fn(s, fields))
                    row = {"input": s.text, **labels, **fields}
                    for k, v in row.items():
                        state.setdefault(k, []).append(v)
                since_save += len(batch)
                if bar is not None:
                    bar.update(len(batch))
                if since_save >= update_steps:
                    save(out_path, state)
                    since_save = 0
    except KeyboardInterrupt:
        meta["elapsed_s"] = meta.get("elapsed_s", 0) + time.time() - t0
        save(out_path, state)
        raise RunInterrupted(
            f"interrupted after {n_samples(state)} of {len(own)} samples; saved to {out_path}; "
            "continue with --resume"
        ) from None
    finally:
        if bar is not None:
            bar.close()
    meta["elapsed_s"] = meta.get("elapsed_s", 0) + time.time() - t0
    meta["complete"] = True
    save(out_path, state)
    return state


def shard_path(out_path: str | Path, rank: int, world: int) -> Path:
    """The file of process ``rank`` of ``world``: ``name.shard{rank}of{world}.ext`` beside ``out_path``."""
    p = Path(out_path)
    return p.with_name(f"{p.stem}.shard{rank}of{world}{p.suffix}")


def merge_shards(out_path: str | Path, world: int, batch_size: int, *, save=save_results, load=load_results) -> dict:
    """Interleave the shard files of ``world`` processes back into sample order (batch ``j`` came
    from shard ``j % world``), write ``out_path`` atomically and delete the shards. The result
    equals the file one process writes with the same settings (metadata aside)."""
    paths = [shard_path(out_path, r, world) for r in range(world)]
    parts = [load(p) for p in paths]
    incomplete = [str(p) for p, d in zip(paths, parts) if not d["metadata"].get("complete")]
    if incomplete:
        raise ValueError(f"cannot merge: shard(s) {', '.join(incomplete)} are incomplete; rerun with --resume")
    keys = [k for k in parts[0] if k != "metadata"]
    merged: dict = {k: [] for k in keys}
    pos = [0] * world
    sizes = [n_samples(d) for d in parts]
    j = 0
    while any(pos[r] < sizes[r] for r in range(world)):
        r = j % world
        take = min(batch_size, sizes[r] - pos[r])
        for k in keys:
            merged[k].extend(parts[r][k][pos[r] : pos[r] + take])
        pos[r] += take
        j += 1
    meta = dict(parts[0]["metadata"])
    meta.update({"shard": [0, 1], "n_processes": world, "complete": True,
                 "elapsed_s": max(d["metadata"].get("elapsed_s", 0) for d in parts)})
    merged["metadata"] = meta
    save(out_path, merged)
    for p in paths:
        p.unlink()
    return merged

