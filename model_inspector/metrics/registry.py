"""The metric registry: every metric kind described in one place, and the parser of metric specs.

A :class:`MetricKind` holds everything about a kind of metric: its names, its parameter and the parameter's check,
its results key, unit and definition, the streamed statistics it needs from the first pass over the vocabulary
(:class:`Needs`), how it is finalised (from those statistics, or from a shared :class:`SecondPass`), and its float64
reference with example parameters, against which :func:`~model_inspector.metrics.check.check_metric` tests it.
Add a metric with :func:`register_metric`; nothing else changes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable

from ..errors import UserError

__all__ = ["Needs", "SecondPass", "MetricKind", "Metric", "MetricPlan", "REGISTRY", "register_metric",
           "unregister_metric", "parse_metric", "parse_metrics", "metric_plan", "fmt_param"]


def fmt_param(x: float) -> str:
    """Exact and short: whole numbers without ``.0`` (``2``), others as ``repr`` (``0.1234561``)."""
    if math.isinf(x):
        return "inf"
    x = float(x)
    return str(int(x)) if x.is_integer() and abs(x) < 1e16 else repr(x)


@dataclass(frozen=True)
class Needs:
    """The streamed statistics a metric needs from the first pass over the vocabulary:
    ``orders`` (sums of ``p^a``), ``orders64`` (the same, accumulated in float64), ``t`` (for
    Shannon), ``count`` (finite entries), ``kl`` (the KL sum against the last layer)."""

    orders: frozenset = frozenset()
    orders64: frozenset = frozenset()
    t: bool = False
    count: bool = False
    kl: bool = False

    def __or__(self, other: "Needs") -> "Needs":
        return Needs(self.orders | other.orders, self.orders64 | other.orders64, self.t or other.t,
                     self.count or other.count, self.kl or other.kl)


@dataclass(frozen=True)
class SecondPass:
    """A further pass over the vocabulary chunks, shared by the metric kinds that name it:
    ``run(chunks, stats, params) -> result`` (``params``: the parameters of every requested metric that uses the
    pass); each kind's ``finalize(result, param)`` then reads its value from the shared result."""

    name: str
    run: Callable


@dataclass(frozen=True)
class MetricKind:
    """One entry of the metric registry: everything about a metric in one place.

    * ``name`` (the kind), ``aliases`` (spec names -> fixed parameter or ``None``), ``param`` (the
      parameter's name, ``None`` when the metric takes none);
    * ``check(param)``: an error message for a bad parameter, or ``None``;
    * ``key(param)``: the results key; ``unit`` (``"nats"`` or ``""``); ``definition(param)``;
    * ``needs(param)``: the streamed statistics (:class:`Needs`) of the first pass;
    * ``finalize(stats, param)``: the metric ``[...]`` from those statistics (a
      :class:`~model_inspector.metrics.stream.Stats`) or, with ``second_pass``, from that pass's result;
    * ``canonical(param)``: another ``(kind, param)`` this one is (``renyi:1`` is Shannon), or None;
    * ``reference(logits, param)``: the metric in float64 numpy from full logits ``[..., vocab]`` (for ``kl_final``
      the layer axis is ``-2``), and ``examples``: parameters :func:`check_metric` tests, with tolerance ``atol``
      (every built-in kind has one; a kind registered without a reference cannot be checked).

    Add a metric with :func:`register_metric`; nothing else changes."""

    name: str
    key: Callable
    definition: Callable
    finalize: Callable
    reference: Callable | None = None
    unit: str = "nats"
    aliases: dict = field(default_factory=dict)
    param: str | None = None
    check: Callable | None = None
    needs: Callable = lambda p: Needs()
    second_pass: SecondPass | None = None
    canonical: Callable | None = None
    examples: tuple = (None,)
    atol: float = 2e-4


#: kind name -> :class:`MetricKind`
REGISTRY: dict[str, MetricKind] = {}
#: spec name -> (kind name, fixed parameter or None)
_NAMES: dict[str, tuple] = {}


def register_metric(kind: MetricKind) -> MetricKind:
    """Add (or replace) a metric kind; its ``name`` and ``aliases`` become valid metric specs."""
    REGISTRY[kind.name] = kind
    _NAMES[kind.name] = (kind.name, None)
    for alias, fixed in kind.aliases.items():
        _NAMES[alias] = (kind.name, fixed)
    metric_plan.cache_clear()
    return kind


def unregister_metric(name: str) -> None:
    """Remove a metric kind and its aliases (for tests and plugins)."""
    REGISTRY.pop(name, None)
    for alias in [a for a, (k, _) in _NAMES.items() if k == name]:
        del _NAMES[alias]
    metric_plan.cache_clear()


@dataclass(frozen=True)
class Metric:
    """One per-distribution metric: a registered kind and its parameter. ``key`` is its name in
    results (``entropy``, ``renyi_0.5``...); ``unit`` and ``definition`` come from the registry."""

    kind: str
    param: float | None = None

    def __post_init__(self):
        spec = REGISTRY.get(self.kind)
        if spec is None:
            raise UserError(f"unknown metric kind {self.kind!r}; choose one of {', '.join(REGISTRY)}")
        problem = spec.check(self.param) if spec.check else None
        if problem:
            raise UserError(problem)

    @property
    def spec(self) -> MetricKind:
        return REGISTRY[self.kind]

    @property
    def key(self) -> str:
        return self.spec.key(self.param)

    @property
    def unit(self) -> str:
        return self.spec.unit

    @property
    def definition(self) -> str:
        return self.spec.definition(self.param) + (f" [{self.unit}]" if self.unit else "")


def parse_metric(spec) -> Metric:
    """Parse ``"shannon"``, ``"renyi:0.5"``, ``("renyi", 0.5)``, ``"moment:2"``, ``"kl_final"``...

    Raises :class:`~model_inspector.errors.UserError` with the accepted forms when ``spec`` is not understood.
    """
    if isinstance(spec, Metric):
        return spec
    if isinstance(spec, (tuple, list)) and len(spec) == 2:
        name, param = spec
    elif isinstance(spec, str):
        name, _, param = spec.strip().partition(":")
        param = param or None
    else:
        raise UserError(f"cannot read metric {spec!r}: use e.g. 'shannon', 'renyi:0.5', ('moment', 2)")
    name = str(name).strip().lower()
    if name not in _NAMES:
        forms = ", ".join(f"{k.name}:{k.param.upper()}" if k.param else k.name for k in REGISTRY.values())
        raise UserError(f"unknown metric {spec!r}: use {forms} (aliases: "
                        f"{', '.join(a for a in _NAMES if a not in REGISTRY)})")
    kind_name, fixed = _NAMES[name]
    kind = REGISTRY[kind_name]
    if fixed is not None or kind.param is None:
        value = fixed
    elif param is None:
        raise UserError(f"metric {name!r} needs a parameter, e.g. '{name}:2'")
    else:
        try:
            value = float(param)
        except (TypeError, ValueError):
            raise UserError(f"metric {name!r}: parameter {param!r} is not a number") from None
    canon = kind.canonical(value) if kind.canonical else None
    return Metric(*canon) if canon else Metric(kind_name, value)


def parse_metrics(specs) -> tuple[Metric, ...]:
    """Parse a sequence of metric specs (a single string is one spec); repeats of the same metric
    are dropped, two different metrics that would share a results key are refused."""
    if isinstance(specs, (str, Metric)):
        specs = [specs]
    out: list[Metric] = []
    for s in specs:
        m = parse_metric(s)
        clash = next((o for o in out if o.key == m.key and o != m), None)
        if clash is not None:
            raise UserError(f"metrics {clash} and {m} would share the results key {m.key!r}; keep one")
        if m not in out:
            out.append(m)
    if not out:
        raise UserError("no metric requested")
    return tuple(out)


@dataclass(frozen=True)
class MetricPlan:
    """What computing a tuple of metrics takes: the first pass's combined :class:`Needs`, the metrics finalised from
    it, and the shared second passes with the metrics that read each."""

    metrics: tuple
    needs: Needs
    first: tuple
    passes: tuple  # ((SecondPass, (Metric, ...)), ...)


@lru_cache(maxsize=256)
def metric_plan(metrics: tuple) -> MetricPlan:
    """The :class:`MetricPlan` of parsed ``metrics`` (computed once per tuple)."""
    need = Needs()
    first, passes = [], {}
    for m in metrics:
        need = need | m.spec.needs(m.param)
        if m.spec.second_pass is None:
            first.append(m)
        else:
            passes.setdefault(m.spec.second_pass, []).append(m)
    return MetricPlan(tuple(metrics), need, tuple(first), tuple((p, tuple(ms)) for p, ms in passes.items()))
