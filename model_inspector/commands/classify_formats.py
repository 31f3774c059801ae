"""Classify output formats from entropy profiles (paper, section 6): per Rényi alpha, k-NN
(Euclidean) on the flattened [windows x L] profile; stratified 10-fold CV accuracy (mean, std, per
fold), macro one-vs-rest ROC-AUC against a stratified dummy baseline, an 80/20 stratified split
report and a confusion-matrix plot per alpha.

Formats files are read by the restricted unpickler (no code in a file runs; --trust_pickle lifts it).

Example:
  python3 classify_formats.py -d data/gemma/formats.pkl -a 0.5 1 5 -k 5
  python3 classify_formats.py -d data/gemma/formats.pkl -a 0.5 1 5 -k 3 5 7 --json summary.json
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import UserError
from ..options import ArgumentParser, Integer, ListOf, Option, Real, Text, add_flags, option, parse_checked

#: this command's own options (``--folds`` and ``--out_dir`` are the shared ones of :mod:`model_inspector.options`)
OPTIONS = (
    Option("data", None, "formats file from generate_format_dataset.py", Text(none=False), group="classify",
           aliases=("-d",)),
    Option("alphas", None, "Rényi orders (default: all in the file)", ListOf(Real(min=0), none=True),
           group="classify", aliases=("-a",), nargs="+"),
    Option("ks", (3, 5, 7), "neighbours", ListOf(Integer(min=1)), group="classify", aliases=("-k",), nargs="+"),
    Option("test_size", 0.2, "split report test share", Real(min=0, max=1, min_open=True, max_open=True), group="classify",
           flag="--test-size"),
    Option("random_state", 42, "CV and split seed", Integer(), group="classify", flag="--random-state"),
    Option("json", None, "write {alpha: {k: {cv_accuracy_mean, ...}}} here", Text(), group="classify"),
    Option("plots", None, "folder for confusion matrices (default: OUT_DIR, else plots/ beside the data file)", Text(),
           group="classify"),
)


def build_parser():
    p = ArgumentParser(description=__doc__)
    add_flags(p, ["folds"], extra=OPTIONS)
    add_flags(p, ["out_dir", "trust_pickle"])
    return p


def parse_args(argv=None):
    args = parse_checked(build_parser(), argv, [option("folds"), option("out_dir"), option("trust_pickle"), *OPTIONS])
    if args.data is None:
        raise UserError("-d/--data is required: the formats file from generate_format_dataset.py")
    return args


def plot_confusion(cm, labels, title, path):
    from sklearn.metrics import ConfusionMatrixDisplay

    from model_inspector.plots import _plt, save_figure

    fig, ax = _plt().subplots(figsize=(6.2, 4.8))
    ConfusionMatrixDisplay(cm, display_labels=labels).plot(ax=ax, cmap="Blues", colorbar=False)
    ax.set_title(title, fontsize=8)
    return save_figure(fig, path)


def main(argv=None) -> int:
    args = parse_args(argv)
    import numpy as np

    from ..errors import ResultsFileError
    from ..evaluation import evaluate_knn, split_report
    from ..results import Results
    from ..storage import preflight_output

    if not Path(args.data).is_file():
        raise ResultsFileError(f"formats file not found: {args.data} (create it with generate_format_dataset.py)")
    res = Results.load(args.data, trust=args.trust_pickle)
    df = res.to_records()
    model = ((res.metadata.get("identity") or {}).get("model") or str(df["model"].iloc[0] if "model" in df else "?"))
    available = sorted(df["alpha"].unique())
    alphas = args.alphas or available
    missing = [a for a in alphas if not np.isclose(available, a).any()]
    if missing:
        raise UserError(f"alpha {', '.join(map(str, missing))} not in {args.data} (it has {', '.join(map(str, available))})")
    plots = Path(args.plots) if args.plots else Path(args.out_dir) if args.out_dir else Path(args.data).parent / "plots"
    json_out = (Path(args.out_dir) / args.json if args.out_dir and not Path(args.json).is_absolute() else Path(args.json)
                ) if args.json else None
    for target in [plots / "confusion.png"] + ([json_out] if json_out else []):
        preflight_output(target, "--out_dir / --plots / --json")  # before any work
    summary = {}
    print(f"{args.data}: {df['sample'].nunique() if 'sample' in df else len(df) // len(available)} prompts, "
          f"formats {', '.join(sorted(df['format'].unique()))}")
    n_classes = df["format"].nunique()
    shown: dict = {}  # the plotted confusion matrices, to say when two orders give the same one
    print(f"{'alpha':>6} {'k':>3} {'cv acc':>8} {'± std':>7} {'chance':>7} {'ROC-AUC':>8} {'dummy AUC':>10} "
          f"{'split acc':>10}")
    for a in alphas:
        sub = df[np.isclose(df["alpha"].astype(float), a)]
        X = np.stack([np.asarray(e, dtype=np.float64).reshape(-1) for e in sub["entropy"]])
        y = sub["format"].to_numpy()
        summary[str(a)] = {}
        for k in args.ks:
            r = evaluate_knn(X, y, k=k, n_splits=args.folds, seed=args.random_state)
            report, cm, labels = split_report(X, y, k, args.test_size, args.random_state)
            summary[str(a)][str(k)] = {
                "cv_accuracy_mean": r["model_accuracy"], "cv_accuracy_std": r["model_accuracy_std"],
                "cv_accuracy_by_fold": r["model_accuracy_by_fold"], "roc_auc": r["model_roc_auc"],
                "roc_auc_by_fold": r["model_auc_by_fold"], "baseline_roc_auc": r["baseline_roc_auc"],
                "p_value": r["p_value"], "split_accuracy": report["accuracy"], "split_report": report,
                "confusion_matrix": cm.tolist(), "labels": labels, "n_samples": r["n_samples"], "k_used": r["k_used"],
                "chance_accuracy": max(r["class_counts"]) / r["n_samples"]}
            k_note = f" (k reduced to {r['k_used']}: small training folds)" if r["k_used"] < k else ""
            print(f"{a:>6g} {k:>3} {r['model_accuracy']:>8.3f} {r['model_accuracy_std']:>7.3f} "
                  f"{max(r['class_counts']) / r['n_samples']:>7.3f} {r['model_roc_auc']:>8.3f} "
                  f"{r['baseline_roc_auc']:>10.3f} {report['accuracy']:>10.3f}{k_note}")
        best_k = max(args.ks, key=lambda k: summary[str(a)][str(k)]["cv_accuracy_mean"])
        best = summary[str(a)][str(best_k)]
        cm = np.array(best["confusion_matrix"])
        n_test = int(cm.sum())
        order = "Shannon entropy (Rényi α=1)" if a == 1 else f"Rényi entropy α={a:g}"
        title = (f"{model}: {order}, k={best['k_used']} (best of k in {', '.join(map(str, args.ks))})\n"
                 f"{args.folds}-fold CV accuracy {best['cv_accuracy_mean']:.2f} ± {best['cv_accuracy_std']:.2f}, "
                 f"ROC-AUC {best['roc_auc']:.2f}; {args.test_size:g} test split (n={n_test}): accuracy "
                 f"{best['split_accuracy']:.2f} (chance {1 / n_classes:.2f}); rows: true, columns: predicted")
        key = cm.tobytes()
        if key in shown:
            print(f"  note: the test split's confusion matrix of alpha {a:g} equals that of alpha {shown[key]:g} (n={n_test} "
                  "test samples: the same predictions; the CV accuracies above use every sample)")
        shown.setdefault(key, a)
        # what the plot shows, in its name; the data file's stem first, as evaluate's outputs: two models' matrices
        # written into one --out_dir never overwrite each other
        name = f"{Path(args.data).stem}_confusion_alpha{a:g}_k{best['k_used']}_{args.folds}fold.png"
        for p in plot_confusion(cm, labels, title, plots / name):
            print(f"  wrote {p}")
    if json_out:
        from ..storage import atomic_write_bytes

        atomic_write_bytes(json_out, json.dumps(summary, indent=1).encode())
        print(f"wrote {json_out}")
    return 0

