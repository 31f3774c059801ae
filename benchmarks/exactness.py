#!/usr/bin/env python3
"""Worst deviations of our profiles (KV-cached, batched, streamed fp32) against (a) the uncached
original algorithm (whole sequence re-run each step, full softmax, float64 entropy) and (b) a
float64 computation of the lens on the same residuals (final norm and head in float64), on tiny
random models of 14 architectures and on the embedded SmolLM2-135M. Writes JSON.

    .venv/bin/python benchmarks/exactness.py
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

import numpy as np  # noqa: E402
import torch  # noqa: E402

from model_inspector import LogitLens, ModelInspector  # noqa: E402
from model_inspector.reference import reference_profile  # noqa: E402

PROMPTS = ["The capital of France is", "Once upon a time, a little", "2 + 2 =", "Q: Why is the sky blue?\nA:"]


def float64_entropy(mi: ModelInspector, residuals: np.ndarray) -> np.ndarray:
    """Entropy [P, T, L] from residuals [P, T, L, d] with the final norm and head in float64."""
    model64 = copy.deepcopy(mi.model).double()
    lens64 = LogitLens(model64, verify=False)
    with torch.no_grad():
        logits = lens64.logits(torch.as_tensor(residuals, dtype=torch.float64))
        logp = torch.log_softmax(logits.double(), -1)
        return (-(logp.exp() * logp).sum(-1)).numpy()


def deviations(mi: ModelInspector, max_len: int) -> dict:
    prof = mi.profile(PROMPTS, max_len=max_len, batch_size=len(PROMPTS), keep_residuals=True)
    worst_ref = 0.0
    same_tokens = True
    for i, p in enumerate(PROMPTS):
        ref, ids, _ = reference_profile(mi.model, mi.tokenizer, mi.lens, p, max_len=max_len)
        worst_ref = max(worst_ref, float(np.abs(prof.entropy[i] - ref).max()))
        same_tokens &= bool((ids == prof.token_ids[i]).all())
    e64 = float64_entropy(mi, prof.residuals)
    return {"vs_uncached_original_nats": worst_ref, "vs_float64_nats": float(np.abs(prof.entropy - e64).max()),
            "same_greedy_tokens": same_tokens, "lens_check_max_abs_logit_diff": float(mi.lens.check_deviation)}


def main():
    from model_inspector.testing import ARCHS, char_tokenizer, tiny_model

    out = {}
    tok = char_tokenizer()
    for arch in sorted(ARCHS):
        out[arch] = deviations(ModelInspector(tiny_model(arch, max_position_embeddings=512), tok), 8)
        print(arch, out[arch], flush=True)
    out["smollm2-135m-instruct"] = deviations(ModelInspector("smollm2-135m-instruct"), 8)
    print("smollm2-135m-instruct", out["smollm2-135m-instruct"])
    tiny = [v for k, v in out.items() if k in ARCHS]
    summary = {"tiny_worst_vs_original": max(v["vs_uncached_original_nats"] for v in tiny),
               "tiny_worst_vs_float64": max(v["vs_float64_nats"] for v in tiny),
               "smollm2_vs_original": out["smollm2-135m-instruct"]["vs_uncached_original_nats"],
               "smollm2_vs_float64": out["smollm2-135m-instruct"]["vs_float64_nats"]}
    print(json.dumps(summary, indent=1))
    path = ROOT / "benchmarks" / "exactness.json"
    path.write_text(json.dumps({"summary": summary, "models": out}, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
