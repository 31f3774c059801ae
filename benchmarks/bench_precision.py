#!/usr/bin/env python3
"""The lens precision as a measured choice (``--lens_precision fp32|bf16|bf16x2|bf16x3``).

For SmolLM2-135M (49k vocabulary) and Gemma-3-270M (262k vocabulary), at batch 1, 8 and 32, per precision:

1. the lens call alone (``LogitLens.metrics``: the vocabulary product and the streamed reductions, Shannon
   entropy) on real residuals ``[batch, layer, d]`` (one generated token per prompt): ms per call, tokens/s and the
   speed-up over fp32 (the best of ``--reps`` calls, the precisions interleaved);
2. end to end (``ModelInspector.profile``, ``--tokens`` new tokens, greedy): tokens/s and the speed-up over fp32
   (the best of ``--e2e_reps`` runs, interleaved);
3. the entropy's deviation (nats) on the same residuals against a float64 lens (final norm, head and softmax in
   float64) and against fp32: max and mean |difference| over the ``[prompt, token, layer]`` values (n given).

Then the downstream effect, on SmolLM2, from one run per task (residuals kept, every precision's lens applied to
the same residuals, so the generated tokens are the same): task ROC-AUC of a small TinyStories run
(``--stories`` stories x 24 prompts, 8 tokens, greedy; ``evaluate_knn`` on mean profiles, label ``task``) and
format accuracy (``--topics`` topics x 3 formats, 16 tokens, greedy; ``evaluate_knn`` with k=5 on 4 window means).

Writes benchmarks/results_precision.json (``--out``). The machine's load average is recorded at the start and the
end: timings taken with other jobs running are preliminary; take the final numbers on a quiet machine:

    nice -n 0 .venv/bin/python benchmarks/bench_precision.py            # full: about 15-20 min on 2 quiet cores
    .venv/bin/python benchmarks/bench_precision.py --quick              # batches 1 and 8, fewer tokens: ~5 min
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

PRECISIONS = ("fp32", "bf16", "bf16x2", "bf16x3")
DATA = Path(os.environ.get("ENTROPY_LENS_DATA", ROOT.parent / "shared" / "data"))


def machine() -> dict:
    flags = ""
    if Path("/proc/cpuinfo").exists():
        flags = next((ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")), "")
    from model_inspector.lens_precision import bf16_unsupported

    return {"cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "avx512_bf16": "avx512_bf16" in flags, "amx_bf16": "amx_bf16" in flags,
            "bf16_unsupported": bf16_unsupported("cpu"), "loadavg_start": os.getloadavg()}


def best_time(fn, reps: int) -> float:
    fn()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def matmul_rates(rows: int, d: int, vocab: int, reps: int) -> dict:
    """GFLOP/s of the lens-shaped product ``[rows, d] x [d, vocab]`` in fp32 and in bf16 (bf16 output)."""
    a, w = torch.randn(rows, d), torch.randn(vocab, d) * 0.05
    out = {}
    for name, (x, y) in {"fp32": (a, w), "bf16": (a.bfloat16(), w.bfloat16())}.items():
        out[name] = 2 * rows * d * vocab / best_time(lambda: torch.mm(x, y.t()), reps) / 1e9
    return out


def float64_entropy(lens, resid: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) ``[..., layer]`` of residuals ``[..., layer, d]`` with the final norm, the head, the
    logit transforms and the softmax in float64."""
    x = resid.double()
    for _, mod in lens.post_block:
        x = copy.deepcopy(mod).double()(x)
        x = x[0] if isinstance(x, tuple) else x
    w = lens.head.weight.detach().double()
    b = getattr(lens.head, "bias", None)
    flat = x.reshape(-1, x.shape[-1])
    out = []
    with torch.no_grad():
        for i in range(0, flat.shape[0], 64):
            logits = flat[i : i + 64] @ w.t() + (0 if b is None else b.double())
            for _, fn in lens._transforms:
                logits = fn(logits)
            lp = torch.log_softmax(logits, -1)
            out.append(-(lp.exp() * lp).sum(-1))
    return torch.cat(out).reshape(resid.shape[:-1])


def dev(a, b) -> dict:
    d = (torch.as_tensor(a).double() - torch.as_tensor(b).double()).abs()
    return {"max_abs_nats": float(d.max()), "mean_abs_nats": float(d.mean()), "n": int(d.numel())}


def bench_model(name: str, batches, tokens: int, reps: int, e2e_reps: int) -> dict:
    from model_inspector.experiments.formats import format_samples
    from model_inspector.inspector import ModelInspector

    mi = ModelInspector(name, device="cpu", dtype="float32")
    lens = mi.lens
    prompts = [s.text for s in format_samples()][: max(batches)]
    # real residuals [prompt, token, layer, d]: the lens-alone calls and the deviations use them
    res = torch.as_tensor(mi.profile(prompts, max_len=4, batch_size=len(prompts), keep_residuals=True).residuals)
    kernels = {}
    for p in PRECISIONS:
        lens.lens_precision = p  # what ModelInspector(..., lens_precision=p) sets; one model load serves all
        kernels[p] = lens.lens_kernel
    rows = []
    for bs in batches:
        x = res[:bs, 0]  # [batch, layer, d]: one lens call of one generated token
        xs = res[:bs]  # [batch, 4 tokens, layer, d]: the deviation set
        e64 = float64_entropy(lens, xs)
        e32 = lens.metrics(xs, ["shannon"], precision="fp32")["entropy"]
        lens_s = {p: float("inf") for p in PRECISIONS}
        for p in PRECISIONS:
            lens.metrics(x, ["shannon"], precision=p)  # warm (bf16 copies of the head made once)
        for _ in range(reps):  # interleaved, so that a load change hits every precision alike
            for p in PRECISIONS:
                t0 = time.perf_counter()
                lens.metrics(x, ["shannon"], precision=p)
                lens_s[p] = min(lens_s[p], time.perf_counter() - t0)
        e2e_s = {p: float("inf") for p in PRECISIONS}
        for p in PRECISIONS:
            lens.lens_precision = p
            mi.profile(prompts[:bs], max_len=2, batch_size=bs)  # warm
        for _ in range(e2e_reps):  # interleaved, the best run of each
            for p in PRECISIONS:
                lens.lens_precision = p
                t0 = time.perf_counter()
                mi.profile(prompts[:bs], max_len=tokens, batch_size=bs)
                e2e_s[p] = min(e2e_s[p], time.perf_counter() - t0)
        lens.lens_precision = "fp32"
        for p in PRECISIONS:
            ep = lens.metrics(xs, ["shannon"], precision=p)["entropy"]
            rows.append({"model": name, "batch": bs, "lens_precision": p, "lens_rows": bs * mi.n_layers,
                         "lens_ms": 1e3 * lens_s[p], "lens_tokens_per_s": bs / lens_s[p],
                         "lens_speedup_vs_fp32": lens_s["fp32"] / lens_s[p],
                         "e2e_tokens": tokens, "e2e_tokens_per_s": bs * tokens / e2e_s[p],
                         "e2e_speedup_vs_fp32": e2e_s["fp32"] / e2e_s[p],
                         "dev_vs_float64": dev(ep, e64), "dev_vs_fp32": dev(ep, e32)})
            r = rows[-1]
            print(f"{name:22s} {bs:5d} {p:7s} {r['lens_ms']:9.1f} {r['lens_tokens_per_s']:9.1f} "
                  f"{r['lens_speedup_vs_fp32']:6.2f} {r['e2e_tokens_per_s']:9.1f} {r['e2e_speedup_vs_fp32']:6.2f} "
                  f"{r['dev_vs_float64']['max_abs_nats']:9.2e} {r['dev_vs_float64']['mean_abs_nats']:9.2e} "
                  f"{r['dev_vs_fp32']['max_abs_nats']:9.2e}  n={r['dev_vs_float64']['n']}", flush=True)
    out = {"n_layers": mi.n_layers, "d_model": mi.d_model, "vocab": mi.d_vocab, "kernels": kernels, "rows": rows}
    del mi, lens
    return out


def knn_summary(r: dict) -> dict:
    keys = ("model_roc_auc", "baseline_roc_auc", "model_accuracy", "model_accuracy_std", "baseline_accuracy",
            "p_value", "significant", "k_used", "n_samples")
    return {k: (r[k].item() if hasattr(r[k], "item") else r[k]) for k in keys if k in r}


def downstream(n_stories: int, n_topics: int) -> dict:
    """Task ROC-AUC (TinyStories) and format accuracy from every precision's lens on the same residuals."""
    from model_inspector.evaluation import evaluate_knn
    from model_inspector.experiments.formats import format_samples
    from model_inspector.experiments.tinystories import load_tinystories, tinystories_samples
    from model_inspector.inspector import ModelInspector
    from model_inspector.profiling import window_mean

    mi = ModelInspector("smollm2-135m-instruct", device="cpu", dtype="float32")
    out = {"model": "smollm2-135m-instruct"}
    stories = load_tinystories(n_stories, str(DATA / "tinystories_validation_head.jsonl"))
    ts, _ = tinystories_samples(stories)
    fm = format_samples(n_topics)
    for task, samples, tokens, label, feats, k in (
            ("tinystories_task", ts, 8, "task", lambda e: e.mean(1), 29),
            ("formats", fm, 16, "format", lambda e: window_mean(e, 4, axis=1).reshape(len(e), -1), 5)):
        t0 = time.perf_counter()
        prof = mi.profile([s.text for s in samples], max_len=tokens, batch_size=8, keep_residuals=True)
        res = torch.as_tensor(prof.residuals)  # [prompt, token, layer, d]
        y = np.array([s.labels[label] for s in samples])
        ent = {p: mi.lens.metrics(res, ["shannon"], precision=p)["entropy"].numpy() for p in PRECISIONS}
        row = {"n_prompts": len(samples), "tokens": tokens, "label": label, "k": k, "features":
               "mean profile [layer]" if task != "formats" else "4 window means [4 x layer]",
               "profile_s": time.perf_counter() - t0}
        for p in PRECISIONS:
            row[p] = knn_summary(evaluate_knn(feats(ent[p]), y, k=k))
            row[p]["entropy_dev_vs_fp32"] = dev(ent[p], ent["fp32"])
        for p in PRECISIONS[1:]:
            row[f"{p}_minus_fp32_auc"] = row[p]["model_roc_auc"] - row["fp32"]["model_roc_auc"]
            row[f"{p}_minus_fp32_accuracy"] = row[p]["model_accuracy"] - row["fp32"]["model_accuracy"]
            row[f"{p}_same_conclusion"] = row[p]["significant"] == row["fp32"]["significant"]
        out[task] = row
        print(f"{task}: n={len(samples)} " + "; ".join(
            f"{p} AUC {row[p]['model_roc_auc']:.4f} acc {row[p]['model_accuracy']:.4f} "
            f"(baseline AUC {row[p]['baseline_roc_auc']:.3f}, p={row[p]['p_value']:.2g})" for p in PRECISIONS),
              flush=True)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="batches 1 and 8, 8 tokens, 2 stories, 10 topics")
    ap.add_argument("--models", nargs="+", default=["smollm2-135m-instruct", "gemma-3-270m"])
    ap.add_argument("--batches", nargs="+", type=int, default=None)
    ap.add_argument("--tokens", type=int, default=None, help="new tokens per end-to-end run (default 32; quick 8)")
    ap.add_argument("--reps", type=int, default=None, help="lens calls timed per precision (default 5; quick 3)")
    ap.add_argument("--e2e_reps", type=int, default=None, help="end-to-end runs per precision (default 2; quick 1)")
    ap.add_argument("--stories", type=int, default=None, help="TinyStories stories (default 5; quick 2)")
    ap.add_argument("--topics", type=int, default=None, help="format topics (default 40; quick 10)")
    ap.add_argument("--no_downstream", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results_precision.json"))
    a = ap.parse_args(argv)
    batches = a.batches or ([1, 8] if a.quick else [1, 8, 32])
    tokens = a.tokens or (8 if a.quick else 32)
    reps = a.reps or (3 if a.quick else 5)
    e2e_reps = a.e2e_reps or (1 if a.quick else 2)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    info = machine()
    print(json.dumps(info))
    results = {"machine": info, "settings": {"batches": batches, "tokens": tokens, "reps": reps,
                                                "e2e_reps": e2e_reps, "quick": a.quick}}
    results["matmul_gflops_240x576x49152"] = matmul_rates(240, 576, 49152, reps)
    print("lens-shaped product [240, 576] x [576, 49152], GFLOP/s:", results["matmul_gflops_240x576x49152"])
    print(f"{'model':22s} {'batch':>5s} {'prec':7s} {'lens ms':>9s} {'lens t/s':>9s} {'x fp32':>6s} "
          f"{'e2e t/s':>9s} {'x fp32':>6s} {'dev64 max':>9s} {'dev64 mean':>9s} {'dev32 max':>9s}  (nats)")
    results["models"] = {m: bench_model(m, batches, tokens, reps, e2e_reps) for m in a.models}
    if not a.no_downstream:
        results["downstream"] = downstream(a.stories or (2 if a.quick else 5), a.topics or (10 if a.quick else 40))
    info["loadavg_end"] = os.getloadavg()
    Path(a.out).write_text(json.dumps(results, indent=1, default=str))
    print(f"wrote {a.out} (load average {info['loadavg_start']} at the start, {info['loadavg_end']} at the end)")


if __name__ == "__main__":
    main()
