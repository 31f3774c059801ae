#!/usr/bin/env bash
# The GPU check, one prepared run (under 10 minutes on one H100/H200): for gemma-3-270m and SmolLM2-135M in
# bf16 weights (fp32 statistics), tokens/s of ours against the original algorithm on the same card, the
# fraction of the card's measured bf16 matmul rate, and peak GPU memory. Prints one table; writes
# benchmarks/results_gpu.json. Needs the project installed (make install) and a CUDA GPU.
#
#   bash benchmarks/gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export HF_HUB_OFFLINE=1
"$PY" - <<'PYEOF'
import json, time
from pathlib import Path

import torch

from model_inspector import ModelInspector
from model_inspector.reference import reference_profile
from model_inspector.experiments.formats import format_samples

assert torch.cuda.is_available(), "no CUDA GPU"
dev = torch.cuda.get_device_name()
prompts = [s.text for s in format_samples(40)][:64]


def bf16_matmul_tflops(n=8192, reps=20):
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    torch.cuda.synchronize()
    return 2 * n ** 3 * reps / (time.perf_counter() - t0) / 1e12


peak = bf16_matmul_tflops()
rows = []
for name in ("gemma-3-270m", "smollm2-135m-instruct"):
    mi = ModelInspector(name, device="cuda", dtype="bfloat16")
    n_params = sum(p.numel() for p in mi.model.parameters())
    L, d, V = mi.n_layers, mi.d_model, mi.d_vocab
    for bs, T in ((8, 64), (64, 64), (64, 256)):
        mi.profile(prompts[:bs], max_len=2, batch_size=bs)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        mi.profile(prompts[:bs], max_len=T, batch_size=bs)
        torch.cuda.synchronize()
        secs = time.perf_counter() - t0
        flops = (2 * n_params + 2 * L * d * V) * bs * T
        rows.append({"model": name, "batch": bs, "tokens": T, "tokens_per_s": bs * T / secs,
                     "fraction_of_bf16_matmul": flops / secs / 1e12 / peak,
                     "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30})
    t0 = time.perf_counter()
    for p in prompts[:2]:
        reference_profile(mi.model, mi.tokenizer, mi.lens, p, max_len=32)
    torch.cuda.synchronize()
    orig = 2 * 32 / (time.perf_counter() - t0)
    for r in rows:
        if r["model"] == name:
            r["original_tokens_per_s"] = orig
            r["speedup"] = r["tokens_per_s"] / orig
    del mi
    torch.cuda.empty_cache()

print(f"{dev}: measured bf16 matmul {peak:.0f} TFLOP/s")
print(f"{'model':24s} {'batch':>5s} {'tokens':>6s} {'tok/s':>9s} {'orig tok/s':>10s} {'speed-up':>8s} "
      f"{'of bf16 peak':>12s} {'peak GiB':>8s}")
for r in rows:
    print(f"{r['model']:24s} {r['batch']:5d} {r['tokens']:6d} {r['tokens_per_s']:9.0f} {r['original_tokens_per_s']:10.1f} "
          f"{r['speedup']:8.1f} {r['fraction_of_bf16_matmul']:12.3f} {r['peak_mem_gib']:8.2f}")
Path("benchmarks/results_gpu.json").write_text(json.dumps({"device": dev, "bf16_tflops": peak, "rows": rows}, indent=1))
PYEOF
