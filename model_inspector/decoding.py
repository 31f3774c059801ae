"""One decoding configuration, validated once and carried unchanged from the command line (or the
API) to the batch loop."""

from __future__ import annotations

from .options import Settings

__all__ = ["DecodeConfig"]


class DecodeConfig(Settings):
    """How prompts are encoded and tokens generated: the options of the ``decode`` group
    (:mod:`model_inspector.options`), validated when made.

    * ``max_len``: generated tokens per prompt;
    * ``sample`` / ``temperature``: greedy, or pure multinomial sampling at a temperature (no
      top-k/top-p, no repetition penalty);
    * ``seed``: sampling seed (each prompt draws from its own stream, seeded by the seed and the prompt's index);
    * ``stop_at_eos``: stop a row at EOS (later positions NaN); off by default, as the paper;
    * ``chat_template``: wrap prompts as one user turn of the tokenizer's chat template;
    * ``prepend_bos``: ``auto`` (what TransformerLens did for the model family), ``always``, ``never``;
    * ``keep_top_tokens``: how many top lens tokens to keep per layer and step (0: none). This is
      *not* a sampling top-k: decoding never truncates the distribution.
    """

    _groups = ("decode",)
