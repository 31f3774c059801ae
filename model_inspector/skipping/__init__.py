"""Skipping decoder blocks, computing only what a skip changes (claim iv of the paper: unequal importance).

A skipped block passes its input through unchanged (its output is its input hidden state). For one batch of
prompts the model runs once with pre-hooks capturing every block's input and arguments; a condition (a set of
skipped blocks whose first is ``s``) starts from the captured input of block ``s`` and replays only the later
blocks, then the lens's final modules and head. A sweep over the ``L`` single-block skips costs ``L(L+1)/2``
block evaluations instead of ``L^2`` (:mod:`.replay`). Scores (:mod:`.scores`):

* :func:`letter_logprobs` -> :class:`LetterScores`, ``logprob`` ``[prompt, condition, letter]`` (nats);
* :func:`next_token_loss` -> :class:`LossScores`, ``nll`` ``[text, condition]`` (nats/token).

Conditions are tuples of block indices (``()``: no skip). Models where a skip or the replay is ill-defined are
refused with :class:`SkipUnsupported` (a :class:`~model_inspector.errors.UserError`, one line saying why).
"""

from __future__ import annotations

from .replay import ReplayCheck, SkipUnsupported, check_replay, skip_by_hooks, validate_conditions
from .scores import METHODS, LetterForm, LetterScores, LossScores, letter_form, letter_logprobs, next_token_loss

__all__ = [
           "METHODS",
           "LetterForm",
           "LetterScores",
           "LossScores",
           "ReplayCheck",
           "SkipUnsupported",
           "check_replay",
           "letter_form",
           "letter_logprobs",
           "next_token_loss",
           "skip_by_hooks",
           "validate_conditions",
]
