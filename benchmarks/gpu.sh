#!/usr/bin/env bash
# The GPU check, one prepared run (under 10 minutes on one H100/H200): for gemma-3-270m and SmolLM2-135M, every lens
# precision (--lens_precision fp32, bf16, bf16x2, bf16x3: the vocabulary product's precision; statistics stay fp32)
# on float32 weights, and the all-bf16 path (bfloat16 weights; lens fp32 = the head's own bf16 product, and bf16 =
# bf16 inputs with an fp32-output product where the card has one). Per row: tokens/s of ours and of the original
# algorithm on the same card and weights, the fraction of the card's measured bf16 matmul rate, peak GPU memory, the
# lens kernel that ran, and the entropy's deviation (nats, max and mean over [prompt, token, layer]) from the fp32
# lens of the float32 model on the same residuals. Prints one table; writes benchmarks/results_gpu.json
# ($GPU_JSON). Needs the project installed (make install) and a CUDA GPU.
#
#   bash benchmarks/gpu.sh              # on the GPU machine
#   bash benchmarks/gpu.sh --dry-run    # the same code on CPU with two tiny random models and small sizes (seconds)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DRY=0
case "${1:-}" in
  --dry-run) DRY=1 ;;
  "") ;;
  *) echo "usage: bash benchmarks/gpu.sh [--dry-run]" >&2; exit 2 ;;
esac
export HF_HUB_OFFLINE=1 GPU_DRY_RUN=$DRY
"$PY" - <<'PYEOF'
import json, os, resource, time
from pathlib import Path

import torch

from model_inspector import ModelInspector
from model_inspector.experiments.formats import format_samples
from model_inspector.lens_precision import LENS_PRECISIONS
from model_inspector.reference import reference_profile

DRY = os.environ.get("GPU_DRY_RUN") == "1"
OUT = Path(os.environ.get("GPU_JSON") or ("benchmarks/results_gpu_dryrun.json" if DRY else "benchmarks/results_gpu.json"))
if DRY:
    dev_name, device = "CPU (dry run: tiny random models)", "cpu"
else:
    assert torch.cuda.is_available(), "no CUDA GPU (bash benchmarks/gpu.sh --dry-run runs the script on CPU)"
    dev_name, device = torch.cuda.get_device_name(), "cuda"
prompts = [s.text for s in format_samples(40)][:64]
CONFIGS = ((2, 4),) if DRY else ((8, 64), (64, 64), (64, 256))
ORIG_TOKENS = 4 if DRY else 32


def sync():
    if device == "cuda":
        torch.cuda.synchronize()


def reset_peak():
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()


def peak_gib():
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # dry run: the process's peak RSS


def bf16_matmul_tflops(n=256 if DRY else 8192, reps=3 if DRY else 20):
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    sync()
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync()
    return 2 * n ** 3 * reps / (time.perf_counter() - t0) / 1e12


def load(name, dtype, precision="fp32", base=None):
    """A ModelInspector with this lens precision; ``base``: reuse its model and tokenizer (no second load)."""
    if base is not None:
        return ModelInspector(base.model, base.tokenizer, lens_precision=precision)
    if DRY:
        from model_inspector.testing import char_tokenizer, tiny_model

        model = tiny_model(name, max_position_embeddings=512).to(getattr(torch, dtype))
        return ModelInspector(model, char_tokenizer(), lens_precision=precision)
    return ModelInspector(name, device=device, dtype=dtype, lens_precision=precision)


def entropy(mi, res, precision=None):
    return mi.lens.metrics(res, ["shannon"], precision=precision)["entropy"].double()


peak = bf16_matmul_tflops()
rows, kernels = [], {}
for name in (("llama", "gemma3_text") if DRY else ("gemma-3-270m", "smollm2-135m-instruct")):
    mi32 = load(name, "float32")
    n_params = sum(p.numel() for p in mi32.model.parameters())
    L, d, V = mi32.n_layers, mi32.d_model, mi32.d_vocab
    # residuals of a few prompts (float32 weights, and bf16 weights), for the deviations
    res32 = torch.as_tensor(mi32.profile(prompts[:8], max_len=8, keep_residuals=True).residuals).to(mi32.device)
    ref32 = entropy(mi32, res32, "fp32")
    mi16_base = load(name, "bfloat16")
    res16 = torch.as_tensor(mi16_base.profile(prompts[:8], max_len=8, keep_residuals=True).residuals)
    ref16 = entropy(mi32, res16.float().to(mi32.device), "fp32")  # the fp32 lens of the float32 head
    variants = [("float32", p) for p in LENS_PRECISIONS] + [("bfloat16", "fp32"), ("bfloat16", "bf16")]
    orig = {}
    for weights, prec in variants:
        base = mi32 if weights == "float32" else mi16_base
        mi = load(name, weights, prec, base=base)
        kernels[f"{name}/{weights}/{prec}"] = mi.lens.lens_kernel
        if weights == "float32":
            e, ref = entropy(mi, res32), ref32
        else:
            e, ref = entropy(mi, res16.to(mi.device)), ref16.to(mi.device)
        diff = (e - ref).abs()
        if weights not in orig:  # the original algorithm on the same card and weights (its lens: the head's dtype)
            sync()
            t0 = time.perf_counter()
            for p in prompts[:2]:
                reference_profile(base.model, base.tokenizer, base.lens, p, max_len=ORIG_TOKENS)
            sync()
            orig[weights] = 2 * ORIG_TOKENS / (time.perf_counter() - t0)
        for bs, T in CONFIGS:
            mi.profile(prompts[:bs], max_len=2, batch_size=bs)
            sync()
            reset_peak()
            t0 = time.perf_counter()
            mi.profile(prompts[:bs], max_len=T, batch_size=bs)
            sync()
            secs = time.perf_counter() - t0
            flops = (2 * n_params + 2 * L * d * V) * bs * T  # useful work: forward + one lens product per layer
            rows.append({"model": name, "weights": weights, "lens_precision": prec,
                         "lens_precision_run": mi.lens.lens_precision, "batch": bs, "tokens": T,
                         "tokens_per_s": bs * T / secs, "fraction_of_bf16_matmul": flops / secs / 1e12 / peak,
                         "peak_mem_gib": peak_gib(), "original_tokens_per_s": orig[weights],
                         "speedup_vs_original": bs * T / secs / orig[weights],
                         "max_dev_vs_fp32_nats": float(diff.max()), "mean_dev_vs_fp32_nats": float(diff.mean()),
                         "n_dev": int(diff.numel())})
        del mi
    del mi32, mi16_base
    if device == "cuda":
        torch.cuda.empty_cache()

print(f"{dev_name}: measured bf16 matmul {peak:.1f} TFLOP/s")
print(f"{'model':22s} {'weights':8s} {'lens_precision':14s} {'batch':>5s} {'tokens':>6s} {'tok/s':>9s} "
      f"{'orig tok/s':>10s} {'speed-up':>8s} {'of bf16 peak':>12s} {'peak GiB':>8s} {'max dev':>9s} {'mean dev':>9s}")
for r in rows:
    prec = r["lens_precision"] + ("" if r["lens_precision_run"] == r["lens_precision"] else "->fp32")
    print(f"{r['model']:22s} {r['weights']:8s} {prec:14s} {r['batch']:5d} {r['tokens']:6d} {r['tokens_per_s']:9.0f} "
          f"{r['original_tokens_per_s']:10.1f} {r['speedup_vs_original']:8.1f} {r['fraction_of_bf16_matmul']:12.3f} "
          f"{r['peak_mem_gib']:8.2f} {r['max_dev_vs_fp32_nats']:9.2e} {r['mean_dev_vs_fp32_nats']:9.2e}")
print("deviations: entropy in nats against the fp32 lens of the float32 model on the same residuals "
      f"(n = {rows[0]['n_dev']} values per model); kernels:")
for k, v in kernels.items():
    print(f"  {k}: {v}")
OUT.write_text(json.dumps({"device": dev_name, "dry_run": DRY, "bf16_tflops": peak, "rows": rows,
                           "kernels": kernels}, indent=1))
print(f"wrote {OUT}")
PYEOF
