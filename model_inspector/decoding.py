"""One decoding configuration, validated once and carried unchanged from the command line (or the
API) to the batch loop."""

from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass

from .errors import UserError

__all__ = ["DecodeConfig"]

#: BOS policies (see :mod:`model_inspector.architecture`).
BOS_POLICIES = ("auto", "always", "never")


@dataclass(frozen=True)
class DecodeConfig:
    """How prompts are encoded and tokens generated.

    * ``max_len``: generated tokens per prompt;
    * ``sample`` / ``temperature``: greedy, or pure multinomial sampling at a temperature (no
      top-k/top-p, no repetition penalty);
    * ``seed``: sampling seed (per batch: derived from the seed and the batch's first prompt index);
    * ``stop_at_eos``: stop a row at EOS (later positions NaN); off by default, as the paper;
    * ``chat_template``: wrap prompts as one user turn of the tokenizer's chat template;
    * ``prepend_bos``: ``auto`` (what TransformerLens did for the model family), ``always``, ``never``;
    * ``keep_top_tokens``: how many top lens tokens to keep per layer and step (0: none). This is
      *not* a sampling top-k: decoding never truncates the distribution.
    """

    max_len: int = 32
    sample: bool = False
    temperature: float = 1.0
    seed: int | None = None
    stop_at_eos: bool = False
    chat_template: bool = False
    prepend_bos: str = "auto"
    keep_top_tokens: int = 0

    def __post_init__(self):
        def whole(v):
            return isinstance(v, numbers.Integral) and not isinstance(v, bool)

        if not whole(self.max_len) or self.max_len < 1:
            raise UserError(f"max_len must be an integer >= 1 (got {self.max_len!r}); fix --max_len")
        if self.sample and not (isinstance(self.temperature, numbers.Real) and self.temperature > 0):
            raise UserError(f"temperature must be > 0 when sampling (got {self.temperature!r}); fix --temperature")
        if self.seed is not None and not whole(self.seed):
            raise UserError(f"seed must be an integer (got {self.seed!r})")
        if self.prepend_bos not in BOS_POLICIES:
            raise UserError(f"prepend_bos must be one of {', '.join(BOS_POLICIES)} (got {self.prepend_bos!r})")
        if not whole(self.keep_top_tokens) or self.keep_top_tokens < 0:
            raise UserError(f"keep_top_tokens must be an integer >= 0 (got {self.keep_top_tokens!r})")

    def as_dict(self) -> dict:
        return asdict(self)
