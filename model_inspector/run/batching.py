"""Which prompts share a batch, and each prompt's own random stream.

Batching changes only speed: a batch pads its prompts to the longest one, so ``length`` order
(prompts of similar token length together, sorted within windows of :data:`BUCKET_WINDOW` batches)
cuts the padded tokens of a run, and a sampled prompt draws from a stream seeded by its own index
(:func:`prompt_seed`), so its tokens do not depend on its batch, on a resume or on the number of
processes. Results come back in the prompts' order whatever the batch order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import UserError
from ..options import option

__all__ = ["BATCH_ORDERS", "BUCKET_WINDOW", "plan_batches", "prompt_seed"]

#: ``length``: prompts of similar token length share a batch (less padding; the default);
#: ``given``: consecutive prompts share a batch (the earlier behaviour). Declared with the ``batch_order`` option.
BATCH_ORDERS = option("batch_order").constraint.choices
#: ``length`` order sorts within windows of this many consecutive batches (so a partial run still
#: covers the data in order, window by window)
BUCKET_WINDOW = 16


def prompt_seed(seed: int, index: int) -> int:
    """Seed of prompt ``index``'s own random stream: its draws do not depend on which prompts share its
    batch, on the batch order, on a resume or on the number of processes."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def plan_batches(lengths: Sequence[int], batch_size: int, *, order: str = "length",
                 window: int = BUCKET_WINDOW) -> list[np.ndarray]:
    """Batches of prompt positions: ``order="given"`` cuts ``0..n-1`` into runs of ``batch_size``;
    ``order="length"`` sorts each window of ``window * batch_size`` consecutive prompts by token length
    (longest first, stable) before cutting, so that a batch pads to a length close to its prompts'.
    Every batch has ``batch_size`` prompts except the last one."""
    if order not in BATCH_ORDERS:
        raise UserError(f"batch order must be one of {', '.join(BATCH_ORDERS)} (got {order!r})")
    n = len(lengths)
    idx = np.arange(n)
    if order == "length":
        lengths = np.asarray(lengths)
        span = batch_size * window
        idx = np.concatenate([w[np.argsort(-lengths[w], kind="stable")] for w in np.array_split(
            idx, range(span, n, span))]) if n else idx
    return [idx[i : i + batch_size] for i in range(0, n, batch_size)]
