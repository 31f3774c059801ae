"""The precision of the logit lens's vocabulary product (``lens_precision``) and the deviation it causes.

:data:`LENS_PRECISIONS` (see :mod:`model_inspector.lens` for what each computes); :func:`bf16_unsupported` and
:func:`resolve_lens_precision` decide what runs on a device (an unsupported bf16 falls back to fp32 with one printed
line); ``_Product`` runs one head's reduced-precision product with bf16 copies of the head made once;
:class:`Deviation` and :class:`DeviationRecord` hold the measured difference against fp32 on the same residuals.

Kernels (torch 2.13, measured on an AVX512-BF16 CPU without AMX): the CPU has no bf16 product with an fp32 output
(``mm``/``addmm``/``bmm`` ``out_dtype`` are CUDA-only, ``mm(out=fp32)`` is refused, oneDNN's ``_linear_pointwise``
and ``mkldnn_linear`` return bf16, autocast's ``linear`` is bf16 and slower), but ``torch.addmm(C, A, B, beta=-1)``
on bf16 applies ``beta C`` to the fp32 accumulator before it rounds; the ``bf16x2``/``bf16x3`` second product
uses that to return the small remainder ``x W - y1``, whose rounding no longer matters.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import torch
from torch import nn

from .errors import UserError
from .metrics import Workspace, parse_metrics

__all__ = ["LENS_PRECISIONS", "Deviation", "DeviationRecord", "bf16_unsupported", "resolve_lens_precision"]

#: the precisions of the lens's vocabulary product; the statistics over the vocabulary are float32 in every case
LENS_PRECISIONS = ("fp32", "bf16", "bf16x2", "bf16x3")


@functools.lru_cache(maxsize=None)
def _bf16_reason(device: str) -> str | None:
    dev = torch.device(device)
    if dev.type == "cpu":
        if not torch.backends.mkldnn.is_available():
            return "this torch build has no oneDNN (mkldnn), which runs the CPU's bf16 products"
        x86 = hasattr(torch, "cpu") and hasattr(torch.cpu, "_is_avx512_bf16_supported")
        if x86 and torch.cpu._is_avx2_supported():  # x86: bf16 instructions, not oneDNN's slow emulation
            if not (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()):
                return "this CPU has no bf16 instructions (avx512_bf16 or amx_bf16)"
            return None
        return None if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "oneDNN reports no bf16 support on this CPU"
    if dev.type == "cuda":
        return None if torch.cuda.is_bf16_supported() else f"{torch.cuda.get_device_name(dev)} has no bf16 support"
    try:
        a = torch.ones(4, 4, device=dev, dtype=torch.bfloat16)
        (a @ a).sum().item()
        return None
    except Exception as exc:  # noqa: BLE001 - reported as the reason
        return f"a bf16 product failed on {dev}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"


def bf16_unsupported(device) -> str | None:
    """Why ``device`` cannot run the lens's bf16 product natively, or ``None`` when it can (CPU: oneDNN with
    avx512_bf16 or AMX; CUDA: ``torch.cuda.is_bf16_supported()``; other devices: a small product is tried)."""
    return _bf16_reason(str(torch.device(device)))


def resolve_lens_precision(precision: str, device=None, *, quiet: bool = True) -> str:
    """The lens precision that runs on ``device`` when ``precision`` is asked for: the same, or ``fp32`` (with one
    printed line unless ``quiet``) where the device has no bf16 product. ``device=None``: not known yet (a model
    spread over several devices): returned as asked."""
    if precision not in LENS_PRECISIONS:
        raise UserError(f"lens_precision must be one of {', '.join(LENS_PRECISIONS)} (got {precision!r})")
    if precision == "fp32" or device is None:
        return precision
    reason = bf16_unsupported(device)
    if reason is None:
        return precision
    if not quiet:
        print(f"lens_precision {precision}: {reason}; using fp32 (recorded as fp32)")
    return "fp32"


@functools.lru_cache(maxsize=None)
def _fp32_out_works(device: str) -> bool:
    """Whether ``torch.mm(bf16, bf16, out_dtype=torch.float32)`` runs on ``device`` and returns the fp32-accurate
    product (CUDA; no CPU kernel in torch 2.13)."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(8, 64, generator=g), torch.randn(64, 8, generator=g)
    try:
        got = torch.mm(a.bfloat16().to(device), b.bfloat16().to(device), out_dtype=torch.float32)
    except (TypeError, RuntimeError, NotImplementedError):
        return False
    exact = a.bfloat16().double() @ b.bfloat16().double()
    return got.dtype == torch.float32 and float((got.cpu().double() - exact).abs().max()) < 1e-4


class _Product:
    """The vocabulary product of one head in a reduced precision (``bf16``, ``bf16x2``, ``bf16x3``). The head's bf16
    copies are made once and kept (remade when the weight moves or changes in place)."""

    def __init__(self, head: nn.Module, precision: str):
        self.head, self.precision = head, precision
        self.fp32_out = _fp32_out_works(str(head.weight.device))
        self._key, self._w = None, (None, None)
        how = {"bf16": "one product", "bf16x2": "output rounding recovered by a second product",
               "bf16x3": "hi/lo splits of residuals and head (K = 3 d)"}[precision]
        if self.fp32_out:
            self.kernel = f"torch.mm(bf16, bf16, out_dtype=float32): {how}, fp32 output, float32 statistics"
            if precision == "bf16x2":
                self.kernel = "torch.mm(bf16, bf16, out_dtype=float32): one product (its fp32 output needs no " \
                              "second), float32 statistics"
        elif precision == "bf16":
            self.kernel = "torch.mm bf16 x bf16 -> bf16: one product, logits rounded to bf16, float32 statistics"
        else:
            self.kernel = (f"torch.mm bf16 -> bf16, then torch.addmm(y1, x, W, beta=-1) accumulating in fp32: {how}, "
                           "logits summed in fp32, float32 statistics")

    def weights(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(W_hi [vocab, d], W_k [vocab, k d] or None)`` in bf16: the rounded head and, for ``bf16x3``,
        ``[W_hi, W_hi, W_lo]`` side by side (``[W_hi, W_hi]`` for a head already in bf16)."""
        w = self.head.weight
        key = (str(w.device), w.data_ptr(), w._version, w.dtype)
        if key != self._key:
            self._w = (None, None)  # free the old copies first
            w_hi = w.detach().to(torch.bfloat16)
            w_k = None
            if self.precision == "bf16x3":
                parts = [w_hi, w_hi]
                if w.dtype != torch.bfloat16:
                    parts.append((w.detach().float() - w_hi.float()).to(torch.bfloat16))
                w_k = torch.cat(parts, dim=1).contiguous()
            self._key, self._w = key, (w_hi, w_k)
        return self._w

    def inputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(x_hi [rows, d], x_k [rows, k d] or None)`` in bf16 for states ``x [rows, d]`` (``x_k``:
        ``[x_hi, x_lo, x_hi]`` for ``bf16x3``, matching :meth:`weights`)."""
        x_hi = x.to(torch.bfloat16).contiguous()
        if self.precision != "bf16x3":
            return x_hi, None
        x_lo = (x.float() - x_hi.float()).to(torch.bfloat16)
        w_k = self.weights()[1]
        parts = [x_hi, x_lo, x_hi][: w_k.shape[1] // x.shape[1]]
        return x_hi, torch.cat(parts, dim=1).contiguous()

    def product(self, x_hi, x_k, w_hi, w_k, reuse: bool) -> torch.Tensor:
        """float32 logits ``[rows, c]`` of one chunk (``w_hi [c, d]``, ``w_k [c, k d]``); ``reuse``: into the
        workspace's ``logits`` buffer."""
        rows, c, dev = x_hi.shape[0], w_hi.shape[0], w_hi.device
        if self.fp32_out:
            a, w = (x_k, w_k) if self.precision == "bf16x3" else (x_hi, w_hi)
            return torch.mm(a, w.t(), out_dtype=torch.float32)

        def buf(name, dtype=torch.float32):
            if reuse:
                return Workspace.get(name, (rows, c), dev, dtype)
            return torch.empty(rows, c, device=dev, dtype=dtype)

        out = buf("logits")
        y1 = torch.mm(x_hi, w_hi.t(), out=buf("y1", torch.bfloat16))
        out.copy_(y1)  # (adding a bf16 tensor to an fp32 one directly is 6x slower than two copies and an add)
        if self.precision != "bf16":  # the remainder x W - y1, accumulated in fp32, is small: its rounding is too
            a, w = (x_k, w_k) if self.precision == "bf16x3" else (x_hi, w_hi)
            r = torch.addmm(y1, a, w.t(), beta=-1, out=buf("r", torch.bfloat16))
            out.add_(buf("r32").copy_(r))
        return out


def _units(metrics) -> dict[str, str]:
    if not (isinstance(metrics, tuple) and all(hasattr(m, "unit") for m in metrics)):
        metrics = parse_metrics(metrics)
    return {m.key: m.unit for m in metrics}


class Deviation(NamedTuple):
    """How far a reduced-precision metric lies from fp32 on the same residuals: the largest and the mean absolute
    difference (in the metric's unit: nats for entropies) over ``n`` values (``[sample, token, layer]`` entries)."""

    max_abs: float
    mean_abs: float
    n: int


class DeviationRecord:
    """Running :class:`Deviation` per metric key, folded in call by call (:meth:`LogitLens.measure_deviation`).
    Values finite in one precision and not in the other count as an infinite deviation."""

    def __init__(self, precision: str, kernel: str):
        self.precision, self.kernel = precision, kernel
        self._max: dict[str, float] = {}
        self._sum: dict[str, float] = {}
        self._n: dict[str, int] = {}
        self.units: dict[str, str] = {}

    def add(self, ref: dict, got: dict, units: dict | None = None) -> None:
        """Fold in ``{key: tensor [...]}`` from fp32 (``ref``) and the reduced precision (``got``)."""
        self.units.update(units or {})
        for k, a in ref.items():
            a, b = a.detach().double().cpu(), got[k].detach().double().cpu()
            fa, fb = torch.isfinite(a), torch.isfinite(b)
            same_nonfinite = ~fa & ~fb & ((a == b) | (torch.isnan(a) & torch.isnan(b)))
            d = torch.where(fa & fb, (a - b).abs(), torch.full_like(a, math.inf))[~same_nonfinite]
            if d.numel():
                self._max[k] = max(self._max.get(k, 0.0), float(d.max()))
                self._sum[k] = self._sum.get(k, 0.0) + float(d.sum())
                self._n[k] = self._n.get(k, 0) + int(d.numel())

    def result(self) -> dict[str, Deviation]:
        return {k: Deviation(self._max[k], self._sum[k] / self._n[k], self._n[k]) for k in self._n}

    def as_dict(self) -> dict:
        """JSON-ready: ``{"precision", "kernel", "against": "fp32", "metrics": {key: {max_abs, mean_abs, n,
        unit}}}`` (for a results file's metadata)."""
        return {"precision": self.precision, "kernel": self.kernel, "against": "fp32",
                "metrics": {k: {**v._asdict(), "unit": self.units.get(k, "")} for k, v in self.result().items()}}

    def describe(self) -> str:
        """One line: the deviation of every metric against fp32 (max and mean |difference|, n values)."""
        res = self.result()
        if not res:
            return f"lens precision {self.precision}: no deviation measured (fp32, or no lens call)"
        parts = [f"{k} max {v.max_abs:.3g} mean {v.mean_abs:.2g} {self.units.get(k, '')}".rstrip() + f" (n={v.n})"
                 for k, v in res.items()]
        return f"lens precision {self.precision} vs fp32 on the same residuals: " + "; ".join(parts)
