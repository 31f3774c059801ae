#!/usr/bin/env python3
"""Eager vocabulary reductions, before and after (issue: one pass per chunk where possible): the buffered path
(four passes into reused buffers, the default) against the earlier allocate-per-operation path, on the same
model in one process, alternating the two so that machine load affects both alike. SmolLM2-135M, fp32, CPU.
Prints tokens/s per setting and the per-call time of the lens's metrics at batch 32 (32 x 30 rows).

  .venv/bin/python benchmarks/bench_passes.py          # about 4 minutes on 2 cores
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from model_inspector import ModelInspector
from model_inspector.experiments.formats import format_samples
from model_inspector.experiments.mmlu import mmlu_prompt

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    mi = ModelInspector("smollm2-135m-instruct", device="cpu", dtype="float32")
    fmt = [s.text for s in format_samples(20)][:32]
    rows = [json.loads(line) for line in open(ROOT.parent / "shared/data/mmlu_test.jsonl")][:400:10]
    mmlu = [mmlu_prompt(r["question"], r["choices"], r["subject"]) for r in rows][:32]
    cases = [("format-like, 16 tokens", fmt, 8, 16), ("format-like, 16 tokens", fmt, 32, 16),
             ("MMLU-like, 8 tokens", mmlu, 8, 8)]
    out = {}
    for name, prompts, bs, T in cases:
        mi.profile(prompts[:bs], max_len=2, batch_size=bs)
        times = {True: [], False: []}
        for _ in range(2):
            for buffered in (True, False):
                mi.lens.buffered = buffered
                t0 = time.perf_counter()
                mi.profile(prompts[:bs], max_len=T, batch_size=bs)
                times[buffered].append(time.perf_counter() - t0)
        tps = {b: bs * T / float(np.mean(v)) for b, v in times.items()}
        out[f"{name}, batch {bs}"] = {"buffered_tokens_per_s": tps[True], "earlier_tokens_per_s": tps[False]}
        print(f"{name:24s} batch {bs:3d}: buffered {tps[True]:6.1f} tok/s, earlier {tps[False]:6.1f} tok/s "
              f"(x{tps[True] / tps[False]:.2f})", flush=True)
    resid = torch.randn(32, mi.n_layers, mi.d_model)
    for buffered in (True, False):
        mi.lens.buffered = buffered
        mi.lens.metrics(resid, ["shannon"])
        t0 = time.perf_counter()
        for _ in range(5):
            mi.lens.metrics(resid, ["shannon"])
        per = (time.perf_counter() - t0) / 5
        out[f"lens metrics call, batch 32, {'buffered' if buffered else 'earlier'}"] = per
        print(f"lens metrics call [32 x 30 rows x 49,152]: {'buffered' if buffered else 'earlier '} {per:.3f} s")
    mi.lens.buffered = True
    Path(__file__).with_name("results_passes.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
