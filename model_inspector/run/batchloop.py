"""The batches of one run: whole batches only, checkpoints every ``update_steps`` samples, and what an interrupt or an
exception leaves (the finished batches saved first, then one line saying how many are safe and how to resume; a bug
keeps its traceback after that line)."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from pathlib import Path

from ..errors import RunInterrupted, UserError
from ..results.schema import n_samples, nonfinite
from ..storage import PartsStore, RunStorageError
from .config import model_label

__all__ = ["RunAborted", "NonFiniteRow", "BatchLoop"]


class RunAborted(UserError):
    """The run stopped on an error it can name (out of memory, a row with NaN metrics...) after saving the completed
    batches; the message says how many are safe and how to go on."""


class NonFiniteRow(RunAborted):
    """A generated row has NaN or inf metrics at a valid step (the message names the prompt)."""


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


@contextmanager
def _storage_errors(path: Path, store: PartsStore, n_done: Callable[[], int]):
    try:
        yield
    except OSError as exc:
        if isinstance(exc, RunStorageError) or (isinstance(exc, FileExistsError) and exc.filename is None):
            raise  # already said; or "the file exists: --resume or --overwrite" (no storage failure)
        where = exc.filename or path
        raise RunStorageError(
            f"cannot write {where} ({exc.strerror or exc}); the {n_done()} samples completed before are safe in "
            f"{store.dir}: free space or fix permissions, then rerun with --resume") from None


class BatchLoop:
    """The batches of one run: each batch's rows are kept whole (a resume continues at a batch boundary) and
    appended to the sidecar every ``update_steps`` samples; an interrupt or an exception saves them first."""

    def __init__(self, cfg, samples, mi, store, state, own, info, update_steps, label_fn, fields_fn, keep_nonfinite,
                 lengths, batch_label_fn=None, snapshot=None):
        self.cfg, self.samples, self.mi, self.store, self.state, self.own = cfg, samples, mi, store, state, own
        self.info, self.update_steps, self.label_fn, self.fields_fn = info, update_steps, label_fn, fields_fn
        self.keep_nonfinite, self.batch_label_fn = keep_nonfinite, batch_label_fn
        #: tokens per prompt (by sample position), recorded as ``prompt_tokens``
        self.lengths = lengths
        self.pending: dict = {}
        #: ``save`` of a run that writes its file: an interrupt leaves a partial snapshot there too
        self.snapshot = snapshot

    def n_safe(self) -> int:
        return n_samples(self.state)  # counts the rows, never the metadata

    def flush(self) -> None:
        if self.pending:
            self.store.append(self.pending, self.info)
            for k, v in self.pending.items():
                self.state.setdefault(k, []).extend(v)
            self.pending.clear()

    def batch_rows(self, idx) -> dict:
        cfg = self.cfg
        batch = [self.samples[i] for i in idx]
        meta = self.state["metadata"]
        # a reduced-precision lens measures its deviation from fp32 on the run's first batch, recorded once
        measure = self.mi.lens.lens_precision != "fp32" and "lens_precision_deviation" not in meta
        with self.mi.lens.measure_deviation() if measure else nullcontext() as deviation:
            prof = self.mi.profile([s.text for s in batch], cfg.decode, metrics=cfg.metrics, batch_size=len(batch),
                                   indices=idx, batch_order="given", check_context=False)  # too long: skipped before
        if measure:
            print(deviation.describe())
            meta["lens_precision_deviation"] = deviation.as_dict()
        batch_labels = self.batch_label_fn(self.mi, batch, prof) if self.batch_label_fn is not None else None
        out: dict = {}
        for i, s in enumerate(batch):
            fields = self.fields_fn(prof, i)
            bad = nonfinite(fields)
            if bad and not self.keep_nonfinite:
                what = ", ".join(f"{k}: {n} value(s)" for k, n in bad.items())
                raise NonFiniteRow(
                    f"sample_index {int(idx[i])} ({s.text[:40]!r}) has NaN or inf metrics at generated steps ({what})"
                    "; the model yields non-finite numbers for this prompt: check its weights or dtype, or pass "
                    "--keep_nonfinite to keep and count such rows")
            labels = {"model": model_label(cfg.model), **s.labels}
            if self.label_fn is not None:
                labels.update(self.label_fn(s, fields))
            if batch_labels is not None:  # grading with the model has the last word
                labels.update(batch_labels[i])
            for k, v in {"input": s.text, "sample_index": int(idx[i]), "prompt_tokens": int(self.lengths[idx[i]]),
                         **labels, **fields}.items():
                out.setdefault(k, []).append(v)
        return out

    def save_progress(self) -> str:
        """Append the finished batches and the metadata; returns what was saved, in words."""
        meta = self.state["metadata"]
        self.flush()
        self.store.write_meta(meta)
        return f"{self.n_safe()} of {len(self.own)} samples are safe in {self.store.dir}"

    def go(self, todo, out_path: Path, progress: bool, done: int) -> None:
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(self.own), initial=done, unit="sample", dynamic_ncols=True, smoothing=0.1)
        j = 0
        try:
            with _sigterm_as_interrupt(), _storage_errors(out_path, self.store, self.n_safe):
                for j, idx in enumerate(todo):
                    rows = self.batch_rows(idx)  # whole batches only
                    for k, v in rows.items():
                        self.pending.setdefault(k, []).extend(v)
                    if bar is not None:
                        bar.update(len(idx))
                    if n_samples(self.pending) >= self.update_steps:
                        self.flush()
        except KeyboardInterrupt:
            with _storage_errors(out_path, self.store, self.n_safe):
                self.save_progress()
                if self.snapshot is not None and self.n_safe():
                    self.snapshot(out_path, self.state)  # a partial file (complete: False); the sidecar stays the truth
            if not self.n_safe():
                raise RunInterrupted(f"interrupted before the first batch finished: nothing was finished (the run's "
                                     f"settings are in {self.store.dir}); rerun with --resume") from None
            saved = out_path if self.snapshot is not None else self.store.dir
            raise RunInterrupted(f"interrupted after {self.n_safe()} of {len(self.own)} samples; saved to {saved}; "
                                 "continue with --resume") from None
        except RunStorageError:
            raise
        except Exception as exc:
            try:
                with _storage_errors(out_path, self.store, self.n_safe):
                    safe = self.save_progress()
            except RunStorageError as err:
                safe = f"saving the finished batches failed too ({err})"
            err = _aborted(exc, safe, j, len(todo))
            if err is exc:
                raise
            raise err from None
        finally:
            if bar is not None:
                bar.close()


def _aborted(exc: Exception, safe: str, j: int, n_batches: int) -> BaseException:
    """What to raise for ``exc`` (raised in batch ``j``) once the finished batches are saved: one line for a cause
    the user can act on, else ``exc`` itself (a bug keeps its traceback, after a line saying what is safe)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    where = f"batch {j + 1} of the {n_batches} left"
    if isinstance(exc, UserError):
        return type(exc)(f"{text}; {safe}: --resume continues from there") if isinstance(exc, RunAborted) else \
            RunAborted(f"{text} ({where}); {safe}: --resume continues from there")
    if type(exc).__name__ == "OutOfMemoryError" or "out of memory" in text.lower():
        return RunAborted(f"out of memory in {where} ({text[:120]}); {safe}: free memory (other processes) and "
                          "continue with --resume (a smaller --batch_size or --budget_mb changes the run identity: "
                          "--overwrite)")
    if "probability tensor contains" in text:
        return RunAborted(f"sampling failed in {where}: the model's next-token probabilities hold NaN or inf "
                          f"({text[:80]}); {safe}; check the model's weights or dtype (--dtype float32), then "
                          "--resume")
    print(f"error: {type(exc).__name__} in {where}; {safe}: after fixing the cause, continue with --resume "
          "(the traceback follows)", file=sys.stderr)
    return exc
