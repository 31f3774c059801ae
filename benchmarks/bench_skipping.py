#!/usr/bin/env python3
"""Skipping blocks: the replay engine against the hook reference (one full forward per condition).

For each model, on the first MMLU question of each of the first N subjects (``base`` prompts): the single-block
sweep (L conditions) with the engine and with L hook-reference forwards, alternating the two ``--repeats`` times;
wall and CPU time, block evaluations counted by hooks (expected ratio (L+1)/2L), and the max |difference| of the
letter log-probabilities. Then, with the engine on ``--n_acc`` questions, the log-likelihood accuracy (argmax over
the four letters) with no skip and with each single block skipped, and the paired change of log p(correct letter)
(nats; over the vocabulary, and renormalised over the four letters) with its standard error.
Writes ``benchmarks/results_skipping.json`` (one entry per model; preliminary numbers on a shared machine).

  .venv/bin/python benchmarks/bench_skipping.py                      # SmolLM2 and Gemma-3, ~15 minutes, 1 thread
  .venv/bin/python benchmarks/bench_skipping.py --models smollm2-135m-instruct --n 4 --n_acc 0
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from scipy.special import logsumexp

from model_inspector import ModelInspector
from model_inspector.experiments.mmlu import mmlu_prompt
from model_inspector.skipping import check_replay, letter_logprobs

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ENTROPY_LENS_DATA", ROOT.parent / "shared" / "data"))


def first_of_subjects(n: int) -> tuple[list[str], np.ndarray, list[str]]:
    """Prompts, answers (letter index) and subjects of the first question of each of the first ``n`` subjects."""
    firsts: dict = {}
    with open(DATA / "mmlu_test.jsonl") as f:
        for line in f:
            r = json.loads(line)
            firsts.setdefault(r["subject"], r)
            if len(firsts) == n:
                break
    rows = list(firsts.values())
    return ([mmlu_prompt(r["question"], r["choices"], r["subject"]) for r in rows],
            np.array([r["answer"] for r in rows]), [r["subject"] for r in rows])


def counted(mi: ModelInspector, fn):
    calls = [0]
    handles = [b.register_forward_hook(lambda *a: calls.__setitem__(0, calls[0] + 1)) for b in mi.lens.blocks]
    try:
        w, c = time.perf_counter(), time.process_time()
        out = fn()
        return out, time.perf_counter() - w, time.process_time() - c, calls[0]
    finally:
        for h in handles:
            h.remove()


def timing(mi: ModelInspector, n: int, batch_size: int, repeats: int) -> dict:
    prompts, _, _ = first_of_subjects(n)
    L = mi.n_layers
    conds = [(j,) for j in range(L)]
    t0 = time.perf_counter()
    chk = check_replay(mi)
    check_s = time.perf_counter() - t0
    runs: dict = {"replay": [], "hooks": []}
    for _ in range(repeats):
        for method in ("replay", "hooks"):
            runs[method].append(counted(mi, lambda m=method: letter_logprobs(mi, prompts, conds, batch_size=batch_size,
                                                                             method=m)))
    eng, ref = runs["replay"][0][0], runs["hooks"][0][0]
    wall = {m: float(np.median([r[1] for r in v])) for m, v in runs.items()}
    cpu = {m: float(np.median([r[2] for r in v])) for m, v in runs.items()}
    evals = {m: v[0][3] for m, v in runs.items()}
    return {"n_layers": L, "n_prompts": n, "batch_size": batch_size, "repeats": repeats, "check_s": check_s,
            "check": {"logits_diff": chk.logits_diff, "block_diff": chk.block_diff, "stack_note": chk.stack_note},
            "wall_s": wall, "cpu_s": cpu, "block_evals": evals,
            "block_eval_ratio": evals["replay"] / evals["hooks"], "expected_ratio": (L + 1) / (2 * L),
            "wall_ratio": wall["replay"] / wall["hooks"], "cpu_ratio": cpu["replay"] / cpu["hooks"],
            "max_abs_diff_nats": float(np.abs(eng.logprob - ref.logprob).max()),
            "letter_form": eng.form.identity()}


def accuracy(mi: ModelInspector, n: int, batch_size: int) -> dict:
    """No-skip accuracy and the damage of each single-block skip, paired over the same ``n`` questions."""
    prompts, answers, subjects = first_of_subjects(n)
    L = mi.n_layers
    scores = letter_logprobs(mi, prompts, [()] + [(j,) for j in range(L)], batch_size=batch_size)
    ok = scores.correct(answers).astype(float)  # [prompt, condition]
    lp = scores.logprob[np.arange(len(prompts)), :, answers]  # log p(correct letter) [prompt, condition], nats
    among = scores.logprob - logsumexp(scores.logprob, axis=-1, keepdims=True)  # renormalised over the letters
    lp4 = among[np.arange(len(prompts)), :, answers]
    d_acc, d_lp, d_lp4 = ok[:, 1:] - ok[:, :1], lp[:, 1:] - lp[:, :1], lp4[:, 1:] - lp4[:, :1]
    se = lambda x: x.std(0, ddof=1) / np.sqrt(len(x))
    return {"n": len(prompts), "subjects": subjects, "chance": 0.25, "no_skip_accuracy": float(ok[:, 0].mean()),
            "no_skip_logp_correct_mean": float(lp[:, 0].mean()), "no_skip_logp_correct_sd": float(lp[:, 0].std(ddof=1)),
            "letter_mass_no_skip_mean": float(np.exp(scores.logprob[:, 0]).sum(-1).mean()),
            "skip_accuracy": ok[:, 1:].mean(0).tolist(), "delta_accuracy": d_acc.mean(0).tolist(),
            "delta_accuracy_se": se(d_acc).tolist(), "delta_logp_correct_mean": d_lp.mean(0).tolist(),
            "delta_logp_correct_se": se(d_lp).tolist(), "no_skip_logp4_correct_mean": float(lp4[:, 0].mean()),
            "delta_logp4_correct_mean": d_lp4.mean(0).tolist(), "delta_logp4_correct_se": se(d_lp4).tolist(),
            "letter_form": scores.form.identity()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["smollm2-135m-instruct", "gemma-3-270m"])
    ap.add_argument("--n", type=int, default=8, help="prompts of the timed sweep")
    ap.add_argument("--n_acc", type=int, default=32, help="questions of the accuracy sweep (0: none)")
    ap.add_argument("--batch_size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: stable on a shared machine)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out_path = Path(__file__).with_name("results_skipping.json")
    results = json.loads(out_path.read_text()) if out_path.exists() else {}
    print(f"{'model':24s} {'L':>3s} {'n':>3s} {'replay s':>9s} {'hooks s':>8s} {'wall x':>7s} {'cpu x':>6s} "
          f"{'evals x':>8s} {'(L+1)/2L':>9s} {'max|d| nats':>11s}")
    for name in args.models:
        mi = ModelInspector(name, device="cpu", dtype="float32")
        res = {"threads": args.threads, "device": "cpu", "dtype": "float32", "preliminary": "shared 2-core machine, nice'd"}
        if args.n:
            t = res["timing"] = timing(mi, args.n, args.batch_size, args.repeats)
            print(f"{name:24s} {t['n_layers']:3d} {t['n_prompts']:3d} {t['wall_s']['replay']:9.1f} "
                  f"{t['wall_s']['hooks']:8.1f} {t['wall_ratio']:7.2f} {t['cpu_ratio']:6.2f} "
                  f"{t['block_eval_ratio']:8.3f} {t['expected_ratio']:9.3f} {t['max_abs_diff_nats']:11.2e}", flush=True)
        if args.n_acc:
            a = res["accuracy"] = accuracy(mi, args.n_acc, args.batch_size)
            worst = np.argsort(a["delta_accuracy"])[:5]
            print(f"  accuracy n={a['n']}: no skip {a['no_skip_accuracy']:.3f} (chance 0.25); worst single skips: "
                  + ", ".join(f"block {j}: {a['delta_accuracy'][j]:+.3f} +- {a['delta_accuracy_se'][j]:.3f}"
                              for j in worst), flush=True)
        results[name] = res
        out_path.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
