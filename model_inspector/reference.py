"""The original Entropy-Lens algorithm, kept as an independent reference for tests and benchmarks.

One prompt at a time, no KV cache: at every step the whole sequence is run again, the last
position's residual after each block is decoded through the full vocabulary (softmax over the
whole ``[layer, vocab]`` block), and Shannon entropy is taken. Slow by design.
"""

from __future__ import annotations

import numpy as np
import torch

from .architecture import resolve_prepend_bos
from .generation import encode_prompts
from .lens import LogitLens

__all__ = ["reference_profile"]


def reference_profile(model, tokenizer, lens: LogitLens, prompt: str, *, max_len: int, sample: bool = False,
                      temperature: float = 1.0, keep_residuals: bool = False, prepend_bos="auto"):
    """Returns ``(entropy [T, L] float64 nats, generated ids [T], residuals [T, L, d] or None)``.

    ``prepend_bos="auto"`` prepends BOS where TransformerLens did (the original ran on it)."""
    enc = encode_prompts(tokenizer, [prompt], prepend_bos=resolve_prepend_bos(prepend_bos, model), device=lens.device)
    ids = enc["input_ids"]
    ents, toks, res = [], [], []
    with torch.no_grad():
        for _ in range(max_len):
            with lens.capture(last_only=True) as slots:
                out = model(input_ids=ids, use_cache=False)
                resid = torch.stack(slots, dim=1)[0]  # [layer, d_model]
            logits = lens.logits(resid).double()  # [layer, vocab], full block
            logp = torch.log_softmax(logits, dim=-1)
            ents.append((-(logp.exp() * logp).nan_to_num().sum(-1)).cpu().numpy())
            if keep_residuals:
                res.append(resid.float().cpu().numpy())
            last = out.logits[0, -1].float()
            if sample:
                nxt = torch.multinomial(torch.softmax(last / temperature, -1), 1)
            else:
                nxt = last.argmax(-1, keepdim=True)
            toks.append(int(nxt))
            ids = torch.cat([ids, nxt.view(1, 1).to(ids.device)], dim=1)
    return np.stack(ents), np.array(toks), (np.stack(res) if keep_residuals else None)
