#!/usr/bin/env python3
"""Speed, roofline, memory and storage benchmarks of profile extraction.

1. Ours (KV-cached, batched, streamed lens) against the original algorithm (one prompt at a time,
   the whole sequence re-run every step, full-vocabulary softmax per layer) on the same model,
   prompts and dtype, in one process: MMLU-like runs (~300-token prompts, 8 new tokens) and
   format-like runs (short prompts, 256 new tokens) at several batch sizes. The original
   algorithm's speed does not depend on the batch size (it has none); it is measured on a few
   prompts and its tokens/s reused for every ratio.
2. Roofline: FLOP/s of a plain fp32 matrix product of the lens's shape ([batch*L, d] x [d, V])
   against the achieved FLOP/s of our runs (2*L*d*V per token for the lens + 2*N_params per token
   for the forward).
3. Peak memory (extra RSS above the loaded model) profiling Gemma-3-270M (262k vocabulary) at batch 32,
   against one full [batch, layers, vocab] fp32 block and the chunk budget + KV cache.
4. Bytes stored per sample: our results file against the original's activation pickles for the same run.

Prints a table and writes JSON (default benchmarks/results_<device>.json).

    .venv/bin/python benchmarks/bench_profile.py                       # full (about 15 min on 2 CPU cores)
    .venv/bin/python benchmarks/bench_profile.py --quick               # smaller, about 3 min
"""

from __future__ import annotations

import argparse
import json
import pickle
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

import numpy as np  # noqa: E402
import torch  # noqa: E402


def mmlu_prompts(n: int, data_file: Path, tokenizer, lo: int = 250, hi: int = 350):
    """``n`` MMLU ``base`` prompts of ``lo``-``hi`` tokens (about 300), in dataset order."""
    from model_inspector.data import load_mmlu
    from model_inspector.tasks import mmlu_samples

    samples, _ = mmlu_samples(load_mmlu(str(data_file)), "base")
    out = [s.text for s in samples if lo <= len(tokenizer(s.text)["input_ids"]) <= hi]
    if len(out) < n:
        raise SystemExit(f"only {len(out)} MMLU prompts of {lo}-{hi} tokens in {data_file}")
    return out[:n]


def format_prompts(n: int):
    from model_inspector.tasks import format_samples

    return [s.text for s in format_samples()][:n]


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def n_params(model) -> int:
    emb = model.get_input_embeddings().weight
    return sum(p.numel() for p in model.parameters() if p is not emb)


def speed(mis, prompts, max_len, batch_sizes, n_batches, n_orig):
    """``mis``: {variant name: ModelInspector}; the first one also runs the original algorithm."""
    from model_inspector.reference import reference_profile

    mi = next(iter(mis.values()))
    L, d, V = mi.n_layers, mi.d_model, mi.d_vocab
    n_prompt = [len(mi.tokenizer(p)["input_ids"]) for p in prompts]
    _, t_orig = timed(lambda: [reference_profile(mi.model, mi.tokenizer, mi.lens, p, max_len=max_len)
                               for p in prompts[:n_orig]])
    orig_tps = n_orig * max_len / t_orig
    rows = []
    for variant, m in mis.items():
        for bs in batch_sizes:
            m.profile(prompts[:bs], max_len=2, batch_size=bs)  # warm-up (and compilation for this shape)
            n = bs * n_batches
            batch = (prompts * ((n // len(prompts)) + 1))[:n]
            toks = (n_prompt * ((n // len(prompts)) + 1))[:n]
            _, t = timed(lambda: m.profile(batch, max_len=max_len, batch_size=bs))
            tps = n * max_len / t
            # work done: the forward over prompt + generated tokens, and the lens at each generated token
            flops = 2 * n_params(m.model) * (sum(toks) + n * max_len) + 2 * L * d * V * n * max_len
            rows.append({"variant": variant, "batch_size": bs, "prompts": n, "new_tokens": max_len,
                         "ours_tokens_per_s": tps, "original_tokens_per_s": orig_tps, "speedup": tps / orig_tps,
                         "ours_gflops": flops / t / 1e9, "seconds": t})
    return {"prompt_tokens_mean": float(np.mean(n_prompt)), "original_prompts": n_orig, "original_seconds": t_orig,
            "rows": rows}


def matmul_peak(rows: int, d: int, V: int, dtype=torch.float32, reps: int = 5) -> float:
    a = torch.randn(rows, d, dtype=dtype)
    w = torch.randn(V, d, dtype=dtype)
    torch.nn.functional.linear(a, w)
    best = float("inf")
    for _ in range(reps):
        _, t = timed(lambda: torch.nn.functional.linear(a, w))
        best = min(best, t)
    return 2 * rows * d * V / best / 1e9


def storage(mi, prompts, max_len):
    """Bytes per sample: our results entries vs the original's activation entries, same labels."""
    prof = mi.profile(prompts, max_len=max_len, keep_residuals=True, batch_size=len(prompts))
    common = {"input": prompts, "text": prof.texts, "model": ["m"] * len(prompts), "task": ["mmlu"] * len(prompts),
              "subject": ["s"] * len(prompts), "correct": [0] * len(prompts)}
    ours = dict(common, entropy=list(prof.entropy), tokens=list(prof.token_ids))
    orig = dict(common, activations=list(prof.residuals))
    b_ours, b_orig = len(pickle.dumps(ours)), len(pickle.dumps(orig))
    prof_bytes = prof.entropy[0].nbytes
    act_bytes = prof.residuals[0].nbytes
    return {"samples": len(prompts), "ours_bytes_per_sample": b_ours / len(prompts),
            "original_bytes_per_sample": b_orig / len(prompts), "ratio_files": b_orig / b_ours,
            "profile_array_bytes": prof_bytes, "activation_array_bytes": act_bytes,
            "ratio_arrays": act_bytes / prof_bytes}


_MEM_CHILD = r"""
import json, os, sys, threading, time
import torch
from model_inspector import ModelInspector
from model_inspector.tasks import format_samples

def rss():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

mi = ModelInspector(sys.argv[2], device="cpu", dtype="float32", budget_bytes=int(sys.argv[4]))
bs, T = int(sys.argv[3]), int(sys.argv[5])
prompts = [s.text for s in format_samples()][:bs]
mi.profile(prompts[:1], max_len=1)

def extra_peak(fn):
    base = rss()
    peak = [base]
    stop = threading.Event()
    def watch():
        while not stop.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.001)
    th = threading.Thread(target=watch, daemon=True)
    th.start()
    t = time.perf_counter()
    fn()
    el = time.perf_counter() - t
    stop.set(); th.join()
    return peak[0] - base, el

from model_inspector.generation import encode_prompts
enc = encode_prompts(mi.tokenizer, prompts)
plain, _ = extra_peak(lambda: mi.model.generate(**enc, max_new_tokens=T, do_sample=False,
                                                pad_token_id=mi.tokenizer.pad_token_id))
ours, el = extra_peak(lambda: mi.profile(prompts, max_len=T, batch_size=bs))
base = rss()
cfg = mi.model.config
n_kv = getattr(cfg, "num_key_value_heads", cfg.num_attention_heads)
hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
n_tok = max(len(mi.tokenizer(p)["input_ids"]) for p in prompts) + T
print(json.dumps({"base_rss": base, "extra_peak": ours, "plain_generate_extra_peak": plain,
                  "lens_extra_peak": ours - plain, "seconds": el,
                  "full_block_bytes": bs * mi.n_layers * mi.d_vocab * 4,
                  "kv_cache_bytes": 2 * mi.n_layers * bs * n_tok * n_kv * hd * 4,
                  "model_logits_bytes": bs * mi.d_vocab * 4, "budget_bytes": int(sys.argv[4]),
                  "n_layers": mi.n_layers, "d_vocab": mi.d_vocab, "batch": bs, "new_tokens": T}))
"""


def memory(model: str, batch: int, budget: int, new_tokens: int):
    out = subprocess.run([sys.executable, "-c", _MEM_CHILD, str(ROOT), model, str(batch), str(budget), str(new_tokens)],
                         capture_output=True, text=True, timeout=1800)
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--memory_model", default="gemma-3-270m")
    ap.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--format_tokens", type=int, default=256)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--quick", action="store_true", help="fewer prompts and 64 format tokens")
    ap.add_argument("--skip_memory", action="store_true")
    ap.add_argument("--no_compile", action="store_true", help="skip the torch.compile variant")
    ap.add_argument("--legacy", action="store_true", help="also run the earlier eager path (before/after in one run)")
    ap.add_argument("--only", choices=["mmlu_like", "format_like"], default=None, help="run one speed scenario")
    ap.add_argument("--data_file", default=str(ROOT.parent / "shared" / "data" / "mmlu_test.jsonl"))
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.quick:
        args.format_tokens = min(args.format_tokens, 64)
    from model_inspector import ModelInspector

    mi = ModelInspector(args.model, device=args.device, dtype=args.dtype)
    mis = {"eager": mi}
    if args.legacy:  # the earlier eager path (a new tensor per operation, six passes per chunk), same model
        mis["legacy"] = ModelInspector(mi.model, mi.tokenizer)
        mis["legacy"].lens.buffered = False
    if not args.no_compile:
        mis["compiled"] = ModelInspector(mi.model, mi.tokenizer, compile=True)
    dev = torch.cuda.get_device_name() if mi.device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    res = {"model": args.model, "device": dev, "dtype": str(mi.dtype), "torch": torch.__version__,
           "L": mi.n_layers, "d": mi.d_model, "V": mi.d_vocab}
    mm = mmlu_prompts(64, Path(args.data_file), mi.tokenizer)
    fm = format_prompts(64)
    print(f"{args.model} on {dev}, {mi.dtype}: L={mi.n_layers} d={mi.d_model} V={mi.d_vocab}", flush=True)
    if args.only in (None, "mmlu_like"):
        res["mmlu_like"] = speed(mis, mm, 8, args.batch_sizes, 1, 2 if args.quick else 4)
        print("mmlu-like done", flush=True)
    if args.only in (None, "format_like"):
        res["format_like"] = speed(mis, fm, args.format_tokens, args.batch_sizes, 1, 1)
        print("format-like done", flush=True)
    res["matmul_gflops"] = {bs: matmul_peak(bs * mi.n_layers, mi.d_model, mi.d_vocab,
                                            dtype=mi.dtype) for bs in args.batch_sizes}
    res["storage"] = storage(mi, mm[:16], 8)
    if not args.skip_memory:
        res["memory"] = memory(args.memory_model, 32, 256 * 2**20, 8 if args.quick else 16)

    print(f"\n{'run':12s} {'variant':9s} {'batch':>5s} {'ours tok/s':>11s} {'orig tok/s':>11s} {'speedup':>8s} "
          f"{'GFLOP/s':>8s} {'matmul GFLOP/s':>15s} {'fraction':>9s}")
    for name in ("mmlu_like", "format_like"):
        for r in res.get(name, {}).get("rows", []):
            peak = res["matmul_gflops"][r["batch_size"]]
            r["fraction_of_matmul"] = r["ours_gflops"] / peak
            print(f"{name:12s} {r['variant']:9s} {r['batch_size']:5d} {r['ours_tokens_per_s']:11.1f} {r['original_tokens_per_s']:11.2f} "
                  f"{r['speedup']:8.1f} {r['ours_gflops']:8.1f} {peak:15.1f} {r['fraction_of_matmul']:9.2f}")
    s = res["storage"]
    print(f"\nstorage per sample: ours {s['ours_bytes_per_sample']:.0f} B, original {s['original_bytes_per_sample']:.0f} B "
          f"(x{s['ratio_files']:.0f}); profile array {s['profile_array_bytes']} B vs activations "
          f"{s['activation_array_bytes']} B (x{s['ratio_arrays']:.0f})")
    if "memory" in res:
        m = res["memory"]
        mib = 2**20
        print(f"memory {args.memory_model} batch {m['batch']}: extra peak {m['extra_peak'] / mib:.0f} MiB (plain "
              f"model.generate {m['plain_generate_extra_peak'] / mib:.0f} MiB, so the lens adds "
              f"{m['lens_extra_peak'] / mib:.0f} MiB); one full "
              f"[batch, layers, vocab] fp32 block {m['full_block_bytes'] / mib:.0f} MiB; budget {m['budget_bytes'] / mib:.0f}"
              f" MiB + KV cache {m['kv_cache_bytes'] / mib:.0f} MiB + model logits {m['model_logits_bytes'] / mib:.0f} MiB")
    out = Path(args.out or ROOT / "benchmarks" / f"results_{'cuda' if 'cpu' not in dev else 'cpu'}.json")
    out.write_text(json.dumps(res, indent=1, default=str))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
