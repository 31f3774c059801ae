"""Scores under skip conditions: letter log-probabilities of multiple-choice prompts and next-token loss.

Both run the replay engine (``method="replay"``) or the hook reference (``method="hooks"``, one full forward per
condition) over batches of token rows in the project's BOS policy, sorted by length (results do not depend on the
batching), and return typed results with explicit axes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import UserError
from .replay import (
    _capture,
    _device,
    _keep_last,
    _model_inputs,
    _replay,
    _vocab,
    check_replay,
    skip_by_hooks,
    validate_conditions,
)

__all__ = ["METHODS", "LetterForm", "LetterScores", "LossScores", "letter_form", "letter_logprobs", "next_token_loss"]

METHODS = ("replay", "hooks")


# ----------------------------------------------------------------------------- letters
@dataclass(frozen=True)
class LetterForm:
    """How a letter follows the prompt: ``text`` is what follows it for letter A (``"A"`` or ``" A"``);
    ``space_moved``: the prompt's trailing space was removed and the letter carries it."""

    text: str
    space_moved: bool

    def identity(self) -> dict:
        return {"letter_form": self.text, "space_moved": self.space_moved}


def _rows(inspector, texts: Sequence[str]) -> list[list[int]]:
    """Unpadded token rows with the project's BOS policy (what profiling feeds the model)."""
    rows = []
    for i in range(0, len(texts), 256):
        enc = inspector.encode(list(texts[i: i + 256]), prepend_bos="auto")
        ids, mask = enc["input_ids"].cpu(), enc["attention_mask"].bool().cpu()
        rows += [ids[r][mask[r]].tolist() for r in range(ids.shape[0])]
    return rows


def _letter_ids(inspector, prompts: Sequence[str], conts: Sequence[str]) -> tuple[tuple[int, ...] | None, str]:
    """The token ids of ``conts`` after every prompt, if each is one token appended to the prompt's tokens."""
    rows = _rows(inspector, [t for p in prompts for t in (p, *(p + c for c in conts))])
    ids: list = [None] * len(conts)
    step = len(conts) + 1
    for i, p in enumerate(prompts):
        base = rows[i * step]
        for n, c in enumerate(conts):
            row = rows[i * step + 1 + n]
            if len(row) != len(base) + 1 or row[:-1] != base:
                return None, f"prompt {i} + {c!r} is not the prompt's tokens plus one (ends {row[len(base) - 1:]})"
            if ids[n] not in (None, row[-1]):
                return None, f"{c!r} is token {ids[n]} after prompt 0 but {row[-1]} after prompt {i}"
            ids[n] = row[-1]
    if len(set(ids)) != len(ids):
        return None, f"the letters {list(conts)} share token ids {ids}"
    return tuple(ids), ""


def letter_form(inspector, prompts: Sequence[str], letters: str | Sequence[str] = "ABCD"
                ) -> tuple[LetterForm, list[str], tuple[int, ...]]:
    """The letter form the tokenizer uses, the prompts as they are scored, and the letters' token ids.

    ``"A"`` after the prompt as is, if each letter is one token appended to the prompt's tokens for every
    prompt; else ``" A"`` after the prompt with its trailing space removed; else :class:`UserError`."""
    letters = list(letters)
    ids, why = _letter_ids(inspector, prompts, letters)
    if ids is not None:
        return LetterForm(letters[0], False), list(prompts), ids
    moved = [p.removesuffix(" ") for p in prompts]
    ids, why2 = _letter_ids(inspector, moved, [" " + x for x in letters])
    if ids is not None:
        return LetterForm(" " + letters[0], any(p.endswith(" ") for p in prompts)), moved, ids
    raise UserError(f"the letters {''.join(letters)} are not single tokens after the prompts in either form: "
                    f"{why}; and with the trailing space moved, {why2}")


@dataclass(frozen=True)
class LetterScores:
    """Letter log-probabilities under each skip condition.

    ``logprob``: float32 ``[prompt, condition, letter]``, nats, log-softmax over the whole vocabulary at the
    last prompt position; ``conditions``: the skipped blocks of each condition (sorted; ``()`` no skip);
    ``letter_ids``: the letters' token ids; ``form``: how the letters follow the prompts."""

    logprob: np.ndarray
    conditions: tuple
    letters: tuple
    letter_ids: tuple
    form: LetterForm

    def __post_init__(self):
        shape = self.logprob.shape
        if self.logprob.ndim != 3 or shape[1:] != (len(self.conditions), len(self.letters)):
            raise ValueError(f"logprob must be [prompt, {len(self.conditions)} conditions, {len(self.letters)} "
                             f"letters], got {shape}")

    def choice(self) -> np.ndarray:
        """Index of the most likely letter, int ``[prompt, condition]``."""
        return self.logprob.argmax(-1)

    def correct(self, answers) -> np.ndarray:
        """bool ``[prompt, condition]``: the most likely letter is the answer (``answers``: letter index per prompt)."""
        answers = np.asarray(answers)
        if answers.shape != self.logprob.shape[:1]:
            raise UserError(f"answers must give one letter index per prompt ({self.logprob.shape[0]}), got {answers.shape}")
        return self.choice() == answers[:, None]


@dataclass(frozen=True)
class LossScores:
    """Next-token loss under each skip condition: ``nll`` float64 ``[text, condition]``, mean negative
    log-likelihood in nats/token over the text's ``n_tokens`` int64 ``[text]`` predicted tokens."""

    nll: np.ndarray
    n_tokens: np.ndarray
    conditions: tuple

    def __post_init__(self):
        if self.nll.ndim != 2 or self.nll.shape[1] != len(self.conditions) or self.n_tokens.shape != self.nll.shape[:1]:
            raise ValueError(f"nll must be [text, {len(self.conditions)} conditions] and n_tokens [text], "
                             f"got {self.nll.shape} and {self.n_tokens.shape}")

    def mean(self) -> np.ndarray:
        """Token-weighted mean nats/token over all texts, ``[condition]``."""
        return (self.nll * self.n_tokens[:, None]).sum(0) / self.n_tokens.sum()


# ----------------------------------------------------------------------------- scoring
def _pad(inspector, rows: list[list[int]]) -> dict:
    """Left-padded ``input_ids`` / ``attention_mask`` ``[batch, seq]`` of token rows."""
    tok = inspector.tokenizer
    pad = next((t for t in (tok.pad_token_id, tok.eos_token_id) if t is not None), 0)
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), int(pad), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
        mask[i, width - len(r):] = 1
    return {"input_ids": ids.to(_device(inspector)), "attention_mask": mask.to(_device(inspector))}


def _check_rows(inspector, rows: list[list[int]], what: str, hint: str) -> None:
    limit = getattr(inspector, "context_length", None)
    long = [i for i, r in enumerate(rows) if limit and len(r) > limit]
    if long:
        raise UserError(f"{what} {long[0]} (and {len(long) - 1} more) is {len(rows[long[0]])} tokens, over the model's "
                        f"context of {limit}; {hint}")


def _sweep(inspector, rows, conds, *, batch_size: int, method: str, stack: int, from_hidden, from_logits,
           all_logits: bool) -> np.ndarray:
    """``[row, condition, ...]``: ``from_hidden(last block output [batch, seq, d], enc)`` (replay) or
    ``from_logits(model logits, enc)`` (hooks), each giving a float array ``[batch, ...]``."""
    if method not in METHODS:
        raise UserError(f"method must be one of {', '.join(METHODS)} (got {method!r})")
    if not isinstance(batch_size, int) or batch_size < 1 or not isinstance(stack, int) or stack < 1:
        raise UserError(f"batch_size and stack must be positive integers (got {batch_size!r}, {stack!r})")
    unique = list(dict.fromkeys(conds))
    kinds = check_replay(inspector).kinds if method == "replay" else None
    keep = {} if all_logits else _keep_last(inspector)
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    out: list = [None] * len(rows)
    for start in range(0, len(rows), batch_size):
        idx = order[start: start + batch_size]
        enc = _pad(inspector, [rows[i] for i in idx])
        per = {}
        if method == "replay":
            finals = _replay(inspector, _capture(inspector, enc), unique, stack, kinds)
            with torch.no_grad():
                for c in unique:
                    per[c] = from_hidden(finals[c], enc)
            del finals
        else:
            for c in unique:
                with skip_by_hooks(inspector, c), torch.no_grad():
                    res = inspector.model(**_model_inputs(inspector, enc), use_cache=False, **keep)
                    per[c] = from_logits(res.logits.float(), enc)
        for n, i in enumerate(idx):
            out[i] = np.stack([per[c][n] for c in conds])
    return np.stack(out)


def letter_logprobs(inspector, prompts: Sequence[str], conditions, *, letters: str | Sequence[str] = "ABCD",
                    batch_size: int = 8, method: str = "replay", stack: int = 1) -> LetterScores:
    """Log-probabilities (nats, over the whole vocabulary) of each letter after each prompt, under each
    condition (a tuple of skipped blocks; ``()``: none): :class:`LetterScores` ``[prompt, condition, letter]``.

    The letter form is chosen by :func:`letter_form`; tokens follow the project's BOS policy. ``method``:
    ``"replay"`` (only what a skip changes) or ``"hooks"`` (the reference: one full forward per condition).
    ``stack``: conditions sharing one block call along the batch axis (replay)."""
    if isinstance(prompts, str) or not prompts:
        raise UserError("prompts must be a non-empty list of strings")
    conds = validate_conditions(conditions, inspector.n_layers)
    form, fed, ids = letter_form(inspector, prompts, letters)
    rows = _rows(inspector, fed)
    _check_rows(inspector, rows, "prompt", "shorten it")
    sel = torch.tensor(ids, device=_device(inspector))

    def from_logits(logits, _enc):
        return torch.log_softmax(logits[:, -1, :].float(), dim=-1)[:, sel].cpu().numpy()

    lp = _sweep(inspector, rows, conds, batch_size=batch_size, method=method, stack=stack, all_logits=False,
                from_hidden=lambda h, enc: from_logits(inspector.lens.logits(h[:, -1:, :]), enc),
                from_logits=from_logits)
    return LetterScores(lp.astype(np.float32), tuple(conds), tuple(letters), ids, form)


def _mean_nll(logits_of, enc: dict, budget: int, vocab: int) -> np.ndarray:
    """Mean next-token NLL (nats/token) per row ``[batch]``; ``logits_of(batch_idx, pos_idx)`` gives fp32
    logits ``[n, vocab]`` predicting the token after those positions."""
    ids, mask = enc["input_ids"], enc["attention_mask"].bool()
    b, p = torch.nonzero(mask[:, :-1] & mask[:, 1:], as_tuple=True)
    total = torch.zeros(ids.shape[0], dtype=torch.float64, device=ids.device)
    chunk = max(1, budget // (vocab * 4 * 3))
    for i in range(0, len(b), chunk):
        bi, pi = b[i: i + chunk], p[i: i + chunk]
        nll = torch.nn.functional.cross_entropy(logits_of(bi, pi).float(), ids[bi, pi + 1], reduction="none")
        total.index_add_(0, bi, nll.double())
    return (total / (mask.sum(1) - 1).clamp(min=1)).cpu().numpy()


def next_token_loss(inspector, texts: Sequence[str], conditions, *, batch_size: int = 8, max_tokens: int | None = None,
                    method: str = "replay", stack: int = 1) -> LossScores:
    """Mean next-token negative log-likelihood (nats/token) of each text under each condition:
    :class:`LossScores` ``[text, condition]``. Tokens follow the project's BOS policy; ``max_tokens`` keeps
    each text's first tokens (BOS included). ``method``/``stack`` as in :func:`letter_logprobs`."""
    if isinstance(texts, str) or not texts:
        raise UserError("texts must be a non-empty list of strings")
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 2):
        raise UserError(f"max_tokens must be an integer >= 2 (got {max_tokens!r})")
    conds = validate_conditions(conditions, inspector.n_layers)
    rows = [r[:max_tokens] for r in _rows(inspector, texts)]
    short = [i for i, r in enumerate(rows) if len(r) < 2]
    if short:
        raise UserError(f"text {short[0]} has {len(rows[short[0]])} token(s); a next-token loss needs at least 2")
    _check_rows(inspector, rows, "text", "pass max_tokens")
    budget, vocab = getattr(inspector, "budget_bytes", 1 << 28), _vocab(inspector)
    nll = _sweep(inspector, rows, conds, batch_size=batch_size, method=method, stack=stack, all_logits=True,
                 from_hidden=lambda h, enc: _mean_nll(lambda b, p: inspector.lens.logits(h[b, p]), enc, budget, vocab),
                 from_logits=lambda lg, enc: _mean_nll(lambda b, p: lg[b, p], enc, budget, vocab))
    return LossScores(nll.astype(np.float64), np.array([len(r) - 1 for r in rows], dtype=np.int64), tuple(conds))
