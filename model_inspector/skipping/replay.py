"""The replay engine: capture every block's input and arguments in one forward, replay only what a skip changes.

A skipped block passes its input through unchanged. :func:`_capture` runs the model once (``use_cache=False``) with
forward pre-hooks on every block and refuses (:class:`SkipUnsupported`, one line) what a replay cannot do: blocks
given a cache or other shared state, a block given another block's output, outputs that are not the hidden state,
hidden states changed between blocks, blocks run twice or out of order, a model in training mode. :func:`_replay`
starts each condition from the captured input of its first skipped block and replays the later blocks with their
own captured arguments (per-layer masks stay right), optionally several conditions stacked along the batch axis.
:func:`check_replay` checks once per model that the replay reproduces the forward; :func:`skip_by_hooks` is the
independent reference (a full forward in which hooks return each skipped block's input).
"""

from __future__ import annotations

import inspect
import operator
import weakref
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from ..errors import UserError
from ..generation import real_positions

__all__ = ["ReplayCheck", "SkipUnsupported", "check_replay", "skip_by_hooks", "validate_conditions"]

_PLAIN = (type(None), bool, int, float, str, torch.dtype, torch.device)


class SkipUnsupported(UserError):
    """Skipping blocks, or replaying them from captured inputs, is ill-defined for this model."""


def _device(inspector) -> torch.device:
    return inspector.lens.head.weight.device


def _vocab(inspector) -> int:
    return int(inspector.lens.head.weight.shape[0])


def _refuse(inspector, why: str) -> SkipUnsupported:
    return SkipUnsupported(f"cannot skip blocks of {type(inspector.model).__name__}: {why}")


# ----------------------------------------------------------------------------- capture
@dataclass
class _Call:
    """How the forward called one block: the arguments besides the hidden state."""

    args: tuple
    kwargs: dict
    hidden_kw: bool  # the hidden state came as ``hidden_states=`` rather than first positional


@dataclass
class _Capture:
    inputs: list  # per block: its input hidden state [batch, seq, d_model]
    calls: list  # per block: _Call
    last: torch.Tensor  # the last block's output [batch, seq, d_model]
    logits: torch.Tensor | None  # the model's own logits [batch, seq or 1, vocab]


def _hidden(out) -> torch.Tensor | None:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, tuple) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    return None


def _leaves(value, path=()) -> Iterator[tuple[tuple, object]]:
    """(path, leaf) of an argument value, tuples opened (a list, being mutable, is a leaf)."""
    if isinstance(value, tuple):
        for i, v in enumerate(value):
            yield from _leaves(v, path + (i,))
    else:
        yield path, value


def _call_leaves(call: _Call) -> Iterator[tuple[tuple, object]]:
    for i, v in enumerate(call.args):
        yield from _leaves(v, ("arg", i))
    for k, v in call.kwargs.items():
        yield from _leaves(v, ("kw", k))


def _name(path: tuple) -> str:
    head = f"positional argument {path[1] + 1}" if path[0] == "arg" else f"argument {path[1]!r}"
    return head + "".join(f"[{i}]" for i in path[2:])


def _model_inputs(inspector, enc: dict) -> dict:
    """Forward inputs: ids, mask, and positions counted over the real tokens (left padding changes nothing)."""
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
            **real_positions(inspector.model, enc)}


def _keep_last(inspector) -> dict:
    return {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(inspector.model.forward).parameters else {}


def _capture(inspector, enc: dict, *, all_logits: bool = False) -> _Capture:
    """One forward with pre-hooks on every block; the structure is validated (refusal on what a replay cannot do)."""
    model, blocks = inspector.model, inspector.lens.blocks
    if model.training:
        raise _refuse(inspector, "the model is in training mode (dropout makes a replay differ); call model.eval()")
    seen: list = []
    outs: list = []

    def pre(j):
        def hook(_mod, args, kwargs):
            if args:
                seen.append((j, args[0], _Call(tuple(args[1:]), dict(kwargs), False)))
            else:
                rest = {k: v for k, v in kwargs.items() if k != "hidden_states"}
                seen.append((j, kwargs.get("hidden_states"), _Call((), rest, True)))
        return hook

    handles = [b.register_forward_pre_hook(pre(j), with_kwargs=True) for j, b in enumerate(blocks)]
    handles += [b.register_forward_hook(lambda _m, _a, out, j=j: outs.append((j, out))) for j, b in enumerate(blocks)]
    try:
        with torch.no_grad():
            res = model(**_model_inputs(inspector, enc), use_cache=False, **({} if all_logits else _keep_last(inspector)))
    finally:
        for h in handles:
            h.remove()
    n = len(blocks)
    if [j for j, *_ in seen] != list(range(n)) or [j for j, _ in outs] != list(range(n)):
        raise _refuse(inspector, f"one forward ran the blocks in the order {[j for j, *_ in seen]} (expected each of "
                                 f"0..{n - 1} once, in order): a block that runs twice or out of order has no single skip")
    produced: dict[int, int] = {}  # storage of any new tensor a block returned -> that block
    for (j, h, call), (_, out) in zip(seen, outs):
        if not isinstance(h, torch.Tensor):
            raise _refuse(inspector, f"block {j} was called without a hidden-state tensor")
        own = {h.untyped_storage().data_ptr()}
        for path, v in _call_leaves(call):
            if isinstance(v, torch.Tensor):
                own.add(v.untyped_storage().data_ptr())
            if hasattr(v, "get_seq_length") or (not isinstance(v, (torch.Tensor, *_PLAIN))):
                what = "a cache" if hasattr(v, "get_seq_length") else f"a {type(v).__name__}"
                raise _refuse(inspector, f"block {j} receives {what} as {_name(path)}: state shared between blocks "
                                         "(KV cache, shared KV, per-layer state) that a replay cannot re-create")
            if isinstance(v, torch.Tensor) and v.untyped_storage().data_ptr() in produced:
                raise _refuse(inspector, f"block {j} receives the output of block "
                                         f"{produced[v.untyped_storage().data_ptr()]} as {_name(path)}: "
                                         "a skip would have to change it as well")
        o = _hidden(out)
        if o is None or o.shape != h.shape:
            raise _refuse(inspector, f"block {j} returns {type(out).__name__} "
                                     f"{tuple(o.shape) if o is not None else ''}, not a hidden state shaped like "
                                     f"its input {tuple(h.shape)}")
        if j + 1 < n:
            nxt = seen[j + 1][1]
            if isinstance(nxt, torch.Tensor) and nxt is not o and not (nxt.shape == o.shape and torch.equal(nxt, o)):
                raise _refuse(inspector, f"the forward changes the hidden state between blocks {j} and {j + 1}, so the "
                                         "replay cannot pass one block's output to the next")
        for _, t in _leaves(out):
            if isinstance(t, torch.Tensor) and t.numel() and t.untyped_storage().data_ptr() not in own:
                produced[t.untyped_storage().data_ptr()] = j
    return _Capture([h for _, h, _ in seen], [c for *_, c in seen], _hidden(outs[-1][1]), res.logits)


# ----------------------------------------------------------------------------- replay
def _tile(j: int, call: _Call, k: int, kinds: dict) -> _Call:
    """Block ``j``'s arguments for ``k`` stacked copies of the batch (condition-major rows)."""
    def tile(value, path):
        if isinstance(value, tuple):
            return tuple(tile(v, path + (i,)) for i, v in enumerate(value))
        if not isinstance(value, torch.Tensor) or k == 1 or not kinds[(j,) + path]:
            return value
        return value.repeat(k, *([1] * (value.dim() - 1)))

    return _Call(tuple(tile(v, ("arg", i)) for i, v in enumerate(call.args)),
                 {key: tile(v, ("kw", key)) for key, v in call.kwargs.items()}, call.hidden_kw)


def _stackable(cap: _Capture, kinds: dict | None, batch: int) -> bool:
    """Whether every tensor argument has a known batch rule (from :func:`check_replay`) for this batch."""
    if kinds is None:
        return False
    for j, call in enumerate(cap.calls):
        for path, v in _call_leaves(call):
            if isinstance(v, torch.Tensor):
                m = kinds.get((j,) + path)
                if m is None or (m and v.shape[0] != m * batch):
                    return False
    return True


def _run_block(block, call: _Call, h: torch.Tensor) -> torch.Tensor:
    out = block(*call.args, hidden_states=h, **call.kwargs) if call.hidden_kw else block(h, *call.args, **call.kwargs)
    return _hidden(out)


def _replay(inspector, cap: _Capture, conditions: list[tuple[int, ...]], stack: int, kinds: dict | None) -> dict:
    """The last block's output ``[batch, seq, d_model]`` under each condition, replaying only what it changes.

    At block ``j`` every started condition that does not skip ``j`` is advanced; up to ``stack`` of them
    share one call along the batch axis (condition-major)."""
    blocks, batch = inspector.lens.blocks, cap.inputs[0].shape[0]
    stack = stack if stack > 1 and _stackable(cap, kinds, batch) else 1
    skipped = {c: set(c) for c in conditions}
    states: dict = {c: cap.last for c in conditions if not c}
    tiled: dict = {}
    with torch.no_grad():
        for j, block in enumerate(blocks):
            active = [c for c in states if c and j not in skipped[c]]
            for c in conditions:
                if c and c[0] == j:
                    states[c] = cap.inputs[j]
            for i in range(0, len(active), stack):
                group = active[i: i + stack]
                k = len(group)
                if (j, k) not in tiled:
                    tiled[(j, k)] = _tile(j, cap.calls[j], k, kinds) if k > 1 else cap.calls[j]
                out = _run_block(block, tiled[(j, k)], torch.cat([states[c] for c in group]) if k > 1 else states[group[0]])
                for n, c in enumerate(group):
                    states[c] = out[n * batch: (n + 1) * batch]
            tiled = {key: v for key, v in tiled.items() if key[0] != j}
    return states


# ----------------------------------------------------------------------------- the once-per-model check
@dataclass(frozen=True)
class ReplayCheck:
    """What :func:`check_replay` measured on a probe batch (float units of the model's logits / hidden states)."""

    logits_diff: float  # max |replayed logits - model's logits| over real positions, no skip
    block_diff: float  # max |block replayed alone - its captured output|, relative to max |output|
    stack_note: str  # "" where conditions can share one call along the batch axis, else why not
    kinds: dict | None = field(default=None, repr=False)  # (block, *arg path) -> batch multiple of dim 0 (0: none)


_CHECKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _probe(inspector, lengths: Sequence[int], width: int) -> dict:
    vocab = _vocab(inspector)
    g = torch.Generator().manual_seed(len(lengths))
    ids = torch.randint(3, max(4, min(vocab, 1000)), (len(lengths), width), generator=g)
    mask = torch.zeros_like(ids)
    for i, n in enumerate(lengths):
        mask[i, width - n:] = 1
    return {"input_ids": ids.to(_device(inspector)), "attention_mask": mask.to(_device(inspector))}


def check_replay(inspector, *, atol: float = 1e-4) -> ReplayCheck:
    """Check (once per model, cached) that the replay reproduces the forward; refuse otherwise.

    On a left-padded probe batch: replaying all blocks with no skip must reproduce the model's own logits
    (``atol`` in fp32; half precision: 5e-2 x the largest logit), and each block replayed alone, last first,
    must reproduce its captured output. Also learns which arguments carry the batch axis (two probe batch
    sizes) so that conditions can be stacked, and checks a stacked replay."""
    if inspector.model in _CHECKS:
        return _CHECKS[inspector.model]
    enc = _probe(inspector, (8, 6, 4), 8)
    cap = _capture(inspector, enc, all_logits=True)
    real = enc["attention_mask"].bool()
    half = inspector.lens.head.weight.dtype not in (torch.float32, torch.float64)
    own = cap.logits.float()
    tol = 5e-2 * max(1.0, own.abs().max().item()) if half else atol

    def logits_diff(last):
        with torch.no_grad():
            return (inspector.lens.logits(last) - own)[real].abs().max().item()

    h = cap.inputs[0]
    with torch.no_grad():
        for j, block in enumerate(inspector.lens.blocks):
            h = _run_block(block, cap.calls[j], h)
    diff = logits_diff(h)
    if not diff <= tol:
        raise _refuse(inspector, f"replaying the blocks from their captured inputs does not reproduce the model's "
                                 f"logits (max |diff| = {diff:.3g} > {tol:.1g}): the blocks depend on state the replay "
                                 "cannot see")
    block_diff = 0.0
    with torch.no_grad():
        for j in reversed(range(inspector.n_layers)):
            ref = cap.inputs[j + 1] if j + 1 < inspector.n_layers else cap.last
            got = _run_block(inspector.lens.blocks[j], cap.calls[j], cap.inputs[j])
            d = ((got - ref)[real].abs().max() / ref[real].abs().max().clamp(min=1.0)).item()
            block_diff = max(block_diff, d)
            if not d <= (5e-2 if half else atol):
                raise _refuse(inspector, f"block {j} replayed alone differs from its output in the forward (relative "
                                         f"max |diff| = {d:.3g}): it depends on more than its input and arguments")
    kinds, note = _batch_kinds(inspector, cap, _capture(inspector, _probe(inspector, (8, 5), 8)))
    n = inspector.n_layers
    if kinds is not None and n < 3:
        kinds, note = None, f"only {n} blocks"
    if kinds is not None:
        conds = [(0,), (0, n - 1)]  # stacked at blocks 1..n-2
        stacked, alone = _replay(inspector, cap, conds, 2, kinds), _replay(inspector, cap, conds, 1, None)
        d = max((stacked[c] - alone[c])[real].abs().max().item() for c in conds)
        if not d <= max(tol, 1e-5 * max(1.0, alone[conds[0]][real].abs().max().item())):
            kinds, note = None, f"a stacked replay differs from the unstacked one by {d:.3g}"
    result = ReplayCheck(diff, block_diff, note, kinds)
    _CHECKS[inspector.model] = result
    return result


def _batch_kinds(inspector, big: _Capture, small: _Capture) -> tuple[dict | None, str]:
    """From captures of 3 and 2 rows (same width): per tensor argument, the multiple ``m`` with dim 0 = ``m``
    x batch (0: no batch axis). ``None`` and the reason where a batch axis is elsewhere or unclear."""
    kinds = {}
    for j, (cb, cs) in enumerate(zip(big.calls, small.calls)):
        sb, ss = dict(_call_leaves(cb)), dict(_call_leaves(cs))
        for path, vb in sb.items():
            vs = ss.get(path)
            if not isinstance(vb, torch.Tensor):
                continue
            if not isinstance(vs, torch.Tensor) or vb.dim() != vs.dim():
                return None, f"block {j}'s {_name(path)} changes form with the batch size"
            if vb.shape == vs.shape:
                kinds[(j,) + path] = 0
            elif vb.shape[1:] == vs.shape[1:] and vb.shape[0] * 2 == vs.shape[0] * 3 and vb.shape[0] % 3 == 0:
                kinds[(j,) + path] = vb.shape[0] // 3
            else:
                return None, f"block {j}'s {_name(path)} has its batch axis other than first"
    return kinds, ""


# ----------------------------------------------------------------------------- conditions and the hook reference
def validate_conditions(conditions, n_layers: int) -> list[tuple[int, ...]]:
    """Conditions as sorted tuples of block indices (``()``: no skip); one line on anything else."""
    if isinstance(conditions, (str, bytes)) or not isinstance(conditions, Iterable):
        raise UserError(f"conditions must be a list of tuples of block indices (got {type(conditions).__name__})")
    out = []
    for i, cond in enumerate(conditions):
        if isinstance(cond, (str, bytes)) or not isinstance(cond, Iterable):
            raise UserError(f"condition {i} must be a tuple of block indices, e.g. (3,) or () (got {cond!r})")
        try:
            blocks = [operator.index(b) for b in cond]
        except TypeError:
            raise UserError(f"condition {i}: block indices must be integers (got {cond!r})") from None
        bad = [b for b in blocks if not 0 <= b < n_layers]
        if bad:
            raise UserError(f"condition {i}: block {bad[0]} is outside the model's blocks 0..{n_layers - 1}")
        if len(set(blocks)) != len(blocks):
            raise UserError(f"condition {i} lists a block twice: {tuple(blocks)}")
        out.append(tuple(sorted(blocks)))
    if not out:
        raise UserError("no conditions given; pass e.g. [(), (0,), (1,)] (() = no block skipped)")
    return out


@contextmanager
def skip_by_hooks(inspector, skipped: Iterable[int]) -> Iterator[None]:
    """Within the block, each block in ``skipped`` still runs, but a forward hook returns its input hidden
    state in place of its output: a full forward that omits those blocks (the reference for the replay)."""
    blocks = inspector.lens.blocks

    def hook(_mod, args, kwargs, out):
        h = args[0] if args else kwargs["hidden_states"]
        if isinstance(out, torch.Tensor):
            return h
        if isinstance(out, tuple) and out and isinstance(out[0], torch.Tensor):
            return (h,) + tuple(out[1:])
        raise _refuse(inspector, f"a block returns {type(out).__name__}, not a hidden state")

    handles = [blocks[j].register_forward_hook(hook, with_kwargs=True)
               for j in validate_conditions([tuple(skipped)], len(blocks))[0]]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
