"""Per-architecture knowledge, in one place, found from the model itself wherever possible.

* :func:`find_blocks` — the decoder blocks: the ``nn.ModuleList`` of length ``num_hidden_layers``.
* :func:`discover_logit_transform` — the elementwise map the model's forward applies to its head's
  output (Gemma-2 soft-capping, Cohere/Granite scaling...), identified by feeding the head's output
  a known ramp of values during one forward pass and fitting identity, scale or ``A·tanh(B·x)``.
  Config names (``final_logit_softcapping``, ``logits_soft_cap``, ``logit_scale``...) are only a
  hint: a hint that reproduces the observed map gives the exact constants.
* :func:`find_residual_writers` — the modules whose outputs the block *adds to the residual
  stream* for attention and MLP (TransformerLens ``hook_attn_out`` / ``hook_mlp_out``), found by
  tracing one forward of a block and checking ``out = in + attn + mlp``.
* :data:`PREPEND_BOS` / :func:`default_prepend_bos` — the BOS policy TransformerLens applied.
* :func:`first_tensor` / :func:`map_first_tensor` — the hidden state inside a module output (tensor, tuple or
  ModelOutput), read or rewritten.
* :func:`context_length`, :func:`hidden_size`, :func:`fallback_token`, :func:`pad_token_id` — config and tokenizer
  facts, read under every architecture's names.
* :data:`LENS_SPECS` / :func:`register_lens_spec` — user overrides keyed by ``model_type``; :func:`load_lens_spec`
  reads one for ``--lens_spec module:NAME``.

It is longer than the other modules (about 480 lines) on purpose: every piece of per-architecture knowledge lives
here and nowhere else (nnterp's rule), so that adding an architecture rule touches one file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from .errors import LensResolutionError, UserError

__all__ = ["LensSpec", "find_blocks", "text_config", "first_tensor", "discover_logit_transform", "hinted_logit_transforms",
           "find_residual_writers", "PREPEND_BOS", "BOS_POLICIES", "default_prepend_bos", "resolve_prepend_bos",
           "ATTENTION_NAMES", "MLP_NAMES", "LensResolutionError"]


def text_config(model: nn.Module):
    cfg = model.config
    get = getattr(cfg, "get_text_config", None)
    return get() if callable(get) else cfg


def first_tensor(out):
    """The hidden state in a module's output: the tensor itself, the first element of a tuple, or
    ``last_hidden_state``."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    hs = getattr(out, "last_hidden_state", None)
    if isinstance(hs, torch.Tensor):
        return hs
    raise LensResolutionError(f"cannot read a hidden state from a module output of type {type(out).__name__}")


# ----------------------------------------------------------------------------- blocks
#: Module-name fragments of non-text towers, never taken for the decoder blocks.
NON_TEXT = ("vision", "visual", "audio", "image", "encoder.")


def find_blocks(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The decoder blocks: the ``ModuleList`` of length ``num_hidden_layers`` (shortest path wins)."""
    n = getattr(text_config(model), "num_hidden_layers", None)
    if n is None:
        raise LensResolutionError(
            f"{type(model).__name__}: the config has no num_hidden_layers, so the decoder blocks cannot be found"
        )
    found = [
        (name, mod)
        for name, mod in model.named_modules()
        if isinstance(mod, nn.ModuleList) and len(mod) == n and not any(k in name for k in NON_TEXT)
    ]
    if not found:
        raise LensResolutionError(
            f"{type(model).__name__}: no nn.ModuleList of length num_hidden_layers={n} was found "
            "(the decoder blocks could not be resolved)"
        )
    found.sort(key=lambda nm: (nm[0].count("."), len(nm[0])))
    return found[0]


# ----------------------------------------------------------------------------- user overrides
@dataclass(frozen=True)
class LensSpec:
    """Overrides of what :class:`~model_inspector.lens.LogitLens` resolves by itself, for models no
    rule covers (like tuned-lens's ``final_norm=`` or nnterp's ``RenameConfig``). Each field left
    ``None`` is resolved as usual; the lens still checks that it reproduces the model's logits.

    * ``blocks``: the decoder blocks, a module path (``"transformer.h"``) or the ``ModuleList``;
    * ``final``: the modules run after the last block, before the head: module paths or modules,
      in order (``["model.norm"]``; ``[]`` for none);
    * ``head``: the unembedding, a module path or module;
    * ``transforms``: the elementwise maps of the head's output, ``[(name, fn), ...]`` (``[]``: none).
    """

    blocks: object = None
    final: object = None
    head: object = None
    transforms: object = None

    @staticmethod
    def _module(model: nn.Module, ref) -> nn.Module:
        if isinstance(ref, nn.Module):
            return ref
        try:
            return model.get_submodule(str(ref))
        except AttributeError:
            raise LensResolutionError(f"{type(model).__name__} has no module {ref!r} (LensSpec)") from None

    def resolve_blocks(self, model: nn.Module) -> tuple[str, nn.ModuleList]:
        if self.blocks is None:
            return find_blocks(model)
        mod = self._module(model, self.blocks)
        if not isinstance(mod, nn.ModuleList):
            raise LensResolutionError(f"LensSpec(blocks={self.blocks!r}) is a {type(mod).__name__}, not a ModuleList")
        name = self.blocks if isinstance(self.blocks, str) else next(
            (n for n, m in model.named_modules() if m is mod), "blocks")
        return name, mod

    def resolve_head(self, model: nn.Module) -> nn.Module | None:
        if self.head is not None:
            return self._module(model, self.head)
        return model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None

    def resolve_final(self, model: nn.Module) -> list[tuple[str, nn.Module]]:
        names = {id(m): n for n, m in model.named_modules()}
        return [(r if isinstance(r, str) else names.get(id(r), type(r).__name__), self._module(model, r))
                for r in self.final]


# ----------------------------------------------------------------------------- logit transforms
Transform = tuple[str, Callable[[torch.Tensor], torch.Tensor]]


def _num(x: float) -> str:
    return f"{x:.6g}"


def hinted_logit_transforms(cfg) -> list[Transform]:
    """Transforms named by config fields (hints, checked against the observed map)."""
    out: list[Transform] = []
    for name in ("final_logit_softcapping", "logits_soft_cap", "logit_softcapping"):
        cap = getattr(cfg, name, None)
        if isinstance(cap, (int, float)) and cap:
            cap = float(cap)
            out.append((f"softcap({_num(cap)})", lambda x, c=cap: c * torch.tanh(x / c)))
            break
    scale = getattr(cfg, "logit_scale", None)  # Cohere: logits * logit_scale
    if isinstance(scale, (int, float)) and scale != 1:
        out.append((f"scale({_num(scale)})", lambda x, s=float(scale): x * s))
    div = getattr(cfg, "logits_scaling", None)  # Granite: logits / logits_scaling
    if isinstance(div, (int, float)) and div != 1:
        out.append((f"divide({_num(div)})", lambda x, d=float(div): x / d))
    mult = getattr(cfg, "lm_head_multiplier", None)  # Falcon-H1
    if isinstance(mult, (int, float)) and mult != 1:
        out.append((f"scale({_num(mult)})", lambda x, s=float(mult): x * s))
    return out


def _apply(transforms: list[Transform], x: torch.Tensor) -> torch.Tensor:
    for _, fn in transforms:
        x = fn(x)
    return x


def _fit_tanh(h, y):
    """Least-squares ``y = A tanh(B h)`` (float64 numpy arrays); returns ``(A, B)`` or None."""
    import numpy as np
    from scipy.optimize import least_squares

    a0 = float(np.abs(y).max())
    if not a0 > 0:
        return None
    small = np.abs(h) <= np.quantile(np.abs(h), 0.05) + 1e-12
    slope = float((h[small] @ y[small]) / max(1e-300, h[small] @ h[small]))
    if not slope > 0:
        return None
    x0 = np.log([a0 * 1.001, slope / (a0 * 1.001)])
    res = least_squares(lambda p: np.exp(p[0]) * np.tanh(np.exp(p[1]) * h) - y, x0, xtol=1e-15, ftol=1e-15,
                        gtol=1e-15, max_nfev=2000)
    return float(np.exp(res.x[0])), float(np.exp(res.x[1]))


#: Half-width of the ramp of values fed to the head's output when the transform is discovered.
PROBE_RANGE = 400.0


def discover_logit_transform(model: nn.Module, head: nn.Module, inputs: dict) -> list[Transform]:
    """The elementwise map from the head's output to the model's logits.

    One forward pass in which the head's output is replaced by a ramp over
    ``[-PROBE_RANGE, PROBE_RANGE]``; the logits the model returns are then ``f(ramp)``. ``f`` is
    identified as the identity, a scale, or ``A·tanh(B·x)`` (soft-capping, with a scale before or
    after it); the config's named transforms are used when they reproduce it. Raises
    :class:`LensResolutionError` when none fits (the message gives the best deviation)."""

    seen = {}

    def hook(_mod, _args, out):
        t = first_tensor(out)
        ramp = torch.linspace(-PROBE_RANGE, PROBE_RANGE, t.numel(), dtype=torch.float64)
        ramp = ramp.reshape(t.shape).to(device=t.device, dtype=t.dtype)
        seen["h"] = ramp
        return ramp if isinstance(out, torch.Tensor) else (ramp,) + tuple(out[1:])

    handle = head.register_forward_hook(hook)
    try:
        with torch.no_grad():
            logits = model(**inputs, use_cache=False).logits
    except Exception as exc:  # noqa: BLE001 - reported with context
        raise LensResolutionError(f"{type(model).__name__}: probe forward pass failed: {exc}") from exc
    finally:
        handle.remove()
    name = type(model).__name__
    if "h" not in seen or seen["h"].shape != logits.shape:
        raise LensResolutionError(f"{name}: the model's logits are not an elementwise map of its head's output "
                                  f"(head output {tuple(seen['h'].shape) if 'h' in seen else 'never produced'}, "
                                  f"logits {tuple(logits.shape)})")
    h = seen["h"].double().flatten()
    y = logits.double().flatten()
    half = seen["h"].dtype not in (torch.float32, torch.float64)
    tol = (2e-2 if half else 1e-4) * max(1.0, float(y.abs().max()))

    def dev(transforms):
        return float((_apply(transforms, h) - y).abs().max())

    hints = hinted_logit_transforms(text_config(model))
    if hints and dev(hints) <= tol:
        return hints
    if dev([]) <= tol:
        return []
    best = dev([])
    c = float((h @ y) / (h @ h))
    scale = [(f"scale({_num(c)})", lambda x, s=c: x * s)]
    if dev(scale) <= tol:
        return scale
    best = min(best, dev(scale))
    fit = _fit_tanh(h.cpu().numpy(), y.cpu().numpy())
    if fit is not None:
        a, b = fit
        if abs(a * b - 1) < 1e-6:
            cand = [(f"softcap({_num(a)})", lambda x, c=a: c * torch.tanh(x / c))]
        else:
            cand = [(f"{_num(a)}*tanh({_num(b)}*x)", lambda x, a=a, b=b: a * torch.tanh(x * b))]
        if dev(cand) <= tol:
            return cand
        best = min(best, dev(cand))
    raise LensResolutionError(
        f"{name}: the map from the head's output to the logits is none of identity, scale or soft-cap "
        f"A*tanh(B*x) (best max |diff| {best:.3g} on a ramp over ±{PROBE_RANGE:g}"
        f"{'; config hints: ' + ', '.join(n for n, _ in hints) if hints else ''}); "
        "pass the transform explicitly: LogitLens(model, transforms=[(name, fn)])"
    )


# ----------------------------------------------------------------------------- residual writers
#: Names of the attention and MLP submodules of a block (the first that exists is used).
ATTENTION_NAMES = ("self_attn", "attn", "attention", "self_attention", "temporal_block")
MLP_NAMES = ("mlp", "feed_forward", "ffn", "block_sparse_moe", "mlp_block", "fc2")


def _child(block: nn.Module, names) -> str | None:
    return next((n for n in names if isinstance(getattr(block, n, None), nn.Module)), None)


def find_residual_writers(block: nn.Module, run_forward: Callable[[], object]) -> dict[str, str]:
    """``{"hook_attn_out": name, "hook_mlp_out": name}``: the modules (names relative to ``block``)
    whose outputs the block adds to its residual stream, as TransformerLens means those hooks.

    ``run_forward()`` runs the model once (the block must be called exactly once). Candidates on
    each side: the attention (MLP) module, the modules that run after it and before the other side
    (sandwich post-norms such as Gemma's ``post_attention_layernorm``), then its descendants (Bloom's
    ``dense``, whose parent also adds the residual). The pair kept is the first for which
    ``block output = block input + attention part + MLP part`` (sequential and parallel blocks
    alike). Raises :class:`LensResolutionError` when no pair reproduces the block."""
    attn, mlp = _child(block, ATTENTION_NAMES), _child(block, MLP_NAMES)
    if attn is None or mlp is None:
        raise LensResolutionError(f"{type(block).__name__}: no attention ({', '.join(ATTENTION_NAMES)}) or MLP "
                                  f"({', '.join(MLP_NAMES)}) submodule")
    events: list[tuple[str, str]] = []
    outs: dict[str, list] = {}
    io: dict[str, torch.Tensor] = {}
    handles = []

    def block_pre(_m, args, kwargs):
        x = args[0] if args else kwargs.get("hidden_states")
        io["in"] = x.detach().clone()

    def block_post(_m, _a, out):
        io["out"] = first_tensor(out).detach().clone()

    handles.append(block.register_forward_pre_hook(block_pre, with_kwargs=True))
    handles.append(block.register_forward_hook(block_post))
    for name, mod in block.named_modules():
        if not name:
            continue

        def pre(_m, _a, n=name):
            events.append(("start", n))

        def post(_m, _a, out, n=name):
            events.append(("end", n))
            try:
                t = first_tensor(out)
                outs.setdefault(n, []).append(t.detach().clone())
            except LensResolutionError:
                outs.setdefault(n, []).append(None)

        handles += [mod.register_forward_pre_hook(pre), mod.register_forward_hook(post)]
    try:
        with torch.no_grad():
            run_forward()
    finally:
        for h in handles:
            h.remove()
    if "in" not in io or "out" not in io:
        raise LensResolutionError(f"{type(block).__name__}: the block was not run by the probe forward")
    x, y = io["in"].double(), io["out"].double()

    def at(kind, name):
        return next(i for i, e in enumerate(events) if e == (kind, name))

    def side(own: str, other: str) -> list[str]:
        end_own, start_other = at("end", own), at("start", other)
        stop = start_other if start_other > end_own else len(events)
        after = [n for k, n in events[end_own:stop] if k == "start" and "." not in n]  # the block's children
        inner = [n for n, _ in block.get_submodule(own).named_modules(prefix=own) if n != own]
        names = [own] + after + inner
        return [n for n in dict.fromkeys(names)
                if len(outs.get(n, [])) == 1 and outs[n][0] is not None and outs[n][0].numel() == x.numel()]

    tol = 1e-4 * (1.0 + float(y.abs().max()))
    for a in side(attn, mlp):
        for m in side(mlp, attn):
            parts = outs[a][0].double().reshape(x.shape) + outs[m][0].double().reshape(x.shape)  # OPT: fc2 is [b*s, d]
            if float((x + parts - y).abs().max()) <= tol:
                return {"hook_attn_out": a, "hook_mlp_out": m}
    raise LensResolutionError(
        f"{type(block).__name__}: no attention/MLP outputs add up to the block's output (block input + "
        f"{attn} part + {mlp} part); this block's residual writers cannot be found"
    )


# ----------------------------------------------------------------------------- BOS policy
#: The policies of ``prepend_bos``: ``auto`` (what TransformerLens did for the model's family),
#: ``always``, ``never``.
BOS_POLICIES = ("auto", "always", "never")

#: ``model_type`` prefix -> whether TransformerLens prepends BOS by default
#: (``HookedTransformerConfig.default_prepend_bos``). TransformerLens's default is True; its
#: adapters set it False for GPT-NeoX/Pythia, Bloom and Qwen. Longest matching prefix wins;
#: anything not listed gets the default, True.
PREPEND_BOS: dict[str, bool] = {
    "gpt_neox": False,
    "bloom": False,
    "qwen": False,
}


def default_prepend_bos(model_or_config) -> bool:
    """TransformerLens's ``default_prepend_bos`` for this model's ``model_type`` (see
    :data:`PREPEND_BOS`)."""
    cfg = getattr(model_or_config, "config", model_or_config)
    get = getattr(cfg, "get_text_config", None)
    cfg = get() if callable(get) else cfg
    model_type = str(getattr(cfg, "model_type", "") or "")
    hits = [p for p in PREPEND_BOS if model_type.startswith(p)]
    return PREPEND_BOS[max(hits, key=len)] if hits else True


def resolve_prepend_bos(policy, model_or_config) -> bool:
    """``auto`` / ``always`` / ``never`` (or a bool) -> whether to prepend BOS for this model."""
    if isinstance(policy, bool):
        return policy
    if policy not in BOS_POLICIES:
        raise UserError(f"prepend_bos must be one of {', '.join(BOS_POLICIES)} (got {policy!r})")
    if policy == "auto":
        return default_prepend_bos(model_or_config)
    return policy == "always"


# ----------------------------------------------------------------------------- config and tokenizer facts
#: Config names of the longest sequence (prompt + generated tokens) a model was built for, tried in order.
CONTEXT_LENGTH_NAMES = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")
#: Config names of the residual stream's width, tried in order.
HIDDEN_SIZE_NAMES = ("hidden_size", "n_embd", "d_model")


def context_length(model) -> int | None:
    """Longest sequence the model was built for, if its config says (:data:`CONTEXT_LENGTH_NAMES`)."""
    cfg = text_config(model)
    for name in CONTEXT_LENGTH_NAMES:
        value = getattr(cfg, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def hidden_size(model) -> int:
    """The residual stream's width ``d_model`` (:data:`HIDDEN_SIZE_NAMES`)."""
    cfg = text_config(model)
    for name in HIDDEN_SIZE_NAMES:
        value = getattr(cfg, name, None)
        if isinstance(value, int) and value > 0:
            return value
    raise LensResolutionError(f"{type(model).__name__}: the config names no hidden size ({', '.join(HIDDEN_SIZE_NAMES)})")


def map_first_tensor(out, fn: Callable[[torch.Tensor], torch.Tensor]):
    """A module output with :func:`first_tensor` replaced by ``fn(first_tensor)`` (same structure: a tensor, or a
    tuple whose first element is the hidden state)."""
    if isinstance(out, torch.Tensor):
        return fn(out)
    if isinstance(out, tuple) and out and isinstance(out[0], torch.Tensor):
        return (fn(out[0]),) + tuple(out[1:])
    raise TypeError(f"cannot rewrite a module output of type {type(out).__name__}")


def fallback_token(tokenizer) -> int:
    """The token that stands for an empty prompt or a missing special token: BOS, else EOS, else pad (as
    TransformerLens uses EOS for a tokenizer without BOS)."""
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        tid = getattr(tokenizer, name, None)
        if tid is not None:
            return int(tid)
    raise UserError("the tokenizer has no BOS, EOS or pad token to use for an empty prompt")


def pad_token_id(tokenizer) -> int:
    """The id batches are padded with: the tokenizer's pad token, else :func:`fallback_token`."""
    return int(tokenizer.pad_token_id) if tokenizer.pad_token_id is not None else fallback_token(tokenizer)


def ensure_pad_token(tokenizer) -> None:
    """Give a tokenizer without a pad token its EOS token as pad (what ``generate`` needs to pad batches)."""
    if tokenizer.pad_token_id is None and tokenizer.eos_token_id is not None:
        tokenizer.pad_token = tokenizer.eos_token


# ----------------------------------------------------------------------------- registered lens specs
#: ``model_type`` prefix -> the :class:`LensSpec` used for it when the user gives none (longest prefix wins). Empty
#: by default (every supported architecture resolves by itself); ``register_lens_spec`` adds one.
LENS_SPECS: dict[str, LensSpec] = {}


def register_lens_spec(model_type: str, spec: LensSpec) -> LensSpec:
    """Use ``spec`` for every model whose ``model_type`` starts with ``model_type`` (checked at load like any
    spec: the lens must reproduce the model's logits)."""
    if not isinstance(spec, LensSpec):
        raise UserError(f"register_lens_spec needs a LensSpec (got {type(spec).__name__})")
    LENS_SPECS[model_type] = spec
    return spec


def lens_spec_for(model) -> LensSpec | None:
    """The registered spec of ``model``'s ``model_type`` (longest matching prefix), or ``None``."""
    model_type = str(getattr(text_config(model), "model_type", "") or "")
    hits = [p for p in LENS_SPECS if model_type.startswith(p)]
    return LENS_SPECS[max(hits, key=len)] if hits else None


def load_lens_spec(ref: str) -> LensSpec:
    """``--lens_spec module:NAME``: the :class:`LensSpec` named ``NAME`` in the importable module ``module`` (a
    ``.py`` path works too). This imports (runs) that module: name only code you trust."""
    import importlib
    import importlib.util

    module, sep, name = str(ref).rpartition(":")
    if not sep or not module or not name:
        raise UserError(f"--lens_spec must look like module:NAME or path/to/file.py:NAME (got {ref!r})")
    try:
        if module.endswith(".py"):
            spec = importlib.util.spec_from_file_location("_entropy_lens_spec", module)
            if spec is None or spec.loader is None:
                raise ImportError(module)
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
        else:
            mod = importlib.import_module(module)
    except (ImportError, OSError) as exc:
        raise UserError(f"--lens_spec: cannot import {module!r} ({type(exc).__name__}: {exc})") from None
    value = getattr(mod, name, None)
    if not isinstance(value, LensSpec):
        raise UserError(f"--lens_spec: {module}:{name} is {'missing' if value is None else type(value).__name__}, "
                        "not a LensSpec")
    return value
