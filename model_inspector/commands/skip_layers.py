"""Skip layers (claim (iv) of Entropy-Lens v3): does skipping the layers of maximal expansion or maximal pruning
change downstream accuracy unequally, and more than skipping random layers?

The expansion and pruning blocks are chosen on a calibration split (the lens entropy profile at the answer
position of each calibration prompt; block l makes the change dH_l = H_l - H_(l-1)), disjoint from the evaluation
split; both are recorded. Conditions on the evaluation split: no skip; the top-1 and top-k expansion blocks; the
top-1 and top-k pruning blocks; --n_random seeded draws of 1 and of k random blocks (where each strategy condition
falls among them); a sweep that skips every single block in turn, with the rank correlation between each block's
damage and its dH, and with its depth (is the damage about the strategy, or about the layer's position?).
A skipped block passes its input through unchanged; only what a skip changes is computed (blocks before the first
skipped one are shared by every condition of a prompt).

MMLU: accuracy by the log-likelihood of the four answer letters at the end of the prompt (the letter form the
tokenizer uses, recorded), with the change of the right letter's log-probability among the four; --grading
generate grades generated letters as the paper did (slow: a generation per condition). TinyStories: the mean
next-token loss on held-out stories (nats/token).

Writes results/MODEL_skip_DATASET_nN.pkl (per item and condition; resumable with --resume), ..._table.csv (one row
per condition) and ..._sweep.png.

Example:
  entropy-lens skip-layers smollm2-135m-instruct --dataset mmlu --n_questions 200 \\
      --data_file ../shared/data/mmlu_test.jsonl
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..cli import load_inspector
from ..errors import UserError
from ..options import (
    ArgumentParser,
    Flag,
    Integer,
    ListOf,
    OneOf,
    Option,
    Real,
    Text,
    add_flags,
    group,
    option,
    parse_checked,
)

OPTIONS = (
    Option("dataset", "mmlu", "mmlu (accuracy) or tinystories (next-token loss)", OneOf(("mmlu", "tinystories")),
           group="skip"),
    Option("data_file", None, "local data (MMLU jsonl/json/parquet/csv, or TinyStories stories) instead of the hub",
           Text(), group="skip"),
    Option("n_questions", 200, "MMLU: questions drawn (by --seed) for calibration and evaluation together",
           Integer(min=4), group="skip"),
    Option("subjects", None, "MMLU: only these subjects", ListOf(Text(), none=True), group="skip", nargs="+"),
    Option("prompt_type", "base", "MMLU prompt wording", OneOf(("base", "instruct", "thinking", "humble")),
           group="skip"),
    Option("n_stories", 60, "TinyStories: the first N stories, split into calibration and evaluation", Integer(min=4),
           group="skip"),
    Option("max_tokens", 128, "TinyStories: tokens of each story scored", Integer(min=2), group="skip"),
    Option("calibration", 0.25, "the share of items the expansion/pruning blocks are chosen on (the rest is "
           "evaluated)", Real(min=0, max=1, min_open=True, max_open=True), group="skip"),
    Option("n_random", 20, "seeded random draws of 1 and of k blocks", Integer(min=0), group="skip"),
    Option("no_sweep", False, "skip the single-block sweep", Flag(), group="skip", switch=True),
    Option("exclude_edges", 0, "leave the first and last N transitions out when choosing the blocks", Integer(min=0),
           group="skip"),
    Option("grading", "loglik", "loglik: the four letters' log-likelihoods; generate: generated letters (the "
           "paper's, slow)", OneOf(("loglik", "generate")), group="skip"),
    Option("seed", 0, "seed of the question draw, the split and the random draws", Integer(min=0), group="skip"),
    Option("k", 3, "blocks skipped together in the top-k conditions (the k largest expansions, the k largest "
           "prunings, k random blocks)", Integer(min=1), group="skip"),
)
SHARED = ["batch_size", "results_dir", "resume", "overwrite", "no_progress", "trust_pickle", "no_plot"] + [
    o.name for o in group("model")]


def build_parser():
    p = ArgumentParser(prog="entropy-lens skip-layers", description=__doc__)
    p.add_argument("model", help="alias (smollm2-135m-instruct, gemma-2-2b-it...), HF id, local dir or .gguf")
    add_flags(p, SHARED, {"dtype": "auto", "device": "auto"}, extra=OPTIONS)
    return p


def items(args) -> tuple[list[dict], list[dict]]:
    """``(calibration items, evaluation items)``: disjoint, by a seeded permutation. An MMLU item has ``text`` (the
    prompt), ``answer`` (0-3), ``choices``, ``subject``, ``index``; a TinyStories item ``text`` and ``index``."""
    from ..experiments.mmlu import HUB as MMLU_HUB
    from ..experiments.mmlu import QUESTION, mmlu_prompt, select_questions
    from ..experiments.tinystories import HUB as TS_HUB
    from ..experiments.tinystories import STORY
    from ..readers import load_rows

    if args.dataset == "mmlu":
        rows = load_rows(QUESTION, data_file=args.data_file, hub=MMLU_HUB)
        rows = select_questions(rows, args.subjects, args.n_questions, args.seed)
        out = [{"text": mmlu_prompt(r["question"], r["choices"], r["subject"], args.prompt_type), "answer": r["answer"],
                "choices": r["choices"], "subject": r["subject"], "index": r["index"]} for r in rows]
    else:
        rows = load_rows(STORY, data_file=args.data_file, hub=TS_HUB, limit=args.n_stories)[: args.n_stories]
        out = [{"text": r["text"], "index": r["index"]} for r in rows]
    if len(out) < 4:
        raise UserError(f"{len(out)} items: a study needs at least 4 (2 to calibrate, 2 to evaluate)")
    order = np.random.default_rng(args.seed).permutation(len(out))
    n_cal = min(len(out) - 2, max(2, int(round(args.calibration * len(out)))))
    return [out[i] for i in sorted(order[:n_cal])], [out[i] for i in sorted(order[n_cal:])]


def calibration_profiles(mi, cal: list[dict], args) -> np.ndarray:
    """``[item, layer]`` lens entropies (nats): at the answer position of each MMLU prompt as it is scored, or the
    mean over each story's first ``max_tokens`` positions."""
    texts = [c["text"] for c in cal]
    if args.dataset == "mmlu":
        from ..skipping import letter_form

        _, texts, _ = letter_form(mi, texts)
    prof = mi.profile_prompt(texts, batch_size=args.batch_size)
    out = []
    for i, n in enumerate(prof.n_positions):
        e = prof.entropy[i, : int(n)]
        out.append(e[-1] if args.dataset == "mmlu" else np.nanmean(e[: args.max_tokens], axis=0))
    return np.stack(out)


def identity(args, mi_ref: tuple, cal: list[dict], ev: list[dict]):
    from ..experiments.base import Sample
    from ..run.config import RunIdentity, fingerprint_path, fingerprint_samples

    ref, local = mi_ref
    fields = {"model": ref, "model_fingerprint": fingerprint_path(local) if local is not None else None,
              "dtype": args.dtype_resolved, "device": args.device_resolved, "dataset": f"skip-{args.dataset}",
              "data_fingerprint": fingerprint_samples([Sample(x["text"], {"set": s}) for s, xs in (("cal", cal),
                                                                                            ("eval", ev)) for x in xs]),
              "n_samples": len(ev), "calibration": len(cal), "k": args.k, "n_random": args.n_random,
              "seed": args.seed, "sweep": not args.no_sweep, "exclude_edges": args.exclude_edges,
              "grading": args.grading, "prompt_type": args.prompt_type if args.dataset == "mmlu" else None,
              "max_tokens": args.max_tokens if args.dataset == "tinystories" else None,
              "random_init": args.random_init, "lens_spec": args.lens_spec}
    return RunIdentity(fields, {"model_fingerprint"} if fields["model_fingerprint"] is None else ())


def score_batch(mi, batch: list[dict], conds, args) -> dict:
    """The rows of one evaluation batch: ``logprobs`` float32 ``[condition, letter]`` (nats; MMLU), ``predicted``
    ``[condition]`` letters (``--grading generate``), or ``nll`` float64 ``[condition]`` nats/token (TinyStories)."""
    from ..skipping import letter_logprobs, next_token_loss, skip_by_hooks

    blocks = [c.blocks for c in conds]
    texts = [x["text"] for x in batch]
    rows: dict = {"index": [x["index"] for x in batch]}
    if args.dataset == "tinystories":
        loss = next_token_loss(mi, texts, blocks, batch_size=len(batch), max_tokens=args.max_tokens)
        rows.update(nll=list(loss.nll), n_tokens=[int(n) for n in loss.n_tokens])
        return rows
    sc = letter_logprobs(mi, texts, blocks, batch_size=len(batch))
    rows.update(logprobs=list(sc.logprob), answer=[int(x["answer"]) for x in batch],
                subject=[x["subject"] for x in batch])
    if args.grading == "generate":
        from ..experiments.mmlu import extract_letter

        pred = [[] for _ in batch]
        for c in conds:
            with skip_by_hooks(mi, c.blocks):
                prof = mi.profile(texts, max_len=8, batch_size=len(batch))
            for i, (t, x) in enumerate(zip(prof.texts, batch)):
                pred[i].append(extract_letter(t, x["choices"]) or "")
        rows["predicted"] = pred
    rows["letter_form"] = [sc.form.text] * len(batch)  # chosen per batch: a column shows any batch that differs
    return rows


def scores_of(state: dict, n_cond: int, grading: str):
    """``(score [item, condition], correct [item, condition] or None, unit, score label)`` of a study's rows."""
    if "nll" in state:
        return -np.stack(state["nll"]), None, "nats/token", "minus the next-token loss"
    lp = np.stack(state["logprobs"]).astype(np.float64)  # [item, condition, letter]
    ans = np.asarray(state["answer"])
    among = lp - np.logaddexp.reduce(lp, axis=-1, keepdims=True)  # log p among the four letters
    score = among[np.arange(len(ans)), :, ans]
    if grading == "generate":
        correct = np.array([[p == "ABCD"[a] for p in row] for row, a in zip(state["predicted"], ans)], dtype=float)
    else:
        correct = (lp.argmax(-1) == ans[:, None]).astype(float)
    return score, correct, "nats", "log p(right letter among the four)"


def main(argv=None) -> int:
    args = parse_checked(build_parser(), argv, [option(n) for n in SHARED] + list(OPTIONS))
    from ..loading import model_source, resolve_placement
    from ..results import Results
    from ..results.schema import FORMAT, FORMAT_VERSION
    from ..run.config import model_label
    from ..run.loop import library_versions
    from ..skipping.study import Condition, plan_conditions, plot_study, strategy_blocks, summarize, sweep_correlations
    from ..storage import OutputLock, PartsStore, atomic_write_bytes, preflight_output

    args.device_resolved, args.dtype_resolved = resolve_placement(args.device, args.dtype, args.device_map)
    cal, ev = items(args)
    n_all = len(cal) + len(ev)
    name = f"{model_label(args.model)}_skip_{args.dataset}_n{n_all}"
    if args.random_init is not None:
        name += f"_random{args.random_init}"
    out = Path(args.results_dir) / f"{name}.pkl"
    preflight_output(out, "--results_dir")
    ident = identity(args, model_source(args.model), cal, ev)
    store = PartsStore(out)
    with OutputLock(out):
        if args.overwrite:
            store.remove()
            out.unlink(missing_ok=True)
        elif out.exists() or store.exists():
            if not args.resume:
                raise FileExistsError(f"{out} exists ({'complete' if out.exists() else 'unfinished'}); pass --resume "
                                      "to continue or reuse it, or --overwrite to start again")
        if out.exists():
            state = Results.load(out, trust=args.trust_pickle).to_dict()
            ident.check(state["metadata"].get("identity"), out, partial=True)
            meta = state.pop("metadata")
        else:
            meta = store.read_meta() if store.exists() else {}
            if meta:
                ident.check(meta.get("identity"), out, partial=True)
            state = store.read_rows(trust=args.trust_pickle) if store.exists() else {}
            mi = load_inspector(args)
            from ..run.config import fingerprint_path

            _, local = model_source(args.model)
            ident = ident.with_loaded(model_fingerprint=fingerprint_path(local) if local else "(no local files)")
            if not meta:
                t0 = time.time()
                prof = calibration_profiles(mi, cal, args)
                chosen = strategy_blocks(prof, k=args.k, exclude_edges=args.exclude_edges)
                conds = plan_conditions(mi.n_layers, chosen["expansion"], chosen["pruning"], k=args.k,
                                        n_random=args.n_random, seed=args.seed, sweep=not args.no_sweep)
                meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "layout": "skip_study",
                        "identity": ident.as_dict(), "versions": library_versions(), "n_layers": mi.n_layers,
                        "calibration": {"index": [c["index"] for c in cal], **chosen,
                                        "seconds": round(time.time() - t0, 1)},
                        "evaluation_index": [e["index"] for e in ev],
                        "conditions": [{"name": c.name, "kind": c.kind, "blocks": list(c.blocks)} for c in conds],
                        "complete": False}
                store.write_meta(meta)
            conds = [Condition(c["name"], c["kind"], tuple(c["blocks"])) for c in meta["conditions"]]
            done = len(state.get("index", []))
            print(f"{len(cal)} calibration and {len(ev)} evaluation items; {len(conds)} conditions "
                  f"(expansion blocks {meta['calibration']['expansion']}, pruning blocks "
                  f"{meta['calibration']['pruning']}); {done} items done before")
            t0 = time.time()
            try:
                for start in range(done, len(ev), args.batch_size):
                    rows = score_batch(mi, ev[start: start + args.batch_size], conds, args)
                    store.append(rows)
                    for k, v in rows.items():
                        state.setdefault(k, []).extend(v)
                    if not args.no_progress:
                        print(f"  {min(start + args.batch_size, len(ev))}/{len(ev)} items, {time.time() - t0:.0f} s",
                              flush=True)
            except KeyboardInterrupt:
                from ..errors import RunInterrupted

                raise RunInterrupted(f"interrupted after {len(state.get('index', []))} of {len(ev)} items; they are "
                                     f"safe in {store.dir}: continue with --resume") from None
            forms = sorted(set(state.get("letter_form", [])))
            meta.update(complete=True, elapsed_s=round(meta.get("elapsed_s", 0) + time.time() - t0, 1),
                        letter_forms=forms)
            Results.from_dict({**state, "metadata": meta}).to_pickle(out)
            store.remove()
    conds = [Condition(c["name"], c["kind"], tuple(c["blocks"])) for c in meta["conditions"]]
    score, correct, unit, what = scores_of(state, len(conds), ident.as_dict()["grading"])
    rows = summarize(conds, score, correct=correct, unit=unit)
    dH, L = meta["calibration"]["dH"], meta["n_layers"]
    corr = sweep_correlations(rows, dH, L)
    import pandas as pd

    table = Path(f"{out.with_suffix('')}_table.csv")
    atomic_write_bytes(table, pd.DataFrame(rows).assign(results_file=out.name).to_csv(index=False).encode())
    import json

    summary = {"results_file": out.name, "n_items": len(ev), "n_calibration": len(cal), "score": what,
               "calibration": meta["calibration"], "letter_forms": meta.get("letter_forms"), "sweep": corr,
               "conditions": [r for r in rows if r["kind"] != "random"],
               "comparison": compare_strategies(conds, score, correct)}
    atomic_write_bytes(Path(f"{out.with_suffix('')}_summary.json"), json.dumps(summary, indent=1, default=float).encode())
    report(rows, corr, meta, what, len(ev))
    print(f"wrote {out} and {table}")
    if not args.no_plot:
        from ..plots import save_figure

        fig = plot_study(rows, dH, L, title=f"{out.name}: damage of single-block skips (n={len(ev)} items)",
                         score_label=what)
        for p in save_figure(fig, f"{out.with_suffix('')}_sweep.png"):
            print(f"wrote {p}")
    return 0


def compare_strategies(conds, score, correct) -> dict:
    """Expansion against pruning, item by item, for the top-k (else top-1) sets: the paired difference of their
    score changes (negative: skipping the expansion blocks hurts more) with its 95 % CI and p, and McNemar's p on
    accuracy."""
    from ..skipping.study import _mcnemar, _paired

    names = [c.name for c in conds]
    for size in ("topk", "top1"):
        exp = next((i for i, c in enumerate(conds) if c.kind == "expansion" and (size == "top1") == c.name.endswith(
            "top1")), None)
        pru = next((i for i, c in enumerate(conds) if c.kind == "pruning" and (size == "top1") == c.name.endswith(
            "top1")), None)
        if exp is not None and pru is not None:
            d, hw, p = _paired(score[:, exp] - score[:, pru])
            out = {"expansion": names[exp], "pruning": names[pru], "score_diff": d, "score_diff_ci95": hw,
                   "p_score": p, "n_items": int(score.shape[0])}
            if correct is not None:
                out.update(accuracy_diff=float(correct[:, exp].mean() - correct[:, pru].mean()),
                           p_accuracy=_mcnemar(correct[:, pru], correct[:, exp]))
            return out
    return {}


def report(rows: list[dict], corr: dict, meta: dict, what: str, n: int) -> None:
    """Print the strategy conditions beside no skip and the random draws, and the sweep's correlations."""
    base = rows[0]
    acc = "accuracy" in base
    print(f"no skip: {what} {base['score']:.3f}" + (f", accuracy {base['accuracy']:.3f} [95% CI "
          f"{base['accuracy_ci_low']:.3f}, {base['accuracy_ci_high']:.3f}]" if acc else "") + f" (n = {n} items)")
    for r in rows:
        if r["kind"] not in ("expansion", "pruning"):
            continue
        line = (f"  {r['condition']:<15} blocks {r['blocks']:<9} change {r['score_change']:+.3f} ± "
                f"{r['score_change_ci95']:.3f} {r['unit']} (paired p = {r['p_score']:.2g})")
        if acc:
            line += f", accuracy {r['accuracy']:.3f} ({r['accuracy_change']:+.3f}, McNemar p = {r['p_accuracy']:.2g})"
        if "p_vs_random" in r:
            line += (f"; vs {r['n_random']} random draws of {len(r['blocks'].split())} block(s) (their change "
                     f"{r['random_mean_change']:+.3f} ± {r['random_std_change']:.3f}): empirical p = "
                     f"{r['p_vs_random']:.2g} for more damaging than random")
        print(line)
    if corr.get("n", 0) >= 4:
        print(f"  sweep over {corr['n']} blocks: Spearman rho(damage, |dH|) = {corr['damage_vs_abs_dH']:+.2f} "
              f"(p = {corr['damage_vs_abs_dH_p']:.2g}), rho(damage, dH) = {corr['damage_vs_dH']:+.2f}, "
              f"rho(damage, depth) = {corr['damage_vs_depth']:+.2f} (p = {corr['damage_vs_depth_p']:.2g}); "
              f"partial rho(damage, |dH| | depth) = {corr['damage_vs_abs_dH_given_depth']:+.2f}")


if __name__ == "__main__":
    from ..cli import run_main

    run_main(main)
