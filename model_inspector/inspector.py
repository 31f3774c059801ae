"""``ModelInspector``: the user-facing object (reference-compatible API plus ``profile``)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from .architecture import (
    LensResolutionError,
    context_length,
    find_residual_writers,
    map_first_tensor,
    resolve_prepend_bos,
    text_config,
)
from .decoding import DecodeConfig
from .errors import UserError
from .generation import encode_prompts, generate_profiles, prompt_profiles, token_rows
from .lens import LogitLens
from .metrics import DEFAULT_BUDGET_BYTES, Metric, metrics_from_logits, parse_metrics
from .profiling import Profile, PromptProfile, window_mean

__all__ = ["ModelInspector"]

#: TransformerLens hook names that the intervention API accepts.
HOOKS = ("hook_resid_post", "hook_attn_out", "hook_mlp_out")


class ModelInspector:
    """Hook every block of a causal LM and read entropy-lens profiles.

    ``model_name_or_model``: an HF model object (pass its ``tokenizer``), an alias from the model
    table (``smollm2-135m-instruct``, ``gemma-2-2b-it``...), an HF hub id, a local directory or a
    ``.gguf`` file (loaded through :func:`model_manager.load_model`).
    ``budget_bytes``: memory budget for the vocabulary-chunk temporaries of the lens.
    ``compile``: fuse the lens's vocabulary reductions with ``torch.compile`` (faster after a
    one-off compilation of seconds; see the README's Performance section).
    ``threads``: set torch's CPU threads (``"auto"``: the cores this process may use less the current
    load; ``None``: leave torch's setting alone).
    ``random_init``: load the architecture with seeded random weights instead (the random-weights control).
    ``lens_spec``: a :class:`~model_inspector.architecture.LensSpec` overriding the lens's resolution
    (blocks, final modules, head, logit transforms) for models no rule covers.
    ``lens_precision``: the precision of the lens's vocabulary product, ``fp32`` (default, exact), ``bf16``,
    ``bf16x2`` or ``bf16x3`` (see :mod:`model_inspector.lens`); statistics stay float32.
    """

    def __init__(self, model_name_or_model, tokenizer=None, device="auto", dtype="auto", *, device_map=None,
                 max_memory=None, verify: bool = True, budget_bytes: int = DEFAULT_BUDGET_BYTES,
                 compile: bool = False, lens_spec=None, threads: int | None = None, random_init: int | None = None,
                 lens_precision: str = "fp32"):
        if threads is not None:
            from .threads import set_threads

            self.threads = set_threads(None if threads == "auto" else threads)
        if isinstance(model_name_or_model, tuple) and len(model_name_or_model) == 2 and tokenizer is None:
            model_name_or_model, tokenizer = model_name_or_model  # ModelInspector((model, tokenizer))
        if isinstance(model_name_or_model, nn.Module):
            if tokenizer is None:
                raise UserError("pass the model's tokenizer along with a model object")
            self.model, self.tokenizer = model_name_or_model, tokenizer
            self.model.eval()
            self.name = getattr(self.model.config, "_name_or_path", type(self.model).__name__)
        else:
            from . import loading as model_manager  # the seam: loading lives in loading.py

            self.model, self.tokenizer = model_manager.load_model(
                str(model_name_or_model), device=device, dtype=dtype, device_map=device_map, max_memory=max_memory,
                random_init=random_init)
            self.name = str(model_name_or_model)
        self.lens = LogitLens(self.model, verify=verify, compile=compile, spec=lens_spec, lens_precision=lens_precision)
        self.budget_bytes = budget_bytes
        self._scalings: dict[tuple[int, str], torch.utils.hooks.RemovableHandle] = {}
        # traced now, before any scaling hook can change what the trace sees
        probe = self.lens._probe_inputs()
        try:
            self._writers: dict | Exception = find_residual_writers(
                self.lens.blocks[0], lambda: self.model(**probe, use_cache=False))
        except LensResolutionError as exc:
            self._writers = exc

    # ------------------------------------------------------------------ properties
    @property
    def n_layers(self) -> int:
        return self.lens.n_layers

    @property
    def d_model(self) -> int:
        return self.lens.d_model

    @property
    def d_vocab(self) -> int:
        return self.lens.vocab_size

    @property
    def device(self) -> torch.device:
        return self.lens.device

    @property
    def context_length(self) -> int | None:
        """Longest sequence (prompt + generated tokens) the model was built for, if the config says."""
        return context_length(self.model)

    def too_long(self, prompts: Sequence[str], max_len: int, chat_template: bool = False,
                 prepend_bos="auto", *, lengths: Sequence[int] | None = None) -> list[int]:
        """Indices of ``prompts`` whose tokens plus ``max_len`` exceed :attr:`context_length`
        (``lengths``: their :meth:`prompt_lengths`, when already known)."""
        limit = self.context_length
        if limit is None:
            return []
        if lengths is None:
            lengths = self.prompt_lengths(prompts, chat_template=chat_template, prepend_bos=prepend_bos)
        return [i for i, n in enumerate(lengths) if n + max_len > limit]

    def prompt_lengths(self, prompts: Sequence[str], *, chat_template: bool = False, prepend_bos="auto") -> list[int]:
        """Tokens per prompt as profiling feeds them to the model (BOS policy applied, unpadded)."""
        rows = token_rows(self.tokenizer, list(prompts), chat_template=chat_template,
                          prepend_bos=self.prepend_bos(prepend_bos))
        return [len(r) for r in rows]

    def prepend_bos(self, policy="auto") -> bool:
        """Whether ``policy`` (``auto``, ``always``, ``never``) prepends BOS for this model; ``auto``
        is what TransformerLens, which the original ran on, does for the model's family."""
        return resolve_prepend_bos(policy, self.model)

    def encode(self, prompts: Sequence[str], *, chat_template: bool = False, prepend_bos="auto") -> dict:
        """Token ids as profiling feeds them to the model: ``input_ids``, ``attention_mask`` ``[batch, seq]``
        (left padded), with the BOS policy ``prepend_bos`` applied."""
        return encode_prompts(self.tokenizer, list(prompts), chat_template=chat_template,
                              prepend_bos=self.prepend_bos(prepend_bos), device=self.lens.device)

    @property
    def dtype(self) -> torch.dtype:
        return self.lens.head.weight.dtype

    # ------------------------------------------------------------------ modern API
    def profile(self, prompts: Sequence[str] | str, decode: DecodeConfig | None = None, *, max_len: int = 32,
                metrics=("shannon",), batch_size: int = 8, sample: bool = False, temperature: float = 1.0,
                seed: int | None = 0, stop_at_eos: bool = False, keep_residuals: bool = False,
                keep_top_tokens: int = 0, top_k: int | None = None, chat_template: bool = False,
                first_index: int = 0, indices=None, batch_order: str = "length", on_batch=None,
                check_context: bool = True, prepend_bos="auto") -> Profile:
        """Generate ``max_len`` tokens per prompt and profile every layer at every step.

        Decoding is one :class:`~model_inspector.decoding.DecodeConfig`: pass it as ``decode``, or its
        fields as keywords (``max_len``, ``sample``, ``temperature``, ``seed``, ``stop_at_eos``,
        ``chat_template``, ``prepend_bos`` — ``auto`` is TransformerLens's choice for the model family,
        as the original —, ``keep_top_tokens``; ``top_k`` is the older name of ``keep_top_tokens``).
        Returns a :class:`Profile`: ``.entropy`` and the other metrics ``[prompt, token, layer]``,
        ``.texts`` (generated text), ``.token_ids`` ``[prompt, token]``, in the order of ``prompts``.
        ``batch_order="length"`` (default) batches prompts of similar token length together (less
        padding; ``"given"``: consecutive prompts); a sampled prompt draws from its own stream seeded by
        ``seed`` (default 0: two identical calls give identical draws; ``seed=None`` draws fresh ones) and its
        index (``indices``: the prompts' global indices, default ``first_index, first_index + 1, ...``), so
        results do not depend on the batching. A prompt that does not fit the
        context with ``max_len`` raises ``UserError`` (``check_context=False``: the caller has checked)."""
        if decode is None:
            decode = DecodeConfig(max_len=max_len, sample=sample, temperature=temperature, seed=seed,
                                  stop_at_eos=stop_at_eos, chat_template=chat_template, prepend_bos=prepend_bos,
                                  keep_top_tokens=keep_top_tokens if top_k is None else top_k)
        if isinstance(prompts, str):
            prompts = [prompts]
        bos = self.prepend_bos(decode.prepend_bos)
        long = (self.too_long(prompts, decode.max_len, decode.chat_template, bos)
                if check_context and self.context_length else [])
        if long:
            where = int(indices[long[0]]) if indices is not None else first_index + long[0]
            raise UserError(f"prompt {where} (and {len(long) - 1} more) does not fit the model's "
                            f"context of {self.context_length} tokens with max_len={decode.max_len}; shorten it")
        return generate_profiles(
            self.model, self.tokenizer, self.lens, prompts, decode, metrics=metrics, batch_size=batch_size,
            first_index=first_index, indices=indices, batch_order=batch_order, keep_residuals=keep_residuals,
            prepend_bos=bos, budget_bytes=self.budget_bytes, on_batch=on_batch,
        )

    def profile_prompt(self, prompts: Sequence[str] | str, *, metrics=("shannon",), batch_size: int = 8,
                       chat_template: bool = False, prepend_bos="auto") -> PromptProfile:
        """Metrics at every prompt position, one forward pass per batch: ``[prompt, position, layer]``."""
        if isinstance(prompts, str):
            prompts = [prompts]
        return prompt_profiles(self.model, self.tokenizer, self.lens, prompts, metrics=metrics,
                               batch_size=batch_size, chat_template=chat_template,
                               prepend_bos=self.prepend_bos(prepend_bos), budget_bytes=self.budget_bytes)

    # ------------------------------------------------------------------ reference-compatible API
    def generate_with_activations(self, prompt: str, max_len: int = 100, layer_name: str = "hook_resid_post",
                                  verbose: bool = True, sample: bool = False, temperature: float = 1.0):
        """Returns ``(prompt + generated text, activations [T, L, d_model] float32 numpy)``."""
        if layer_name != "hook_resid_post":
            raise UserError(f"layer_name {layer_name!r} is not supported: profiles use 'hook_resid_post'")
        prof = self.profile([prompt], max_len=max_len, sample=sample, temperature=temperature, keep_residuals=True)
        text = prompt + prof.texts[0]
        if verbose:
            print(text)
        return text, prof.residuals[0]

    def _as_tensor(self, activations) -> torch.Tensor:
        x = torch.as_tensor(np.asarray(activations) if not isinstance(activations, torch.Tensor) else activations)
        if x.shape[-1] != self.d_model:
            raise UserError(f"activations end in {x.shape[-1]}, expected d_model={self.d_model} ([..., layer, d_model])")
        return x.to(self.device)

    def decode_activations(self, activations) -> torch.Tensor:
        """Full lens logits ``[..., layer, vocab]`` (float32) of activations ``[..., layer, d_model]``."""
        with torch.no_grad():
            return self.lens.logits(self._as_tensor(activations))

    def _windowed(self, activations, metric, num_windows: int) -> np.ndarray:
        metric = parse_metrics([metric])[0]
        x = self._as_tensor(activations)
        if x.dim() != 3:
            raise UserError(f"activations must be [T, layer, d_model] (got shape {tuple(x.shape)})")
        vals = self.lens.metrics(x, [metric], budget_bytes=self.budget_bytes)[metric.key]  # [T, L]
        return window_mean(vals.cpu().numpy(), num_windows, axis=0)

    def calculate_entropy(self, activations, num_windows: int = 10) -> np.ndarray:
        """Shannon entropy (nats) ``[num_windows, layer]`` of activations ``[T, layer, d_model]``."""
        return self._windowed(activations, "shannon", num_windows)

    def calculate_renyi_entropy(self, activations, alpha: float, num_windows: int = 10) -> np.ndarray:
        """Rényi entropy of order ``alpha`` (nats) ``[num_windows, layer]``."""
        return self._windowed(activations, Metric("renyi", float(alpha)) if alpha != 1 else "shannon", num_windows)

    def calculate_moment(self, activations, power: float, num_windows: int = 10) -> np.ndarray:
        """``mean(p^power)`` over the vocabulary, ``[num_windows, layer]``."""
        return self._windowed(activations, Metric("moment", float(power)), num_windows)

    def calculate_entropy_thresholded(self, activations, num_windows: int = 10) -> np.ndarray:
        """Entropy (nats) of p restricted to p > mean(p) - std(p), renormalised: ``[num_windows, layer]``."""
        return self._windowed(activations, "entropy_thresholded", num_windows)

    def calculate_moment_thresholded(self, activations, power: float, num_windows: int = 10) -> np.ndarray:
        """Mean of p^power over entries with p > mean(p) - std(p): ``[num_windows, layer]``."""
        return self._windowed(activations, Metric("moment_thresholded", float(power)), num_windows)

    def calculate_entropy_batched(self, activations, num_windows: int = 10) -> np.ndarray:
        """Shannon entropy (nats) ``[batch, num_windows, layer]`` of activations ``[batch, T, layer, d]``."""
        x = self._as_tensor(activations)
        if x.dim() != 4:
            raise UserError(f"activations must be [batch, T, layer, d_model] (got shape {tuple(x.shape)})")
        vals = self.lens.metrics(x, ["shannon"], budget_bytes=self.budget_bytes)["entropy"]
        return window_mean(vals.cpu().numpy(), num_windows, axis=1)

    def calculate_anchored_renyi_entropy(self, activations, anchors=(), alpha: float = 1, num_windows: int = 1):
        """Rényi entropy (nats) of the lens distribution restricted to ``anchors`` (token ids or
        strings that are single tokens) and renormalised there: ``[num_windows, layer]``."""
        ids = self._anchor_ids(anchors)
        x = self._as_tensor(activations)
        with torch.no_grad():
            normed = self.lens.normalize(x)
            sub = next(self.lens.logits_chunks(normed, self.lens.vocab_size, rows=ids))
        metric = Metric("renyi", float(alpha)) if alpha != 1 else Metric("shannon")
        vals = metrics_from_logits(sub, [metric], budget_bytes=self.budget_bytes)[metric.key]
        return window_mean(vals.cpu().numpy(), num_windows, axis=0)

    def _anchor_ids(self, anchors) -> torch.Tensor:
        if anchors is None or len(anchors) == 0:
            raise UserError("anchors must list at least one token (ids or single-token strings)")
        ids = []
        for a in anchors:
            if isinstance(a, str):
                toks = self.tokenizer(a, add_special_tokens=False)["input_ids"]
                if len(toks) != 1:
                    raise UserError(f"anchor {a!r} is {len(toks)} tokens; give single tokens or ids")
                a = toks[0]
            a = int(a)
            if not 0 <= a < self.d_vocab:
                raise UserError(f"anchor id {a} is outside the vocabulary [0, {self.d_vocab})")
            ids.append(a)
        return torch.tensor(sorted(set(ids)), device=self.device)

    # ------------------------------------------------------------------ interventions
    def _hook_module(self, block: int, hook: str) -> nn.Module:
        if not isinstance(block, int) or not 0 <= block < self.n_layers:
            raise UserError(f"block must be an integer in [0, {self.n_layers}) (got {block!r})")
        blk = self.lens.blocks[block]
        if hook not in HOOKS:
            raise UserError(f"unknown hook {hook!r}; use {', '.join(HOOKS)}")
        if hook == "hook_resid_post":
            return blk
        if isinstance(self._writers, Exception):
            raise UserError(f"{hook} is not available for this model: {self._writers}")
        return blk.get_submodule(self._writers[hook])

    def residual_writers(self) -> dict[str, str]:
        """The modules (names inside a block) whose outputs ``hook_attn_out`` / ``hook_mlp_out`` scale:
        what the block adds to the residual stream (after Gemma's post-norms, say)."""
        self._hook_module(0, "hook_attn_out")
        return dict(self._writers)

    def add_scale_activations_layer(self, block: int, hook: str, scaling_factor: float) -> None:
        """Multiply ``hook`` of ``block`` by ``scaling_factor`` in every later forward pass, as
        TransformerLens means the hooks: ``hook_resid_post`` the block's output, ``hook_attn_out`` /
        ``hook_mlp_out`` what attention / the MLP add to the residual stream (in sandwich-norm models
        such as Gemma-2/3, the output of the post-norm, not the raw ``self_attn`` output that the norm
        would rescale back). Setting it again replaces the earlier factor (factors do not stack)."""
        mod = self._hook_module(block, hook)
        self.undo_scaling_at_layer(block, hook)
        self._scalings[(block, hook)] = mod.register_forward_hook(_scaling_hook(float(scaling_factor)), prepend=True)

    def undo_scaling_at_layer(self, block: int, hook: str | None = None) -> None:
        """Remove the scaling hooks of ``block`` (all of its hooks, or only ``hook``)."""
        for key in [k for k in self._scalings if k[0] == block and (hook is None or k[1] == hook)]:
            self._scalings.pop(key).remove()

    def undo_all_scalings(self) -> None:
        """Remove every scaling hook."""
        for handle in self._scalings.values():
            handle.remove()
        self._scalings.clear()

    def __repr__(self) -> str:
        cfg = text_config(self.model)
        return (f"ModelInspector({self.name!r}, layers={self.n_layers}, d_model={self.d_model}, "
                f"vocab={self.d_vocab}, device={self.device}, dtype={self.dtype}, type={getattr(cfg, 'model_type', '?')})")


def _scaling_hook(factor: float):
    """A forward hook that multiplies a module's hidden-state output by ``factor``."""

    def hook(_mod, _args, out):
        return map_first_tensor(out, lambda t: t * factor)

    return hook
