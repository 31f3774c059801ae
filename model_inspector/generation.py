"""Generation that profiles as it goes.

``model.generate`` (KV cache, left padding, position ids: all handled by transformers for every
architecture) runs with forward hooks on every block. After each forward pass of the model, a
hook on the model stacks the blocks' last-position outputs ``[batch, layer, d_model]`` and reduces
them to the requested metrics through :class:`~model_inspector.lens.LogitLens`; only the small
``[batch, layer]`` arrays are kept. A forward pass yields the distribution of the next token, so
step ``t`` of a profile is the distribution that produced generated token ``t``.

Decoding is pure: greedy (argmax) or multinomial sampling at ``temperature`` with no top-k/top-p,
no repetition penalty and whatever the checkpoint's ``generation_config.json`` says ignored.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

from .architecture import fallback_token, pad_token_id
from .decoding import DecodeConfig
from .errors import UserError
from .lens import LogitLens
from .metrics import DEFAULT_BUDGET_BYTES, TOP_IDS, TOP_LOGPROBS, parse_metrics
from .profiling import Profile, PromptProfile
from .run.batching import plan_batches, prompt_seed

__all__ = ["generate_profiles", "prompt_profiles", "encode_prompts", "token_rows", "pad_rows", "PromptSampler"]

class PromptSampler(LogitsProcessor):
    """Multinomial sampling at ``temperature`` (no top-k/top-p), one ``torch.Generator`` per row seeded
    with that prompt's :func:`prompt_seed`. Returns scores that are 0 at the drawn token and -inf
    elsewhere, so that greedy selection in ``model.generate`` takes the draw."""

    def __init__(self, seeds: Sequence[int], temperature: float):
        self.seeds, self.temperature, self.gens = [int(s) for s in seeds], float(temperature), None

    def __call__(self, input_ids, scores):
        if self.gens is None:
            self.gens = [torch.Generator(device=scores.device).manual_seed(s) for s in self.seeds]
        probs = torch.softmax(scores.float() / self.temperature, dim=-1)  # [batch, vocab]
        picks = torch.cat([torch.multinomial(probs[i], 1, generator=g) for i, g in enumerate(self.gens)])
        out = torch.full_like(scores, float("-inf"))
        out[torch.arange(len(picks), device=scores.device), picks] = 0.0
        return out


def encode_prompts(tokenizer, prompts: Sequence[str], *, chat_template: bool = False, prepend_bos: bool | None = None,
                   device=None) -> dict:
    """Tokenise ``prompts`` with left padding (:func:`token_rows`, then :func:`pad_rows`).
    Returns ``input_ids`` and ``attention_mask``, both ``[batch, seq]``."""
    return pad_rows(tokenizer, token_rows(tokenizer, prompts, chat_template=chat_template, prepend_bos=prepend_bos),
                    device=device)


def token_rows(tokenizer, prompts: Sequence[str], *, chat_template: bool = False,
               prepend_bos: bool | None = None) -> list[list[int]]:
    """The token ids of each prompt, unpadded. An empty prompt becomes the BOS token alone.

    ``prepend_bos``: ``True`` — every sequence starts with exactly one BOS token (the tokenizer's
    ``bos_token``, else its EOS token, as TransformerLens does); ``False`` — none (a BOS the
    tokenizer adds is removed); ``None`` — whatever the tokenizer does. Resolve the ``auto`` policy
    with :func:`~model_inspector.architecture.resolve_prepend_bos`. ``chat_template=True`` wraps
    each prompt as one user turn of the tokenizer's chat template."""
    bos = fallback_token(tokenizer) if prepend_bos is not None else None
    rows = []
    for p in prompts:
        if chat_template:
            if not getattr(tokenizer, "chat_template", None):
                raise UserError("--chat_template: this tokenizer has no chat template")
            ids = tokenizer.apply_chat_template(
                [{"role": "user", "content": p}], tokenize=True, add_generation_prompt=True
            )
            if isinstance(ids, dict) or hasattr(ids, "keys"):
                ids = ids["input_ids"]
        else:
            ids = tokenizer(p, add_special_tokens=True)["input_ids"]
        ids = list(ids)
        if prepend_bos and (not ids or ids[0] != bos):
            ids = [bos] + ids
        elif prepend_bos is False and ids and ids[0] == bos and len(ids) > 1:
            ids = ids[1:]
        if not ids:
            ids = [fallback_token(tokenizer)]
        rows.append(ids)
    return rows


def pad_rows(tokenizer, rows: Sequence[Sequence[int]], *, device=None) -> dict:
    """Left-pad token rows: ``input_ids`` and ``attention_mask``, both ``[batch, seq]``."""
    width = max(len(r) for r in rows)
    pad = pad_token_id(tokenizer)
    input_ids = torch.full((len(rows), width), int(pad), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        input_ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
        mask[i, width - len(r) :] = 1
    if device is not None:
        input_ids, mask = input_ids.to(device), mask.to(device)
    return {"input_ids": input_ids, "attention_mask": mask}


@contextmanager
def _bare_generation_config(model):
    """Hide the checkpoint's generation_config.json defaults (top-k, top-p, eos...) during a call."""
    old = getattr(model, "generation_config", None)
    model.generation_config = GenerationConfig()
    try:
        yield
    finally:
        model.generation_config = old


def _input_device(model) -> torch.device:
    emb = model.get_input_embeddings()
    return emb.weight.device


def generate_profiles(
    model,
    tokenizer,
    lens: LogitLens,
    prompts: Sequence[str],
    decode: DecodeConfig,
    *,
    metrics=("shannon",),
    batch_size: int = 8,
    first_index: int = 0,
    indices: Sequence[int] | None = None,
    batch_order: str = "length",
    keep_residuals: bool = False,
    prepend_bos: bool | None = None,
    budget_bytes: int = DEFAULT_BUDGET_BYTES,
    on_batch: Callable[[Profile, np.ndarray], None] | None = None,
) -> Profile:
    """Generate ``decode.max_len`` tokens for every prompt and profile every layer at every step.

    ``decode``: the :class:`~model_inspector.decoding.DecodeConfig` (validated already);
    ``prepend_bos``: its BOS policy resolved for this model (``True``/``False``; ``None``: the
    tokenizer's own behaviour). ``indices``: the global index of each prompt (default
    ``first_index, first_index + 1, ...``); a sampled prompt draws from its own stream seeded by
    ``prompt_seed(decode.seed, index)``, so a split, resumed or reordered run draws what an
    uninterrupted one draws. ``batch_order``: see :func:`plan_batches`. ``on_batch(profile_of_batch,
    indices_of_batch)`` is called after each batch. Returns a :class:`Profile` with arrays
    ``[prompt, token, layer]`` in the order of ``prompts``, whatever the batch order.
    """
    metrics = parse_metrics(metrics)
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise UserError(f"batch_size must be an integer >= 1 (got {batch_size!r})")
    prompts = list(prompts)
    if not prompts:
        raise UserError("no prompts given")
    index = np.arange(first_index, first_index + len(prompts)) if indices is None else np.asarray(indices)
    if index.shape != (len(prompts),):
        raise UserError(f"{len(index)} indices for {len(prompts)} prompts")
    rows = token_rows(tokenizer, prompts, chat_template=decode.chat_template, prepend_bos=prepend_bos)
    plan = plan_batches([len(r) for r in rows], batch_size, order=batch_order)
    if decode.sample:
        base = decode.seed if decode.seed is not None else int(torch.randint(0, 2**62, (1,)).item())
    parts = []
    for idx in plan:
        part = _generate_batch(
            model, tokenizer, lens, [prompts[i] for i in idx], [rows[i] for i in idx], decode, metrics=metrics,
            seeds=[prompt_seed(base, index[i]) for i in idx] if decode.sample else None,
            keep_residuals=keep_residuals, budget_bytes=budget_bytes,
        )
        if on_batch is not None:
            on_batch(part, index[idx])
        parts.append(part)
    out = Profile.concat(parts)
    order = np.concatenate(plan)
    return out if np.array_equal(order, np.arange(len(order))) else out.take(np.argsort(order))


def _generate_batch(model, tokenizer, lens, prompts, rows, decode: DecodeConfig, *, metrics, seeds, keep_residuals,
                    budget_bytes) -> Profile:
    """One batch. ``seeds``: one per prompt for sampling (:class:`PromptSampler`), ``None`` for greedy."""
    max_len = decode.max_len
    stop_at_eos, top_k = decode.stop_at_eos, decode.keep_top_tokens
    enc = pad_rows(tokenizer, rows, device=_input_device(model))
    eos = tokenizer.eos_token_id
    pad = pad_token_id(tokenizer)
    # transformers selects greedily; a sampled run draws in PromptSampler, one stream per prompt
    gc = GenerationConfig(
        max_new_tokens=int(max_len), min_new_tokens=0, do_sample=False, repetition_penalty=1.0,
        num_beams=1, use_cache=True, eos_token_id=eos if stop_at_eos else None, pad_token_id=int(pad),
    )
    processors = LogitsProcessorList([PromptSampler(seeds, decode.temperature)] if seeds is not None else [])
    steps: dict[str, list] = {m.key: [] for m in metrics}
    resids, tops_i, tops_v = [], [], []

    with lens.capture(last_only=True) as slots:

        def on_forward(_mod, _args, _out):
            resid = torch.stack(slots, dim=1)  # [batch, layer, d_model]
            vals = lens.metrics(resid, metrics, budget_bytes=budget_bytes, top_k=top_k)  # one vocabulary pass
            if top_k:
                tops_i.append(vals.pop(TOP_IDS).cpu())
                tops_v.append(vals.pop(TOP_LOGPROBS).cpu())
            for k, v in vals.items():
                steps[k].append(v.cpu())
            if keep_residuals:
                resids.append(resid.float().cpu())

        handle = model.register_forward_hook(on_forward)
        try:
            with torch.no_grad(), _bare_generation_config(model):
                seq = model.generate(**enc, generation_config=gc, logits_processor=processors)
        finally:
            handle.remove()

    new = seq[:, enc["input_ids"].shape[1] :].cpu()
    n_steps = new.shape[1]
    b = len(prompts)
    n_valid = np.full(b, n_steps, dtype=np.int64)
    if stop_at_eos and eos is not None:
        eos_ids = torch.tensor(eos if isinstance(eos, (list, tuple)) else [eos])
        is_eos = torch.isin(new, eos_ids).numpy()
        for i in range(b):
            hits = np.flatnonzero(is_eos[i])
            if hits.size:
                n_valid[i] = hits[0] + 1
    valid = np.arange(max_len)[None, :] < n_valid[:, None]  # [batch, token]

    def assemble(seq_list, fill):
        arr = torch.stack(seq_list[:n_steps], dim=1).numpy()  # [batch, steps, ...]
        out = np.full((b, max_len) + arr.shape[2:], fill, dtype=arr.dtype)
        out[:, :n_steps] = arr
        out[~valid] = fill
        return out

    token_ids = np.full((b, max_len), -1, dtype=np.int64)
    token_ids[:, :n_steps] = new.numpy()
    token_ids[~valid] = -1
    texts = [tokenizer.decode(token_ids[i, : n_valid[i]].tolist(), skip_special_tokens=True) for i in range(b)]
    values = {k: assemble(v, np.nan).astype(np.float32) for k, v in steps.items()}
    _warn_nonfinite(values, valid)
    return Profile(
        prompts=list(prompts),
        texts=texts,
        token_ids=token_ids,
        n_tokens=n_valid,
        metrics=values,
        definitions={m.key: m.definition for m in metrics},
        residuals=assemble(resids, np.nan) if keep_residuals else None,
        top_ids=assemble(tops_i, -1) if top_k else None,
        top_logprobs=assemble(tops_v, np.nan) if top_k else None,
    )


_WARNED_NONFINITE = False


def _warn_nonfinite(values: dict, valid: np.ndarray) -> None:
    """Warn once per process when a generated step (not one after an early stop) has a non-finite metric: a
    model that yields NaN or inf for some inputs (the runner refuses such rows; the library says so)."""
    global _WARNED_NONFINITE
    if _WARNED_NONFINITE:
        return
    bad = [k for k, v in values.items() if not np.isfinite(v[valid]).all()]
    if bad:
        _WARNED_NONFINITE = True
        rows = sorted({int(i) for k in bad for i in np.nonzero(~np.isfinite(values[k]).all(axis=2) & valid)[0]})
        warnings.warn(f"non-finite metrics ({', '.join(bad)}) at generated steps of {len(rows)} prompt(s) of a batch: "
                      "the model yields NaN or inf for some inputs (shown once)", RuntimeWarning, stacklevel=4)


def real_positions(model, enc: dict) -> dict:
    """``{"position_ids": [batch, seq]}`` counted over the real tokens of ``enc`` (so that left padding shifts
    nothing, also for absolute-position models such as GPT-2), or ``{}`` where ``model.forward`` takes none."""
    if "position_ids" not in inspect.signature(model.forward).parameters:
        return {}
    return {"position_ids": (enc["attention_mask"].long().cumsum(-1) - 1).clamp(min=0)}


def prompt_profiles(
    model, tokenizer, lens: LogitLens, prompts: Sequence[str], *, metrics=("shannon",), batch_size: int = 8,
    chat_template: bool = False, prepend_bos: bool | None = None, budget_bytes: int = DEFAULT_BUDGET_BYTES,
) -> PromptProfile:
    """Metrics at every prompt position in one forward pass per batch: ``[prompt, position, layer]``."""
    metrics = parse_metrics(metrics)
    prompts = list(prompts)
    rows: list[dict] = []
    ids_rows = []
    for start in range(0, len(prompts), batch_size):
        enc = encode_prompts(tokenizer, prompts[start : start + batch_size], chat_template=chat_template,
                             prepend_bos=prepend_bos, device=_input_device(model))
        with torch.no_grad(), lens.capture(last_only=False) as slots:
            model(**enc, **real_positions(model, enc), use_cache=False)
            resid = torch.stack(slots, dim=2)  # [batch, seq, layer, d_model]
            vals = lens.metrics(resid, metrics, budget_bytes=budget_bytes)
        mask = enc["attention_mask"].bool().cpu()
        for i in range(mask.shape[0]):
            m = mask[i]
            rows.append({k: v[i][m.to(v.device)].cpu().numpy() for k, v in vals.items()})
            ids_rows.append(enc["input_ids"][i][m.to(enc["input_ids"].device)].cpu().numpy())
    width = max(len(r) for r in ids_rows)
    n_pos = np.array([len(r) for r in ids_rows], dtype=np.int64)
    token_ids = np.full((len(prompts), width), -1, dtype=np.int64)
    out = {m.key: np.full((len(prompts), width, lens.n_layers), np.nan, dtype=np.float32) for m in metrics}
    for i, (r, ids) in enumerate(zip(rows, ids_rows)):
        token_ids[i, : len(ids)] = ids
        for k in out:
            out[k][i, : len(ids)] = r[k]
    return PromptProfile(prompts=prompts, token_ids=token_ids, n_positions=n_pos, metrics=out)
