#!/usr/bin/env python3
"""Speed, roofline, memory and storage benchmarks of profile extraction.

1. Ours (KV-cached, batched in length order, streamed lens), the default a user gets (eager, no
   ``--compile``), against three baselines on the same model, prompts and dtype, in one process:
   * ``original``: the original algorithm re-implemented (``model_inspector.reference``: one prompt at
     a time, the whole sequence re-run every step, a float64 softmax over the whole
     ``[layer, vocab]`` block);
   * ``original_tl``: the same loop on TransformerLens (``TransformerBridge.run_with_cache`` caching
     every hook each step, as the original code did), decoded through the bridge's ``ln_final`` and
     ``unembed``;
   * ``entropy_profiler``: entropy-profiler 0.2.1 (``EntropyProfiler.profile_text``: KV-cached
     ``generate`` with ``output_hidden_states``, one prompt at a time, one lens product per layer).
   A baseline has no batch; it runs on a few prompts and its tokens/s serves every ratio. Each
   baseline's worst deviation from ``original`` on the first prompt is printed (nats).
   Scenarios: MMLU-like (about 300-token prompts, 8 new tokens), MMLU at natural lengths (64 prompts
   drawn from the whole test set, ``length`` against ``given`` batch order), format-like (8-token
   prompts, 64 and 256 new tokens).
2. FLOPs: each run's work (2 N per token of the forward, padding excluded; 2 d V per step for the model's
   own head; 2 L d V per generated token for the lens) and the original's (2 (N + d V) per position per
   step, as it re-runs the sequence and computes the head at every position, + 2 L d V per step); their
   ratio is the speed-up both would have at the same FLOP/s. Roofline: a plain fp32 matrix product of the
   lens's shape ([batch*L, d] x [d, V]) gives the machine's limit; ``fraction`` = our FLOP/s over it.
3. Stages of one format-like batch: ``model.generate`` alone, one lens call, its matrix product.
4. Peak memory (extra RSS above the loaded model) profiling Gemma-3-270M (262k vocabulary) at batch 32,
   against one full [batch, layers, vocab] fp32 block and the chunk budget + KV cache.
5. Bytes stored per sample: our results file against the original's activation pickles for the same run.

Prints tables and writes JSON (default benchmarks/results_<device>.json). Needs the ``bench`` extras
(``pip install -e ".[bench]"``: transformer-lens, entropy-profiler).

    .venv/bin/python benchmarks/bench_profile.py                       # full (about 20 min on 2 CPU cores)
    .venv/bin/python benchmarks/bench_profile.py --quick               # no 256-token run, fewer batches
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

import numpy as np
import torch


def mmlu_prompts(n: int, data_file: Path, tokenizer, lo: int = 250, hi: int = 350):
    """``n`` MMLU ``base`` prompts of ``lo``-``hi`` tokens (about 300), in dataset order
    (``hi=None``: a seeded sample of ``n`` from the whole test set, whatever their length, in dataset
    order, as ``--n_questions`` draws them)."""
    from model_inspector.experiments.mmlu import load_mmlu, mmlu_samples

    samples, _ = mmlu_samples(load_mmlu(str(data_file)), "base")
    if hi is None:
        pick = np.sort(np.random.default_rng(0).choice(len(samples), n, replace=False))
        return [samples[i].text for i in pick]
    out = [s.text for s in samples if lo <= len(tokenizer(s.text)["input_ids"]) <= hi]
    if len(out) < n:
        raise SystemExit(f"only {len(out)} MMLU prompts of {lo}-{hi} tokens in {data_file}")
    return out[:n]


def format_prompts(n: int):
    from model_inspector.experiments.formats import format_samples

    return [s.text for s in format_samples()][:n]


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def n_params(model) -> int:
    """Parameters a token's forward multiplies by (the input embedding is a lookup; a tied head is counted
    apart as ``d V``)."""
    emb = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    return sum(p.numel() for p in model.parameters() if p is not emb and p is not head)


# ------------------------------------------------------------------------------------------ baselines
def baseline_original(mi):
    from model_inspector.reference import reference_profile

    def run(prompt, max_len):
        return reference_profile(mi.model, mi.tokenizer, mi.lens, prompt, max_len=max_len)[0]

    return run


def baseline_tl(mi):
    """The original loop on TransformerLens: ``run_with_cache`` (every hook cached) each step."""
    from transformer_lens.model_bridge import TransformerBridge

    bridge = TransformerBridge.boot_transformers(mi.model.name_or_path, device=str(mi.device), dtype=mi.dtype,
                                                 tokenizer=mi.tokenizer, hf_model=mi.model)
    names = [f"blocks.{i}.hook_resid_post" for i in range(mi.n_layers)]

    def run(prompt, max_len):
        ids = mi.encode([prompt])["input_ids"]
        ents = []
        with torch.no_grad():
            for _ in range(max_len):
                logits, cache = bridge.run_with_cache(ids)
                resid = torch.stack([cache[n][0, -1] for n in names])  # [layer, d_model]
                lp = torch.log_softmax(bridge.unembed(bridge.ln_final(resid)).double(), dim=-1)  # [layer, vocab]
                ents.append((-(lp.exp() * lp).nan_to_num().sum(-1)).numpy())
                ids = torch.cat([ids, logits[0, -1].argmax().view(1, 1)], dim=1)
        return np.stack(ents)

    return run


def baseline_entropy_profiler(mi):
    """entropy-profiler 0.2.1 on the same weights (its own copy, loaded from the same folder)."""
    from entropy_profiler import EntropyProfiler

    ep = EntropyProfiler(mi.model.name_or_path, device=str(mi.device), dtype=mi.dtype)

    def run(prompt, max_len):
        # it tokenizes without the BOS token TransformerLens adds: compare against ours on the same ids
        return ep.profile_text(prompt, max_new_tokens=max_len, do_sample=False).entropy.double().numpy()

    return run


BASELINES = {"original": baseline_original, "original_tl": baseline_tl, "entropy_profiler": baseline_entropy_profiler}


def orig_flops(n_prompt: int, max_len: int, N: int, L: int, d: int, V: int) -> float:
    """The original's work for one prompt: every step re-runs the whole sequence (forward and head at
    every position) and decodes all layers of the last position."""
    return float(sum(2 * (N + d * V) * (n_prompt + t) + 2 * L * d * V for t in range(max_len)))


def ours_flops(lengths, plan, max_len: int, N: int, L: int, d: int, V: int) -> tuple[float, float]:
    """``(useful, padded)`` FLOPs of our run: prompts once (useful: real tokens; padded: as batched),
    then per generated token one forward, the model's head and the lens."""
    n = len(lengths)
    per_new = 2 * N + 2 * d * V + 2 * L * d * V
    useful = 2 * N * sum(lengths) + n * max_len * per_new
    padded = 2 * N * sum(max(lengths[i] for i in b) * len(b) for b in plan) + n * max_len * per_new
    return float(useful), float(padded)


def speed(mi, baselines, prompts, max_len, batch_sizes, n_base, orders=("length",), n_prompts=None):
    """Tokens/s of each baseline (``n_base`` prompts) and of ours at each batch size and batch order
    (``n_prompts`` prompts, default one batch)."""
    from model_inspector.run.batching import plan_batches

    L, d, V, N = mi.n_layers, mi.d_model, mi.d_vocab, n_params(mi.model)
    lengths = mi.prompt_lengths(prompts)
    base = {}
    ref = None
    for name, run in baselines.items():
        outs, t = timed(lambda run=run: [run(p, max_len) for p in prompts[:n_base]])
        toks = sum(len(o) for o in outs)
        ent = outs[0]
        if name == "original":
            ref = ent
        if name == "entropy_profiler":
            # its prompt has no BOS, so compare with ours on the same ids; its generate() follows the
            # checkpoint's generation_config, so tokens may part after the first: compare the first step.
            # It applies the final norm again to the last layer (HF's last hidden state is normed already).
            ref_ep = mi.profile(prompts[:1], max_len=1, prepend_bos="never").entropy[0]
            dev = np.abs(ent[:1, :-1] - ref_ep[:, :-1]).max()
            dev_last = float(np.abs(ent[:1, -1] - ref_ep[:, -1]).max())
        else:
            dev, dev_last = np.abs(ent - ref).max(), None
        f = sum(orig_flops(n_, max_len, N, L, d, V) for n_ in lengths[:n_base])
        base[name] = {"prompts": n_base, "tokens": toks, "seconds": t, "tokens_per_s": toks / t,
                      "max_dev_nats": float(dev), "max_dev_last_layer_nats": dev_last,
                      "original_flops_per_token": f / (n_base * max_len)}
        print(f"  {name}: {toks / t:.2f} tokens/s ({t:.1f} s), max |dev| {dev:.1e} nats", flush=True)
    rows = []
    for order in orders:
        for bs in batch_sizes:
            mi.profile(prompts[:bs], max_len=2, batch_size=bs, batch_order=order)  # warm-up
            n = max(bs, n_prompts or bs)
            batch = (prompts * (n // len(prompts) + 1))[:n]
            lens_ = (lengths * (n // len(prompts) + 1))[:n]
            _, t = timed(lambda batch=batch, bs=bs, order=order: mi.profile(batch, max_len=max_len, batch_size=bs,
                                                                         batch_order=order))
            plan = plan_batches(lens_, bs, order=order)
            useful, padded = ours_flops(lens_, plan, max_len, N, L, d, V)
            o_flops = sum(orig_flops(n_, max_len, N, L, d, V) for n_ in lens_)
            tps = n * max_len / t
            row = {"batch_size": bs, "batch_order": order, "prompts": n, "padding": sum(
                       max(lens_[i] for i in b) * len(b) for b in plan) / sum(lens_), "new_tokens": max_len, "seconds": t,
                   "ours_tokens_per_s": tps, "ours_gflops": useful / t / 1e9, "padded_gflops": padded / t / 1e9,
                   "flop_ratio_original_over_ours": o_flops / useful,
                   "speedup": {k: tps / v["tokens_per_s"] for k, v in base.items()}}
            rows.append(row)
            print(f"  ours batch {bs} ({order}): {tps:.1f} tokens/s ({t:.1f} s); speed-up "
                  + ", ".join(f"{k} x{v:.1f}" for k, v in row["speedup"].items()), flush=True)
    return {"prompt_tokens_mean": float(np.mean(lengths)), "baselines": base, "rows": rows}


def stages(mi, prompts, max_len: int, bs: int) -> dict:
    """Seconds per stage of one batch: ``model.generate`` without the lens, one lens call (metrics +
    top token) and its ``[bs*L, d] x [d, V]`` matrix product, per step."""
    from model_inspector.generation import encode_prompts

    enc = encode_prompts(mi.tokenizer, prompts[:bs])
    gen = lambda: mi.model.generate(**enc, max_new_tokens=max_len, min_new_tokens=max_len, do_sample=False,
                                    pad_token_id=mi.tokenizer.pad_token_id, eos_token_id=None)
    gen()
    _, t_gen = timed(gen)
    r = torch.randn(bs, mi.n_layers, mi.d_model, dtype=mi.dtype) * 3
    normed = mi.lens.normalize(r).reshape(-1, mi.d_model)
    w = mi.lens.head.weight
    best = {}
    for name, fn in (("lens_call", lambda: mi.lens.metrics(r, ["shannon"], top_k=1)),
                     ("lens_matmul", lambda: torch.mm(normed, w.t()))):
        fn()
        best[name] = min(timed(fn)[1] for _ in range(3))
    _, t_all = timed(lambda: mi.profile(prompts[:bs], max_len=max_len, batch_size=bs))
    return {"batch": bs, "new_tokens": max_len, "profile_s": t_all, "generate_s": t_gen,
            "lens_call_s_per_step": best["lens_call"], "lens_matmul_s_per_step": best["lens_matmul"],
            "lens_s": best["lens_call"] * max_len,
            "other_s": t_all - t_gen - best["lens_call"] * max_len}


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
from model_inspector.experiments.formats import format_samples

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


SCENARIOS = {
    # name: (prompt source, new tokens, batch sizes (quick), batch orders, baseline prompts, our prompts)
    "mmlu_like": ("mmlu300", 8, [1, 4, 8, 32], [1, 8], ("length",), 2, None),
    "mmlu_natural": ("mmlu", 8, [8, 32], [8], ("length", "given"), 2, 64),
    "format_64": ("formats", 64, [8, 32, 64], [8, 32], ("length",), 1, None),
    "format_256": ("formats", 256, [32], [], ("length",), 1, None),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--memory_model", default="gemma-3-270m")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--quick", action="store_true", help="fewer batch sizes, no 256-token run")
    ap.add_argument("--skip_memory", action="store_true")
    ap.add_argument("--baselines", nargs="+", default=list(BASELINES), choices=list(BASELINES))
    ap.add_argument("--only", nargs="+", choices=list(SCENARIOS), default=None, help="run these speed scenarios")
    ap.add_argument("--data_file", default=str(ROOT.parent / "shared" / "data" / "mmlu_test.jsonl"))
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    from model_inspector import ModelInspector

    mi = ModelInspector(args.model, device=args.device, dtype=args.dtype)
    dev = torch.cuda.get_device_name() if mi.device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    res = {"model": args.model, "device": dev, "dtype": str(mi.dtype), "torch": torch.__version__,
           "L": mi.n_layers, "d": mi.d_model, "V": mi.d_vocab, "N": n_params(mi.model), "quick": args.quick}
    print(f"{args.model} on {dev}, {mi.dtype}: L={mi.n_layers} d={mi.d_model} V={mi.d_vocab} N={res['N']}", flush=True)
    baselines = {k: BASELINES[k](mi) for k in args.baselines}
    sources = {"mmlu300": lambda: mmlu_prompts(64, Path(args.data_file), mi.tokenizer),
               "mmlu": lambda: mmlu_prompts(64, Path(args.data_file), mi.tokenizer, hi=None),
               "formats": lambda: format_prompts(64)}
    batch_all = set()
    for name, (src, new, full, quick, orders, n_base, n_ours) in SCENARIOS.items():
        sizes = quick if args.quick else full
        if (args.only and name not in args.only) or not sizes:
            continue
        print(f"{name}: {new} new tokens", flush=True)
        res[name] = speed(mi, baselines, sources[src](), new, sizes, n_base, orders, n_ours)
        batch_all.update(sizes)
    res["matmul_gflops"] = {bs: matmul_peak(bs * mi.n_layers, mi.d_model, mi.d_vocab, dtype=mi.dtype)
                            for bs in sorted(batch_all)}
    res["stages"] = [stages(mi, format_prompts(64), 64, bs) for bs in (8, 32)]
    res["storage"] = storage(mi, sources["mmlu300"]()[:16], 8)
    if not args.skip_memory:
        res["memory"] = memory(args.memory_model, 32, 256 * 2**20, 8 if args.quick else 16)
    report(res, args.memory_model)
    out = Path(args.out or ROOT / "benchmarks" / f"results_{'cuda' if 'cpu' not in dev else 'cpu'}.json")
    out.write_text(json.dumps(res, indent=1, default=str))
    print(f"wrote {out}")


def report(res: dict, memory_model: str) -> None:
    names = list(next(res[k] for k in SCENARIOS if k in res)["baselines"])
    print(f"\n{'run':13s} {'batch':>5s} {'order':6s} {'ours tok/s':>10s} " + " ".join(f"{n:>17s}" for n in names)
          + f" {'FLOP ratio':>10s} {'GFLOP/s':>8s} {'fraction':>8s} {'padding':>7s}")
    for name in SCENARIOS:
        if name not in res:
            continue
        base = res[name]["baselines"]
        print(f"{name:13s} {'':5s} {'':6s} {'(tok/s)':>10s} " + " ".join(f"{base[n]['tokens_per_s']:17.2f}" for n in names))
        for r in res[name]["rows"]:
            peak = res["matmul_gflops"][r["batch_size"]]
            r["fraction_of_matmul"] = r["ours_gflops"] / peak
            print(f"{'':13s} {r['batch_size']:5d} {r['batch_order']:6s} {r['ours_tokens_per_s']:10.1f} "
                  + " ".join(f"{'x' + format(r['speedup'][n], '.1f'):>17s}" for n in names)
                  + f" {r['flop_ratio_original_over_ours']:10.1f} {r['ours_gflops']:8.1f} {r['fraction_of_matmul']:8.2f}"
                  f" {r['padding']:7.2f}")
    print("matmul limit (GFLOP/s, fp32 [batch*L, d] x [d, V]): "
          + ", ".join(f"batch {k}: {v:.0f}" for k, v in res["matmul_gflops"].items()))
    for st in res["stages"]:
        print(f"stages, format-like batch {st['batch']} x {st['new_tokens']} tokens: profile {st['profile_s']:.1f} s = "
              f"generate without lens {st['generate_s']:.1f} s + lens {st['lens_s']:.1f} s ({1000 * st['lens_call_s_per_step']:.0f}"
              f" ms/step, of which the matrix product {1000 * st['lens_matmul_s_per_step']:.0f} ms) + other {st['other_s']:.1f} s")
    s = res["storage"]
    print(f"storage per sample: ours {s['ours_bytes_per_sample']:.0f} B, original {s['original_bytes_per_sample']:.0f} B "
          f"(x{s['ratio_files']:.0f}); profile array {s['profile_array_bytes']} B vs activations "
          f"{s['activation_array_bytes']} B (x{s['ratio_arrays']:.0f})")
    if "memory" in res:
        m = res["memory"]
        mib = 2**20
        print(f"memory {memory_model} batch {m['batch']}: extra peak {m['extra_peak'] / mib:.0f} MiB (plain "
              f"model.generate {m['plain_generate_extra_peak'] / mib:.0f} MiB, so the lens adds "
              f"{m['lens_extra_peak'] / mib:.0f} MiB); one full "
              f"[batch, layers, vocab] fp32 block {m['full_block_bytes'] / mib:.0f} MiB; budget {m['budget_bytes'] / mib:.0f}"
              f" MiB + KV cache {m['kv_cache_bytes'] / mib:.0f} MiB + model logits {m['model_logits_bytes'] / mib:.0f} MiB")


if __name__ == "__main__":
    main()
