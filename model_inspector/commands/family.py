"""Model families on relative depth (claim (ii) of Entropy-Lens v3: profiles are family-specific and agree across
model sizes once plotted against relative depth).

Reads one results file per model (``entropy-lens run family MODEL``: generations sampled from the BOS token; any
profiling run works), takes each sample's mean profile over its tokens, puts every model's mean profile on one grid
of relative depths, and reports for each pair of models the Pearson r of the two curves (with a bootstrap 95 % CI
over samples) and their RMSE in nats; then the within-family against the between-family agreement, and which
families have a single model (there depth invariance cannot be tested: only the between-family numbers mean
something). Writes OUT_DIR/family_agreement.csv and family_profiles.png.

Example:
  entropy-lens run family smollm2-135m-instruct --n_samples 24 --max_len 16
  entropy-lens run family gemma-3-270m --n_samples 24 --max_len 16
  entropy-lens family results/smollm2-135m-instruct_family_24.pkl results/gemma-3-270m_family_24.pkl
"""

from __future__ import annotations

from pathlib import Path

from ..options import ArgumentParser, Integer, ListOf, Option, Text, add_flags, option, parse_checked

OPTIONS = (
    Option("files", None, "results files, one per model", ListOf(Text()), group="family", flag=None),
    Option("n_points", 48, "relative-depth grid points", Integer(min=2), group="family"),
    Option("n_boot", 200, "bootstrap resamples of each model's samples", Integer(min=1), group="family"),
)
SHARED = ["metric", "out_dir", "no_plot", "trust_pickle"]


def build_parser():
    p = ArgumentParser(prog="entropy-lens family", description=__doc__)
    p.add_argument("files", nargs="+", help="results files, one per model")
    add_flags(p, SHARED, extra=OPTIONS)
    return p


def main(argv=None) -> int:
    args = parse_checked(build_parser(), argv, [option(n) for n in SHARED] + list(OPTIONS[1:]))
    import numpy as np

    from ..errors import UserError
    from ..experiments.family import model_family
    from ..family import agreement_summary, depth_agreement, plot_family_profiles
    from ..results import Results
    from ..storage import atomic_write_bytes

    by_model, families = {}, {}
    for f in args.files:
        res = Results.load(f, trust=args.trust_pickle)
        metric = args.metric or ("entropy" if "entropy" in res.metric_keys else (res.metric_keys or [None])[0])
        if metric not in res:
            raise UserError(f"{f} has no {metric!r} profiles (it has {', '.join(res.metric_keys) or 'none'})")
        model = (res.metadata.get("identity") or {}).get("model") or (res.get("model") or [Path(f).stem])[0]
        name = str(model).split(":")[-1].split("@")[0].rstrip("/").split("/")[-1]
        if name in by_model:
            raise UserError(f"two files of model {name!r}: give one results file per model")
        by_model[name] = np.nanmean(res.profiles(metric), axis=1)  # [sample, layer]
        families[name] = str(res["family"][0]) if "family" in res else model_family(name)
    if len(by_model) < 2:
        raise UserError("give the results files of at least two models")
    pairs = depth_agreement(by_model, families, n_points=args.n_points, n_boot=args.n_boot)
    summary = agreement_summary(pairs, families)
    out_dir = Path(args.out_dir or Path(args.files[0]).parent)
    print(f"{len(by_model)} models, {summary['n_families']} families; mean {metric} profiles on {args.n_points} "
          "relative depths (layer / L)")
    for _, r in pairs.iterrows():
        print(f"  {r['model_a']} (L={r['layers_a']}, n={r['n_a']}, {r['family_a']}) vs {r['model_b']} "
              f"(L={r['layers_b']}, n={r['n_b']}, {r['family_b']}): r = {r['pearson_r']:+.3f} [95% CI "
              f"{r['r_ci_low']:+.3f}, {r['r_ci_high']:+.3f}], RMSE {r['rmse_nats']:.3f} nats"
              f"{' (same family)' if r['same_family'] else ''}")
    for part in ("within", "between"):
        if summary.get(f"{part}_pairs"):
            print(f"  {part}-family pairs: {summary[f'{part}_pairs']}, mean r {summary[f'{part}_r_mean']:+.3f} "
                  f"(std {summary[f'{part}_r_std']:.3f})")
    if "p_within_gt_between" in summary:
        print(f"  within > between (Mann-Whitney, one-sided): p = {summary['p_within_gt_between']:.2g}")
    if summary["one_model_families"]:
        print(f"  note: one model only in {', '.join(summary['one_model_families'])}: depth-rescaling invariance "
              "within a family cannot be tested there (profile another size of the same family)")
    csv = out_dir / "family_agreement.csv"
    atomic_write_bytes(csv, pairs.to_csv(index=False).encode())
    print(f"  wrote {csv}")
    if not args.no_plot:
        from ..plots import save_figure

        for p in save_figure(plot_family_profiles(by_model, families, ylabel=f"{metric} [nats]"),
                             out_dir / "family_profiles.png"):
            print(f"  wrote {p}")
    return 0


if __name__ == "__main__":
    from ..cli import run_main

    run_main(main)
