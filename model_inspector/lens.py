"""The logit lens: decode a residual-stream state through the model's own final norm and head.

:class:`LogitLens` resolves, once per model and without a table of model names:

* the decoder blocks: the ``nn.ModuleList`` whose length is ``num_hidden_layers``;
* the *post-block* modules: whatever the model's own forward runs after the last block and before
  the output head (final norm, OPT's ``project_out``...), found by tracing one forward pass;
* the unembedding: ``model.get_output_embeddings()`` (weight and bias);
* the elementwise transform the model's forward applies to the head's output (Gemma-2 and
  RecurrentGemma soft-capping, Cohere ``logit_scale``, Granite ``logits_scaling``...), discovered
  from a probe forward (:func:`~model_inspector.architecture.discover_logit_transform`; config
  names are hints) or given as ``transforms=[(name, fn), ...]``.

It then checks on a short input that decoding the last block's output reproduces the model's own
logits, and raises :class:`LensResolutionError` naming what could not be resolved otherwise.

The residual stream "after block l" is the block's output (TransformerLens
``blocks.{l}.hook_resid_post``), captured with forward hooks: never ``output_hidden_states[-1]``,
which in most HF models already has the final norm applied.

The vocabulary product (``[rows, d] x [d, vocab]``, most of the lens's time) runs in the precision ``lens_precision``
names (:data:`LENS_PRECISIONS`); the statistics over the vocabulary stay float32 in every case:

* ``fp32`` (default): the head's own dtype, as before (float32 for a float32 model; exact);
* ``bf16``: residuals and head rounded to bfloat16, one product; its output is bf16 unless the device's kernel
  returns float32 (CUDA's ``torch.mm(..., out_dtype=torch.float32)``);
* ``bf16x2``: as ``bf16``, plus a second product that recovers the output's rounding (``addmm(y1, x, W, beta=-1)``
  accumulates in fp32 before it rounds the small remainder): the logits of the bf16-rounded inputs, to fp32
  accuracy; one product where the device returns float32 anyway;
* ``bf16x3``: also the inputs' rounding, from hi/lo bf16 splits (``x W = x_hi W_hi + x_lo W_hi + x_hi W_lo`` up
  to the ``lo * lo`` term, one product with three times the inner width): close to fp32.

The head is cast once per device and cached. The deviation a reduced precision causes is measured, not assumed:
:meth:`LogitLens.precision_deviation` and :meth:`LogitLens.measure_deviation`.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from .architecture import (
    LensResolutionError,
    LensSpec,
    discover_logit_transform,
    first_tensor,
    hidden_size,
    lens_spec_for,
    text_config,
)
from .errors import UserError
from .lens_precision import (
    LENS_PRECISIONS,
    Deviation,
    DeviationRecord,
    _Product,
    _units,
    bf16_unsupported,
    resolve_lens_precision,
)
from .metrics import DEFAULT_BUDGET_BYTES, Workspace, chunk_size_for, stream_metrics

__all__ = ["LogitLens", "LENS_PRECISIONS", "Deviation", "DeviationRecord", "bf16_unsupported",
           "resolve_lens_precision"]


def _module_device(mod: nn.Module, default: torch.device) -> torch.device:
    for p in mod.parameters():
        return p.device
    return default


class LogitLens:
    """Decode residual states ``[..., d_model]`` into next-token logits ``[..., vocab]``.

    Attributes (resolved at construction): ``blocks`` (the decoder ``ModuleList``), ``block_path``,
    ``post_block`` (list of ``(name, module)`` run in order after the last block), ``head`` (the
    unembedding module), ``post_head`` (names of elementwise logit transforms), ``n_layers``,
    ``d_model``, ``vocab_size``. ``spec`` (:class:`~model_inspector.architecture.LensSpec`) overrides
    any of blocks, post-block modules, head and transforms for models no rule covers (``transforms=``
    alone is a shortcut for ``LensSpec(transforms=...)``); the check that the lens reproduces the
    model's own logits still runs. ``compile=True`` fuses the per-chunk reductions with
    ``torch.compile`` (needs a C++ compiler or triton). ``lens_precision``: the vocabulary product's precision
    (:data:`LENS_PRECISIONS`); one the device cannot run falls back to ``fp32`` with one printed line.
    ``lens_precision`` then holds what runs (``lens_precision_requested`` what was asked) and ``lens_kernel`` names
    the kernel; the resolution check always decodes in fp32.
    """

    def __init__(self, model: nn.Module, *, verify: bool = True, atol: float = 1e-4, compile: bool = False,
                 spec: LensSpec | None = None, transforms: list | None = None, lens_precision: str = "fp32"):
        self.model, self.verify, self.atol, self.compile = model, verify, atol, compile
        self._products: dict = {}
        self._record: DeviationRecord | None = None
        #: reduce vocabulary chunks into reused buffers (False: allocate per operation, the earlier path)
        self.buffered = True
        spec = spec or lens_spec_for(model) or LensSpec()
        if transforms is not None:
            spec = LensSpec(blocks=spec.blocks, final=spec.final, head=spec.head, transforms=transforms)
        self.spec = spec
        self.block_path, self.blocks = spec.resolve_blocks(model)
        head = spec.resolve_head(model)
        if head is None or getattr(head, "weight", None) is None:
            raise LensResolutionError(
                f"{type(model).__name__}: get_output_embeddings() gave no module with a weight "
                "(the unembedding could not be resolved; pass LensSpec(head=...))"
            )
        self.head = head
        self._transforms = (list(spec.transforms) if spec.transforms is not None
                            else discover_logit_transform(model, head, self._probe_inputs()))
        self.post_head = [name for name, _ in self._transforms]
        self.post_block = spec.resolve_final(model) if spec.final is not None else self._trace_post_block()
        self.lens_precision_requested = lens_precision
        self.lens_precision = resolve_lens_precision(lens_precision, self.device, quiet=False)
        if self.verify:
            self.check()

    def __repr__(self) -> str:
        return f"LogitLens({type(self.model).__name__}: {self.describe()})"

    # ----------------------------------------------------------------- resolution
    def _probe_inputs(self, length: int = 6) -> dict:
        cfg = text_config(self.model)
        vocab = int(getattr(cfg, "vocab_size", 0) or self.vocab_size)
        g = torch.Generator().manual_seed(0)
        ids = torch.randint(3, max(4, min(vocab, 1000)), (1, length), generator=g)
        return {"input_ids": ids.to(self.device)}

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    def _trace_post_block(self) -> list[tuple[str, nn.Module]]:
        """Run one forward; return the modules (outside the blocks and the head) that start after
        the last block has finished and before the head starts, outermost only, in call order."""
        skip = {id(self.blocks), id(self.head), id(self.model)}
        inside = {id(m) for m in self.blocks.modules()} | {id(m) for m in self.head.modules()}
        ancestors = set()
        prefix = ""
        for part in self.block_path.split("."):
            ancestors.add(prefix.rstrip("."))
            prefix += part + "."
        events: list[tuple[str, str]] = []
        handles = []
        last = self.blocks[-1]
        handles.append(last.register_forward_hook(lambda *a: events.append(("end_last", ""))))
        handles.append(self.head.register_forward_pre_hook(lambda *a: events.append(("head", ""))))
        for name, mod in self.model.named_modules():
            if id(mod) in skip or id(mod) in inside or name in ancestors or name == "":
                continue
            handles.append(mod.register_forward_pre_hook(lambda m, a, n=name: events.append(("start", n))))
        try:
            with torch.no_grad():
                self.model(**self._probe_inputs(), use_cache=False)
        except Exception as exc:  # noqa: BLE001 - reported with context
            raise LensResolutionError(f"{type(self.model).__name__}: probe forward pass failed: {exc}") from exc
        finally:
            for h in handles:
                h.remove()
        names: list[str] = []
        seen_end = False
        for kind, name in events:
            if kind == "end_last":
                seen_end, names = True, []  # blocks may be called again (e.g. weight sharing)
            elif kind == "head" and seen_end:
                break
            elif kind == "start" and seen_end and name not in names:
                names.append(name)
        outer = [n for n in names if not any(n.startswith(o + ".") for o in names if o != n)]
        mods = dict(self.model.named_modules())
        return [(n, mods[n]) for n in outer]

    # ----------------------------------------------------------------- properties
    @property
    def n_layers(self) -> int:
        return len(self.blocks)

    @property
    def vocab_size(self) -> int:
        return int(self.head.weight.shape[0])

    @property
    def d_model(self) -> int:
        return hidden_size(self.model)

    def describe(self) -> str:
        post = " -> ".join([n for n, _ in self.post_block] + ["head"] + self.post_head)
        return f"{self.n_layers} blocks at '{self.block_path}', decode: {post}"

    # ----------------------------------------------------------------- decoding
    def normalize(self, resid: torch.Tensor) -> torch.Tensor:
        """Apply the post-block modules (final norm...) to residual states ``[..., d_model]``.

        Returns ``[..., d_head_in]`` on the head's device, in the head's dtype."""
        x = resid
        for _, mod in self.post_block:
            x = first_tensor(mod(x.to(_module_device(mod, x.device))))
        return x.to(device=self.head.weight.device, dtype=self.head.weight.dtype)

    def logits_chunks(self, normed: torch.Tensor, chunk: int, rows: torch.Tensor | None = None, *,
                      reuse: bool = False, precision: str | None = None) -> Iterator[torch.Tensor]:
        """Yield float32 logits ``[..., c]`` of normalised states ``[..., d]`` over vocabulary
        chunks of width ``chunk`` (transforms applied). ``rows``: restrict to these token ids.
        ``reuse=True``: every chunk is written into the same buffer (fp32 heads), so a chunk is valid
        only until the next one is asked for (the streamed metrics read them one at a time).
        ``precision``: the product's precision (default :attr:`lens_precision`)."""
        precision = self._precision(precision)
        if precision != "fp32":
            yield from self._reduced_chunks(normed, chunk, rows, reuse, precision)
            return
        w = self.head.weight
        b = getattr(self.head, "bias", None)
        if rows is not None:
            w, b = w[rows], (None if b is None else b[rows])
        lead = normed.shape[:-1]
        flat = normed.reshape(-1, normed.shape[-1])
        for i in range(0, w.shape[0], chunk):
            wc = w[i : i + chunk]
            if reuse and w.dtype == torch.float32 and flat.dtype == torch.float32:
                out = torch.mm(flat, wc.t(), out=Workspace.get("logits", (flat.shape[0], wc.shape[0]), w.device))
                if b is not None:
                    out += b[i : i + chunk]
                out = out.view(*lead, wc.shape[0])
            else:
                out = torch.nn.functional.linear(normed, wc, None if b is None else b[i : i + chunk])
            out = out.float()
            for _, fn in self._transforms:
                out = fn(out)
            yield out
            del out  # the consumer is done with this chunk: free it before computing the next

    def _reduced_chunks(self, normed, chunk, rows, reuse, precision) -> Iterator[torch.Tensor]:
        """:meth:`logits_chunks` with the product in a reduced precision (float32 chunks out)."""
        prod = self._product(precision)
        w_hi, w_k = prod.weights()
        b = getattr(self.head, "bias", None)
        if rows is not None:
            w_hi, w_k, b = w_hi[rows], (None if w_k is None else w_k[rows]), (None if b is None else b[rows])
        lead = normed.shape[:-1]
        x_hi, x_k = prod.inputs(normed.reshape(-1, normed.shape[-1]))
        for i in range(0, w_hi.shape[0], chunk):
            out = prod.product(x_hi, x_k, w_hi[i : i + chunk], None if w_k is None else w_k[i : i + chunk], reuse)
            if b is not None:
                out += b[i : i + chunk]
            out = out.view(*lead, out.shape[-1])
            for _, fn in self._transforms:
                out = fn(out)
            yield out
            del out

    def logits(self, resid: torch.Tensor, *, precision: str | None = None) -> torch.Tensor:
        """Full float32 logits ``[..., vocab]`` of residual states ``[..., d_model]`` (memory: the
        whole block; prefer :meth:`metrics` for reductions). ``precision``: default :attr:`lens_precision`."""
        normed = self.normalize(resid)
        return torch.cat(list(self.logits_chunks(normed, self.vocab_size, precision=precision)), dim=-1)

    def metrics(self, resid: torch.Tensor, metrics, *, budget_bytes: int = DEFAULT_BUDGET_BYTES,
                top_k: int = 0, precision: str | None = None) -> dict:
        """Metrics of the lens distributions of residual states ``[..., layer, d_model]``.

        Returns ``{key: float32 tensor [..., layer]}`` on the head's device (entropies in nats);
        ``top_k > 0`` adds the top lens tokens from the same pass over the vocabulary
        (``metrics.TOP_IDS`` ``[..., layer, k]``, ``metrics.TOP_LOGPROBS`` in nats).
        The vocabulary is streamed in chunks so that temporaries stay under ``budget_bytes``.
        ``precision``: the product's precision (default :attr:`lens_precision`); inside
        :meth:`measure_deviation`, a reduced precision is also computed in fp32 and the difference recorded."""
        precision = self._precision(precision)
        with torch.no_grad():
            normed = self.normalize(resid)
            rows = max(1, normed[..., 0].numel())
            # besides the five fp32 temporaries: bf16 keeps a bf16 [rows, chunk] buffer, bf16x2/x3 two and an fp32 one
            extra = {"fp32": 0, "bf16": 0.5, "bf16x2": 2, "bf16x3": 2}[precision]
            size = chunk_size_for(rows, self.vocab_size, budget_bytes, 5 + extra)
            out = stream_metrics(lambda: self.logits_chunks(normed, size, reuse=self.buffered, precision=precision),
                                 metrics, self.vocab_size, compile=self.compile, top_k=top_k, buffered=self.buffered)
        if self._record is not None and precision != "fp32" and precision == self._record.precision:
            self._record.add(self.metrics(resid, metrics, budget_bytes=budget_bytes, precision="fp32"), out,
                             units=_units(metrics))
        return out

    # ----------------------------------------------------------------- precision
    def _precision(self, precision: str | None) -> str:
        """The precision of one call: the lens's own (resolved once, at construction: nothing to check on the
        per-token path), or another that this device must run as asked."""
        if precision is None or precision == self.lens_precision:
            return self.lens_precision
        if resolve_lens_precision(precision, self.device) != precision:
            raise UserError(f"lens_precision {precision} cannot run here: {bf16_unsupported(self.device)}; use fp32")
        return precision

    def _product(self, precision: str) -> "_Product":
        if precision not in self._products:
            self._products[precision] = _Product(self.head, precision)
        return self._products[precision]

    @property
    def lens_kernel(self) -> str:
        """The kernel the vocabulary product runs (recorded with the results)."""
        if self.lens_precision == "fp32":
            dt = str(self.head.weight.dtype).replace("torch.", "")
            return f"{dt} product in the head's own dtype (torch.mm / linear), float32 statistics"
        return self._product(self.lens_precision).kernel

    def precision_info(self) -> dict:
        """``{"lens_precision", "lens_precision_requested", "lens_kernel"}`` for a results file's metadata."""
        return {"lens_precision": self.lens_precision, "lens_precision_requested": self.lens_precision_requested,
                "lens_kernel": self.lens_kernel}

    def precision_deviation(self, resid: torch.Tensor, metrics, *, precision: str | None = None,
                            budget_bytes: int = DEFAULT_BUDGET_BYTES) -> dict[str, "Deviation"]:
        """Every metric of residual states ``[..., layer, d_model]`` computed in fp32 and in ``precision`` (default
        :attr:`lens_precision`) on the same residuals: ``{metric key: Deviation(max_abs, mean_abs, n)}`` over the
        ``[..., layer]`` values, in the metric's unit (entropies in nats). All zeros for ``fp32``."""
        precision = self._precision(precision)
        rec = DeviationRecord(precision, self._product(precision).kernel if precision != "fp32" else self.lens_kernel)
        ref = self.metrics(resid, metrics, budget_bytes=budget_bytes, precision="fp32")
        rec.add(ref, self.metrics(resid, metrics, budget_bytes=budget_bytes, precision=precision)
                if precision != "fp32" else ref, units=_units(metrics))
        return rec.result()

    @contextmanager
    def measure_deviation(self) -> Iterator["DeviationRecord"]:
        """While open, every :meth:`metrics` call in the (reduced) :attr:`lens_precision` is repeated in fp32 on
        the same residuals (about the cost of an fp32 lens) and the differences are folded into the yielded
        :class:`DeviationRecord` (empty for ``fp32``)."""
        rec = DeviationRecord(self.lens_precision, self.lens_kernel)
        self._record = rec
        try:
            yield rec
        finally:
            self._record = None

    # ----------------------------------------------------------------- capture
    @contextmanager
    def capture(self, last_only: bool = True) -> Iterator[list]:
        """Forward hooks on every block. Yields a list ``slots`` of length ``n_layers``; after each
        forward pass ``slots[l]`` holds block ``l``'s output, ``[batch, d_model]`` (last position)
        or ``[batch, seq, d_model]`` (``last_only=False``), moved to the head's device."""
        slots: list = [None] * self.n_layers
        dev = self.head.weight.device

        def make(i):
            def hook(_mod, _args, out):
                h = first_tensor(out)
                slots[i] = (h[:, -1, :] if last_only else h).detach().to(dev)

            return hook

        handles = [blk.register_forward_hook(make(i)) for i, blk in enumerate(self.blocks)]
        try:
            yield slots
        finally:
            for h in handles:
                h.remove()

    def check(self) -> float:
        """Decode the last block's output of a probe input and compare with the model's own logits.

        Returns the max absolute deviation; raises :class:`LensResolutionError` above ``atol``
        (the check uses the model's dtype; tolerance is scaled for half precision)."""
        inputs = self._probe_inputs()
        with torch.no_grad(), self.capture(last_only=False) as slots:
            out = self.model(**inputs, use_cache=False)
        own = out.logits.float()
        mine = self.logits(slots[-1], precision="fp32")  # the resolution, not the precision, is checked
        dtype = self.head.weight.dtype
        tol = self.atol if dtype in (torch.float32, torch.float64) else 5e-2 * max(1.0, own.abs().max().item())
        if own.shape != mine.shape:
            raise LensResolutionError(
                f"{type(self.model).__name__}: lens logits have shape {tuple(mine.shape)}, the model's "
                f"{tuple(own.shape)} (resolved: {self.describe()})"
            )
        if not torch.isfinite(own).all():
            bad = int((~torch.isfinite(own)).sum())
            raise LensResolutionError(
                f"{type(self.model).__name__}: the model's own logits are not finite ({bad} of {own.numel()} NaN or "
                "inf on a probe input), so no lens can reproduce them: its weights hold NaN/inf or its dtype "
                "overflows (try --dtype float32)")
        dev = (own - mine).abs().max().item()
        if not math.isfinite(dev) or dev > tol:
            raise LensResolutionError(
                f"{type(self.model).__name__}: decoding the last block's output does not reproduce the "
                f"model's logits (max |diff| = {dev:.3g} > {tol:.1g}); resolved {self.describe()}. "
                "An unrecognised transform between the last block and the logits is likely."
            )
        self.check_deviation = dev
        return dev
