"""k-NN evaluation of saved entropy profiles (paper's evaluation): k = 29 (Euclidean) on the mean
profile in stratified 10-fold CV (shuffled, seed 42), macro one-vs-rest ROC-AUC against a stratified
dummy baseline, paired t-test over folds. Writes FILE_tm_LABEL_kK_Ffold_overall.csv (and ..._subject.csv with
--by_subject, ..._controls.csv with --controls), prints a table and saves ..._profiles.png (mean profile per
class): the names carry what distinguishes one evaluation from another (label, k used, folds; metric and windows
when not the default), and each CSV records the results file's identity and sample count.

--controls evaluates, in the same folds, what a reviewer asks first: the last layer alone (the model's own output
entropy), the profile without the last layer, prompt length in tokens alone, label permutations (an empirical
p-value), and, where the experiment groups its prompts (TinyStories: every story appears in every class), folds
grouped by that column. --control FILE adds a control run of the same prompts (e.g. the same architecture with random
weights: profile-ts ... --random_init 0), with a paired test against this file. Every row says its n, its spread
across folds and its direction and significance against the baseline.

--label prompt: the class is the first word of each sample's prompt label (continuation, counting,
semantic); --label correct: MMLU correctness; any other per-sample key of the file is used as is.

Reads this library's files and the original code's (raw `activations`: the entropies are recomputed
with the model named in the file, --bs activations at a time).

Results files are read by the restricted unpickler: no code in a file runs (--trust_pickle lifts that for files
you wrote yourself; .npz files hold no pickle at all).

Example:
  python3 run_tests.py results/gemma-2-2b-it_tinystories_100.pkl --bs 8 --label "prompt"
  python3 run_tests.py results/gemma-2-2b-it_mmlu_base.pkl --bs 8
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ..cli import load_inspector
from ..errors import UserError
from ..options import ArgumentParser, Flag, Integer, Option, Text, add_flags, group, option, parse_checked

OVERALL_COLUMNS = ["model_roc_auc", "baseline_roc_auc", "improvement", "p_value", "significant",
                   "model_auc_by_fold", "baseline_auc_by_fold", "correct"]


#: this command's own options (the shared ones are declared in :mod:`model_inspector.options`)
OPTIONS = (
    Option("bs", 8, "batch size when entropies are recomputed from raw activations", Integer(min=1), group="evaluate"),
    Option("by_subject", False, "also evaluate each MMLU subject (k=25, distance weights)", Flag(), group="evaluate",
           switch=True),
    Option("model", None, "model for files with raw activations (default: the file's)", Text(), group="evaluate"),
    Option("controls", False, "also evaluate the controls, in the same folds (see above)", Flag(), group="evaluate",
           switch=True),
    Option("permutations", 100, "label permutations with --controls (0: none)", Integer(min=0), group="evaluate"),
    Option("group", None, "with --controls: the per-sample column folds are also grouped by (default: the "
           "experiment's, story_index for TinyStories)", Text(), group="evaluate"),
    Option("control", None, "a control run of the same prompts (e.g. --random_init), evaluated in the same folds "
           "with a paired test against this file", Text(), group="evaluate", metavar="CONTROL_FILE"),
    Option("allow_partial", False, "evaluate a file that is not complete (an interrupted or running run); the "
           "outputs say so", Flag(), group="evaluate", switch=True),
    Option("k", None, "neighbours (default: the file's experiment's: 29 for TinyStories and MMLU, as the paper; 5 for "
           "formats and family; 29 otherwise)", Integer(min=1, none=True), group="evaluate"),
    Option("folds", None, "CV folds (default: the file's experiment's: 10; 5 for family)", Integer(min=2, none=True),
           group="evaluate"),
)
SHARED = ["label", "num_windows", "metric", "no_plot", "out_dir", "trust_pickle"] + [
    o.name for o in group("model")]


def build_parser():
    p = ArgumentParser(description=__doc__)
    p.add_argument("file", help="results file (.pkl from the experiment scripts, or .npz)")
    add_flags(p, SHARED, {"dtype": "auto", "device": "auto"}, extra=OPTIONS)
    return p


def parse_args(argv=None):
    return parse_checked(build_parser(), argv, [option(n) for n in SHARED] + list(OPTIONS))


def labels_of(data, label: str) -> np.ndarray:
    """Class labels for ``--label`` (``data``: :class:`~model_inspector.results.Results` or the paper's
    dict). ``prompt``: the first word of each prompt label."""
    from ..results import Results

    res = Results.from_dict(data) if isinstance(data, dict) else data
    if label not in res:
        raise UserError(f"unknown label {label!r}; this file has: {', '.join(res.keys())} (choose one with --label)")
    values = res[label]
    if label == "prompt":
        return np.array([str(v).split("_")[0] for v in values])
    return np.array([v if isinstance(v, (str, int, np.integer, bool, np.bool_)) else str(v) for v in values])


def ensure_entropy(data: dict, args) -> None:
    """Original-format files hold raw activations [T, L, d]: recompute Shannon entropies [T, L]."""
    from ..errors import ResultsFileError
    from ..results import Results

    if args.metric is None:  # the default: entropy, else the file's first metric
        keys = Results.from_dict(data).metric_keys if isinstance(data, dict) else data.metric_keys
        args.metric = "entropy" if "entropy" in keys or not keys else keys[0]
    if args.metric in data:
        return
    if "activations" not in data:
        raise ResultsFileError(f"{args.file}: no '{args.metric}' profiles and no raw activations")
    name = args.model or (data.get("model") or [None])[0]
    if not name:
        raise UserError("the file names no model; pass --model")
    mi = load_inspector(argparse.Namespace(**{**vars(args), "model": name}))  # the scripts' loading path
    acts = data["activations"]
    out = []
    for i in range(0, len(acts), args.bs):
        import torch

        batch = torch.as_tensor(np.stack([np.asarray(a, dtype=np.float32) for a in acts[i : i + args.bs]]))
        out.extend(mi.lens.metrics(batch.to(mi.device), ["shannon"])["entropy"].cpu().numpy())
    data["entropy"] = out


def evaluate(data: dict, args) -> tuple:
    """``(overall DataFrame, per-subject DataFrame or None, features X, labels y)``."""
    import pandas as pd

    from ..evaluation import InsufficientDataError, evaluate_knn, features_from_results

    y = labels_of(data, args.label)  # check the label before any (slow) recomputation
    ensure_entropy(data, args)
    X = features_from_results(data, args.metric, args.num_windows)
    res = evaluate_knn(X, y, k=args.k, n_splits=args.folds)
    pos = res["classes"][-1]
    balance = "|".join(f"{c}:{n / res['n_samples']:.3f}" for c, n in zip(res["classes"], res["class_counts"]))
    # binary: the fraction of positive labels (the paper's column); more classes: the class balance
    res["correct"] = float(np.mean(y.astype(str) == str(pos))) if len(res["classes"]) == 2 else balance
    overall = pd.DataFrame([{c: res[c] for c in OVERALL_COLUMNS} | {
        "label": args.label, "k": args.k, "k_used": res["k_used"], "folds": args.folds, "n_samples": res["n_samples"],
        "classes": "|".join(res["classes"]), "class_counts": "|".join(map(str, res["class_counts"])),
        "class_balance": balance, "chance_accuracy": max(res["class_counts"]) /
        res["n_samples"], "model_accuracy": res["model_accuracy"], "baseline_accuracy": res["baseline_accuracy"]}])
    subject = None
    if args.by_subject:
        if "subject" not in data:
            raise UserError("--by_subject: this file has no 'subject' labels (MMLU files do)")
        rows = []
        subjects = np.array(data["subject"])
        for s in sorted(set(subjects)):
            sel = subjects == s
            counts = np.unique(y[sel], return_counts=True)[1]
            row = {"subject": s, "n_samples": int(sel.sum()), "correct": float(np.mean(y[sel].astype(str) == str(pos)))}
            folds = int(min(args.folds, counts.min())) if len(counts) > 1 else 0
            if folds < 2:
                row["note"] = "skipped: a class has fewer than 2 samples"
            else:
                try:
                    r = evaluate_knn(X[sel], y[sel], k=25, n_splits=folds, weights="distance")
                    row.update({c: r[c] for c in OVERALL_COLUMNS if c != "correct"}, folds=folds)
                except InsufficientDataError as exc:
                    row["note"] = f"skipped: {exc}"
            rows.append(row)
        subject = pd.DataFrame(rows)
    return overall, subject, X, y


def default_label(res, exp) -> str:
    """``correct`` (the paper's default) when the file has it, else the label its experiment ``exp`` (or ``None``)
    is evaluated by."""
    if "correct" in res:
        return "correct"
    label = exp.evaluation.get("label") if exp is not None else None
    if label and (label in res or (label == "prompt" and "prompt" in res)):
        return label
    raise UserError(f"this file has no 'correct' labels; choose what to predict with --label (it has: "
                    f"{', '.join(res.label_keys)})")


def _experiment_of(res):
    from ..experiments import EXPERIMENTS, load_builtin

    load_builtin()
    dataset = (res.metadata.get("identity") or {}).get("dataset") or (res.metadata.get("config") or {}).get("dataset")
    return EXPERIMENTS.get(dataset)


def check_complete(res, path, allow_partial: bool) -> str | None:
    """A one-line refusal for an incomplete or running file (``None`` when complete); with ``allow_partial`` the
    line is a note that goes into the outputs."""
    from ..storage import OutputLock

    meta = res.metadata
    holder = OutputLock(path).held_by()
    n, total = len(res), meta.get("n_total")
    what = None
    if holder:
        what = f"{path} is being written by {holder}: {n} samples so far"
    elif meta.get("complete") is False:
        what = (f"{path} is incomplete ({n}{f' of {total}' if total else ''} samples: the run was interrupted); finish "
                "it with --resume")
    if what and not allow_partial:
        raise UserError(f"{what}, or pass --allow_partial to evaluate what is there")
    return what


def prompt_lengths(res) -> tuple[np.ndarray, str]:
    """Prompt length per sample ``[sample]``: tokens where the file records them (``prompt_tokens``), else
    characters of the prompt (with what it is)."""
    if "prompt_tokens" in res:
        return np.asarray(res["prompt_tokens"], dtype=np.float64), "prompt length in tokens alone"
    if "input" in res:
        return (np.array([len(str(t)) for t in res["input"]], dtype=np.float64),
                "prompt length in characters alone (this file records no token counts)")
    raise UserError("--controls: this file holds neither prompt_tokens nor the prompts (input)")


def control_features(data, args, X, y) -> tuple[list, str | None]:
    """The feature sets of ``--controls`` / ``--control`` (the paper's first) and the column folds are grouped by."""
    from ..evaluation import Feature, features_from_results
    from ..results import Results

    L = np.asarray(data[args.metric][0]).shape[-1]
    W = args.num_windows or 1
    feats = [Feature("profile", X, f"mean {args.metric} profile over generated tokens"
                     + (f", {W} windows" if W > 1 else "") + f" ({L} layers)")]
    if args.controls:
        last = [w * L + L - 1 for w in range(W)]
        rest = [i for i in range(X.shape[1]) if i not in last]
        feats.append(Feature("last_layer", X[:, last], f"the last layer alone: the model's own output {args.metric}"))
        feats.append(Feature("no_last_layer", X[:, rest], f"the profile without the last layer ({L - 1} layers)"))
        lengths, what = prompt_lengths(data)
        feats.append(Feature("prompt_length", lengths[:, None], what))
    if args.control:
        other = Results.load(args.control, trust=args.trust_pickle)
        if other.get("input") != data.get("input") and not (
                "sample_index" in other and "sample_index" in data and other["sample_index"] == data["sample_index"]
                and other.get("input") == data.get("input")):
            raise UserError(f"--control {args.control} holds other prompts than {args.file} (or in another order); a "
                            "control run must profile the same prompts with the same data and seed")
        if args.metric not in other:
            raise UserError(f"--control {args.control} has no {args.metric!r} profiles (it has "
                            f"{', '.join(other.metric_keys)})")
        ident = other.metadata.get("identity") or {}
        seed = ident.get("random_init")
        desc = (f"the same prompts through {ident.get('model', '?')} with random weights (seed {seed})"
                if seed is not None else f"the same prompts in {Path(args.control).name}")
        feats.append(Feature("control_file", features_from_results(other.to_dict(), args.metric, args.num_windows),
                             desc))
    group = None
    if args.controls:
        group = args.group  # default: the experiment's (set in main)
        if group is not None and group not in data:
            raise UserError(f"--group {group!r}: this file has no such column (it has: {', '.join(data.label_keys)})")
    return feats, group


def _direction(row) -> str:
    sig = "significant" if row["significant"] else "not significant"
    return f"{row['vs_baseline']} than the baseline, {sig} at 0.05"


def main(argv=None) -> int:
    args = parse_args(argv)
    import pandas as pd

    from ..errors import ResultsFileError
    from ..evaluation import evaluate_controls, output_stem
    from ..results import Results
    from ..run.config import RunIdentity
    from ..storage import atomic_write_bytes, preflight_output

    if not str(args.file).strip():
        raise UserError("no results file given: run_tests.py FILE (a .pkl or .npz from the experiment scripts)")
    src = Path(args.file)
    out_dir = Path(args.out_dir) if args.out_dir else src.parent
    preflight_output(out_dir / f"{src.stem}_tm_probe.csv", "--out_dir")  # writable: before any (slow) work
    data = Results.load(args.file, trust=args.trust_pickle)
    if len(data) == 0:
        raise ResultsFileError(f"{args.file} holds no samples")
    partial = check_complete(data, src, args.allow_partial)
    exp = _experiment_of(data)  # the defaults of the file's experiment: label, k, folds, grouping
    defaults = exp.evaluation if exp is not None else {}
    if args.label is None:
        args.label = default_label(data, exp)
    if args.controls and args.group is None:
        args.group = defaults.get("group")
    if args.k is None:
        args.k = int(defaults.get("k", 29))
    if args.folds is None:
        args.folds = int(defaults.get("folds", 10))
    overall, subject, X, y = evaluate(data, args)
    r = overall.iloc[0]
    stem = output_stem(src, args.out_dir, label=args.label, k=int(r["k_used"]), folds=args.folds,
                       metric=args.metric, num_windows=args.num_windows)
    ident = data.metadata.get("identity")
    record = {"results_file": src.name, "results_identity": RunIdentity(ident).digest() if ident else "none",
              "results_n_samples": len(data), "results_complete": partial is None, "note": partial or ""}

    def write_csv(df, suffix):
        path = Path(f"{stem}{suffix}")
        atomic_write_bytes(path, df.assign(**record).to_csv(index=False).encode())
        print(f"  wrote {path}")

    if partial:
        print(f"note: {partial}: the outputs say so")
    print(f"{args.file}: {r['n_samples']} samples, label '{args.label}' ({r['class_balance']}), {args.folds}-fold CV")
    if r["k_used"] < args.k:
        print(f"  note: k reduced from {args.k} to {r['k_used']}: the training folds hold too few samples "
              "(lower --k or profile more samples)")
    smallest = min(int(c) for c in str(r["class_counts"]).split("|"))
    train_smallest = smallest * (args.folds - 1) / args.folds
    if r["k_used"] > 0.5 * train_smallest:
        k_fit = max(1, int(train_smallest / 2))
        k_fit -= (k_fit % 2 == 0 and k_fit > 1)  # odd: no ties between two classes
        print(f"  note: k={r['k_used']} is over half the {int(train_smallest)} training samples of the smallest "
              "class: the vote leans on the class sizes ("
              + (f"try --k {k_fit}, or profile more samples)" if k_fit < r["k_used"] else "profile more samples)"))
    print(f"  k-NN (k={r['k_used']}) ROC-AUC   {r['model_roc_auc']:.3f} ± {np.std(r['model_auc_by_fold']):.3f} "
          f"(std over {args.folds} folds)   accuracy {r['model_accuracy']:.3f} (chance {r['chance_accuracy']:.3f})")
    print(f"  stratified baseline ROC-AUC {r['baseline_roc_auc']:.3f}   accuracy {r['baseline_accuracy']:.3f}")
    better = "better" if r["improvement"] > 0 else "worse" if r["improvement"] < 0 else "no different"
    print(f"  improvement {r['improvement']:+.3f} ({better} than the baseline), paired t-test p = {r['p_value']:.2e} "
          f"({'significant' if r['significant'] else 'not significant'} at 0.05)")
    if len(r["classes"].split("|")) == 2:
        print(f"  fraction of '{r['classes'].split('|')[-1]}' labels: {float(r['correct']):.3f}")
    write_csv(overall, "_overall.csv")
    if args.controls or args.control:
        feats, group = control_features(data, args, X, y)
        groups = np.asarray(data[group]) if group else None
        rows = evaluate_controls(feats, y, k=args.k, n_splits=args.folds, groups=groups, group_name=group or "group",
                                 n_permutations=args.permutations if args.controls else 0)
        print(f"  controls, same {args.folds} folds (ROC-AUC mean ± std over folds; n = {len(y)}):")
        for row in rows:
            if row["feature"] == "label_permutations":
                print(f"    {'label permutations':<26} {row['roc_auc']:.3f} ± {row['roc_auc_std']:.3f} over "
                      f"{row['n_permutations']} permutations (95th percentile {row['roc_auc_p95']:.3f}); the profile's "
                      f"{rows[0]['roc_auc']:.3f} has empirical p = {row['p_reference_vs_permutations']:.3g}")
                continue
            ref = (f"; {row['vs_reference']} than the profile, paired p = {row['p_vs_reference']:.2g}"
                   if "p_vs_reference" in row else "")
            print(f"    {row['feature']:<26} {row['roc_auc']:.3f} ± {row['roc_auc_std']:.3f}  (p = "
                  f"{row['p_vs_baseline']:.2g}: {_direction(row)}{ref})  {row['description']}")
        write_csv(pd.DataFrame(rows), "_controls.csv")
        from ..report import identification, paper_range

        claim = paper_range(args.label, data.metadata)
        v = identification(pd.DataFrame(rows), claim)
        words = v["verdict"] if claim else {"reproduced": "identified", "not reproduced at this scale":
                                            "not identified at this size"}.get(v["verdict"], v["verdict"])
        about = f"the paper's claim (ROC-AUC {claim[0]}-{claim[1]})" if claim else f"'{args.label}' (no claim of the paper)"
        print(f"  verdict at this size (n = {len(y)}) for {about}: {words}: {v['why']}")
    if subject is not None:
        with pd.option_context("display.width", 160, "display.max_rows", 100):
            cols = [c for c in ("subject", "n_samples", "correct", "model_roc_auc", "baseline_roc_auc", "p_value", "note")
                    if c in subject]
            print(subject[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        write_csv(subject, "_subject.csv")
    if not args.no_plot:
        from model_inspector.plots import plot_class_profiles, save_figure

        L = X.shape[1] // (args.num_windows or 1)
        names = {"0": "incorrect", "1": "correct"} if args.label == "correct" else None
        model = (ident or {}).get("model") or data.metadata.get("model_id") or "?"
        fig = plot_class_profiles(X[:, :L] if args.num_windows else X, y, class_names=names,
                                  title=f"{src.name} ({model}): mean {args.metric} profile by {args.label}\n"
                                        f"k-NN k={r['k_used']}, {args.folds}-fold CV: ROC-AUC {r['model_roc_auc']:.3f} "
                                        f"(baseline {r['baseline_roc_auc']:.3f}), n={r['n_samples']}")
        for p in save_figure(fig, f"{stem}_profiles.png"):
            print(f"  wrote {p}")
    return 0
