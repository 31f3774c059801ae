"""``entropy-lens run EXPERIMENT MODEL [flags]``: profile any registered experiment.

The paper's scripts and the subcommands ``profile-ts``, ``profile-mmlu`` and ``formats`` are this command with the
experiment fixed (and the paper's argument order: ``MODEL tinystories``; ``--model`` for the format experiment).
``entropy-lens run EXPERIMENT --help`` lists an experiment's flags.
"""

from __future__ import annotations

import sys
import time
from types import SimpleNamespace

from ..cli import load_inspector
from ..options import ArgumentParser, add_flags, validate

__all__ = ["build_parser", "resolve_args", "run_config", "main", "script_main"]


def build_parser(exp, *, style: str = "run"):
    """The flags of experiment ``exp``: ``style="run"`` (``entropy-lens run NAME MODEL``) or ``"script"`` (the
    paper's ``MODEL NAME``, or ``--model`` where the paper's script had it)."""
    prog = f"entropy-lens run {exp.name}" if style == "run" else None
    p = ArgumentParser(prog=prog, description=exp.description)
    if style == "script" and exp.model_default is not None:
        p.add_argument("--model", default=exp.model_default, help=f"model (default: {exp.model_default}, as the paper)")
    else:
        p.add_argument("model", help="alias (smollm2-135m-instruct, gemma-2-2b-it...), HF id, local dir or .gguf")
        if style == "script":
            p.add_argument("dataset", choices=[exp.dataset], help=f"the dataset ({exp.dataset})")
    add_flags(p, [o.name for o in exp.run_options()], exp.defaults, extra=exp.own_options())
    return p


def resolve_args(exp, args) -> SimpleNamespace:
    """Every option's value, checked once (one line per mistake): the flags given, else the experiment's
    defaults, else the library's."""
    opts = exp.all_options()
    values = {o.name: getattr(args, o.name, exp.defaults.get(o.name, o.default)) for o in opts}
    ns = SimpleNamespace(model=args.model, **validate(values, opts))
    exp.check(ns)
    return ns


def run_config(exp, ns: SimpleNamespace):
    """The :class:`~model_inspector.run.config.RunConfig` of a run: every identity option (the flag's value, else
    the experiment's default), the experiment's computed values and identity extras, and the device and dtype
    resolved now, once."""
    from ..cli import parse_device_map
    from ..loading import resolve_placement
    from ..options import identity_options
    from ..run.config import RunConfig

    parse_device_map(getattr(ns, "device_map", None))  # a bad map is refused now, in one line, before any work

    values = {}
    for o in identity_options():
        if o.name in ("dtype", "device"):
            continue
        values[o.name] = getattr(ns, o.name) if hasattr(ns, o.name) else exp.defaults.get(o.name, o.default)
    values.update(exp.run_values(ns))
    device, dtype = resolve_placement(getattr(ns, "device", "auto"), getattr(ns, "dtype", "auto"),
                                      getattr(ns, "device_map", None))
    return RunConfig(model=ns.model, dataset=exp.dataset, extra=exp.identity_extra(ns), device=device, dtype=dtype,
                     **values)


def main(argv=None, experiment: str | None = None, style: str = "run") -> int:
    from ..experiments import EXPERIMENTS, get_experiment, load_builtin

    argv = list(sys.argv[1:] if argv is None else argv)
    if experiment is None:
        load_builtin()
        if not argv or argv[0].startswith("-"):
            rows = "\n".join(f"  {n:<12} {e.description.strip().splitlines()[0]}" for n, e in EXPERIMENTS.items())
            print(f"usage: entropy-lens run EXPERIMENT MODEL [flags]\n\nexperiments:\n{rows}\n\n"
                  "entropy-lens run EXPERIMENT --help lists its flags.")
            return 0 if argv else 2
        experiment, argv = argv[0], argv[1:]
    exp = get_experiment(experiment)
    args = build_parser(exp, style=style).parse_args(argv)
    ns = resolve_args(exp, args)
    from ..run.distributed import run_distributed

    stats: dict = {}
    rows = exp.rows(ns, stats)
    samples, counts = exp.samples(rows, ns)
    print(exp.describe(samples, rows, counts))
    cfg = run_config(exp, ns)
    out = exp.output(ns)
    if getattr(ns, "random_init", None) is not None:  # the control's outputs never replace the real model's
        out = out.with_name(f"{out.stem}_random{ns.random_init}{out.suffix}")
    t0 = time.time()
    state = run_distributed(samples, cfg, out, load_inspector=lambda dev: load_inspector(ns, dev, cfg=cfg),
                            update_steps=ns.update_steps, resume=ns.resume, overwrite=ns.overwrite,
                            label_fn=exp.grade, batch_label_fn=exp.grade_batch(ns), fields_fn=exp.fields(ns),
                            metadata={**counts, "data_file": getattr(ns, "data_file", None), **stats,
                                      **exp.metadata(ns)},
                            progress=not ns.no_progress, trust_pickle=ns.trust_pickle,
                            threads=getattr(ns, "threads", None), keep_nonfinite=getattr(ns, "keep_nonfinite", False))
    if state is None:  # a non-main process of a data-parallel run: rank 0 reports
        return 0
    print(exp.report(state, out, time.time() - t0))
    return 0


def script_main(experiment: str):
    """``main`` of a paper's script (or alias subcommand): this command with ``experiment`` fixed."""

    def run(argv=None) -> int:
        return main(argv, experiment=experiment, style="script")

    return run


