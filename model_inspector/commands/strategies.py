"""Expansion and pruning layers of saved profiles (claim (i) of Entropy-Lens v3).

dH_l = H_l - H_(l-1) between consecutive layers (nats for entropies): expansion where it is most
positive (more candidates), pruning where it is most negative (fewer). Each sample's dH is averaged over
its generated tokens (a formats file's window means are treated like tokens), then over the class. For
every class and for all samples ("overall") it prints the top expansion and pruning layer, with all
transitions and without those touching the first or last layer (the last layer usually dominates):
the layer a transition ends at, its relative depth (layer + 1) / L, n, the mean dH with its bootstrap 95 %
CI, and its stability (the fraction of samples, and of bootstrap resamples, whose own top transition is
the same one). Writes FILE_strategies_LABEL.csv (top --k per class, variant and kind) and
FILE_strategies_LABEL.png (mean dH against relative depth); a metric other than entropy is added to the
names (FILE_strategies_LABEL_renyi_0.5.csv).

--label prompt: the class is the first word of each sample's prompt label (continuation, counting,
semantic); any other per-sample key of the file is used as is; no --label: all samples together.

Example:
  entropy-lens strategies results/smollm2-135m-instruct_tinystories_100.npz --label prompt
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from ..options import ArgumentParser, Integer, Option, Text, add_flags, option, parse_checked

#: this command's own options (the shared ones are declared in :mod:`model_inspector.options`)
OPTIONS = (
    Option("n_boot", 1000, "bootstrap resamples", Integer(min=1), group="strategies"),
    Option("seed", 0, "bootstrap seed", Integer(), group="strategies"),
    Option("exclude_edges", 1, "layers dropped at each end for the interior variant (0: all transitions only)",
           Integer(min=0), group="strategies"),
    Option("k", 3, "top transitions kept per class and kind (expansion, pruning)", Integer(min=1), group="strategies"),
    Option("label", None, "the per-sample key that groups samples into classes, e.g. prompt (the task class); none: "
           "all samples together", Text(), group="strategies"),
)
SHARED = ["metric", "out_dir", "no_plot", "trust_pickle"]


def build_parser():
    p = ArgumentParser(description=__doc__)
    p.add_argument("file", help="results file (.npz, or a .pkl from the experiment scripts)")
    add_flags(p, SHARED, extra=OPTIONS)
    return p


def _fmt(v: float) -> str:
    return f"{v:+.3f}"


def report_lines(result) -> list[str]:
    """The printed summary: per class, the top-1 expansion and pruning layer of each variant."""
    unit = f" {result.unit}" if result.unit else ""
    lines = []
    for c in result.classes.values():
        lines.append(f"  {c.name} (n={c.n}{f', {c.n_dropped} without valid tokens dropped' if c.n_dropped else ''})")
        for variant in result.variants:
            for kind in ("expansion", "pruning"):
                top = c.top(variant, kind)
                what = f"    {kind:<9}  {'interior' if variant == 'interior' else 'all':<8}"
                if not top:
                    lines.append(f"{what}  none (no transition with a {'positive' if kind == 'expansion' else 'negative'}"
                                 " mean dH)")
                    continue
                s = top[0]
                ci = f"[95% CI {_fmt(s.ci_low)}, {_fmt(s.ci_high)}]" if not math.isnan(s.ci_low) else "[no CI: n < 2]"
                stab = (f"stability: samples {s.sample_stability:.2f}, bootstrap {s.bootstrap_stability:.2f}"
                        if not math.isnan(s.sample_stability) else "stability: n/a")
                lines.append(f"{what}  layer {s.layer:>2} -> depth {s.relative_depth:.2f}   mean dH {_fmt(s.mean_dh)}{unit} "
                             f"{ci}  std {c.std_dh[s.transition]:.3f}   {stab}")
        lines.extend(f"    note: {n}" for n in c.notes)
    return lines


def main(argv=None) -> int:
    args = parse_checked(build_parser(), argv, [option(n) for n in SHARED] + list(OPTIONS))
    from ..errors import UserError
    from ..results import Results
    from ..strategies import plot_strategies, strategies_from_results, write_strategies

    res = Results.load(args.file, trust=args.trust_pickle)
    if len(res) == 0:
        raise UserError(f"{args.file} holds no samples")
    result = strategies_from_results(res, metric=args.metric, label=args.label, k=args.k, n_boot=args.n_boot,
                                     seed=args.seed, exclude_edges=args.exclude_edges)
    src = Path(args.file)
    tag = re.sub(r"[^\w.-]", "_", args.label or "overall")
    if result.metric != "entropy":
        tag += "_" + re.sub(r"[^\w.-]", "_", result.metric)
    stem = str(Path(args.out_dir) / src.stem if args.out_dir else src.with_suffix(""))
    unit = f" ({result.unit})" if result.unit else " (no unit)"
    print(f"{args.file}: {result.classes['overall'].n} samples, {result.n_layers} layers, metric '{result.metric}'"
          f"{unit}, label '{args.label or 'none: all samples'}'")
    print(f"  dH = H_l - H_(l-1); per-sample mean over {result.aggregation}s"
          f"{' (a formats file: window means treated like tokens)' if result.aggregation == 'window' else ''}, "
          f"then the class mean; layer = where the transition ends, depth = (layer + 1) / L; "
          f"CI and stability from {result.n_boot} bootstrap resamples (seed {result.seed}); interior = no transition "
          f"touching the first or last {result.exclude_edges} layer(s)")
    for line in report_lines(result):
        print(line)
    from ..run.config import RunIdentity

    ident = res.metadata.get("identity")
    record = {"results_file": src.name, "results_identity": RunIdentity(ident).digest() if ident else "none",
              "results_n_samples": len(res)}
    csv = write_strategies(result, f"{stem}_strategies_{tag}.csv", record)
    print(f"  wrote {csv} (top {result.k} per class, variant and kind)")
    if not args.no_plot:
        from dataclasses import replace

        from ..plots import save_figure

        fig = plot_strategies(result if result.model else replace(result, model=src.stem))
        for p in save_figure(fig, f"{stem}_strategies_{tag}.png"):
            print(f"  wrote {p}")
    return 0


if __name__ == "__main__":
    from ..cli import run_main

    run_main(main)
