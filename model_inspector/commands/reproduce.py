"""Reproduce the paper's claims with their controls: for each model, at a named scale, the TinyStories task
experiment with its random-weights control run and every evaluation control, the expansion and pruning layers,
MMLU with both gradings, the output formats, the family profiles and the layer-skipping study; then report.md and
report.html (one row per claim and model: the paper's figure, ours with n and its spread, the controls, and a
verdict: reproduced / not reproduced at this scale / explained by a control). Resumable: run it again to finish
or to re-report. Scales: demo (minutes), small (the embedded models in about an hour on 2 cores), paper (the
paper's sizes; the report estimates its time from the measured rates).

Example:
  entropy-lens reproduce smollm2-135m-instruct gemma-3-270m --scale small --data_dir ../shared/data
"""

from __future__ import annotations

from ..options import ArgumentParser, Integer, ListOf, OneOf, Option, Text, add_flags, parse_checked

OPTIONS = (
    Option("scale", "small", "demo, small or paper (see entropy-lens reproduce --help)", OneOf(("demo", "small", "paper")),
           group="reproduce"),
    Option("data_dir", None, "folder with tinystories_validation_head.jsonl and mmlu_test.jsonl (default: the hub)",
           Text(), group="reproduce"),
    Option("out", "reproduce", "output folder (results/, evaluations/, report.md, report.html)", Text(none=False),
           group="reproduce"),
    Option("steps", None, "only these steps (default: all)", ListOf(OneOf(("tasks", "strategies", "mmlu", "formats",
                                                                              "family", "skip")), none=True),
           group="reproduce", nargs="+"),
    Option("threads", None, "CPU threads", Integer(min=1, none=True), group="reproduce"),
)


def build_parser():
    p = ArgumentParser(prog="entropy-lens reproduce", description=__doc__)
    p.add_argument("models", nargs="+", help="models (aliases, hub ids, local folders, .gguf files)")
    add_flags(p, [], extra=OPTIONS)
    return p


def main(argv=None) -> int:
    args = parse_checked(build_parser(), argv, list(OPTIONS))
    import time

    from ..reproduce import reproduce

    t0 = time.time()
    manifest = reproduce(args.models, scale=args.scale, data_dir=args.data_dir, out_dir=args.out, steps=args.steps,
                         threads=args.threads, progress=True)
    print(f"wrote {args.out}/report.md and {args.out}/report.html ({len(manifest['models'])} models, scale "
          f"{args.scale}, {time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    from ..cli import run_main

    run_main(main)
