"""The ``entropy-lens`` command: one subcommand per module of :mod:`model_inspector.commands`, and the plumbing
every command shares (one clear line per user mistake, no traceback; loading a model from the model flags)."""

from __future__ import annotations

import os
import sys
from typing import Callable

from .errors import LensResolutionError, RunInterrupted, UserError

__all__ = ["run_main", "load_inspector", "parse_max_memory", "COMMANDS", "main"]


def _user_errors() -> tuple:
    """What ``run_main`` reports as one line: :class:`~model_inspector.errors.UserError` (bad flags,
    files, data, settings), the lens failing to resolve a model, an interrupted run, and operating-
    system errors (paths, permissions, a full disk). Any other exception is a bug: it keeps its traceback."""
    return (UserError, LensResolutionError, RunInterrupted, OSError)


def _message(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename and exc.strerror and type(exc) in (
            OSError, PermissionError, FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return f"cannot use {exc.filename}: {exc.strerror} (check the path, its permissions and free space)"
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def run_main(main: Callable[[], int | None]) -> None:
    """Run ``main``; a user mistake prints ``error: <reason>`` on stderr and exits 2 (130 when
    interrupted). ``ENTROPY_LENS_DEBUG=1`` shows the traceback instead."""
    try:
        code = main()
    except SystemExit:  # argparse's --help and usage errors: nothing to translate (and nothing heavy to import)
        raise
    except _user_errors() as exc:
        if os.environ.get("ENTROPY_LENS_DEBUG"):
            raise
        print(f"error: {_message(exc)}", file=sys.stderr)
        sys.exit(130 if isinstance(exc, RunInterrupted) else 2)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)


def parse_max_memory(items) -> dict | None:
    """``["0=20GiB", "cpu=64GiB"]`` (``--max_memory``) as accelerate's ``{0: "20GiB", "cpu": "64GiB"}``."""
    if not items:
        return None
    out = {}
    for item in items:
        dev, sep, size = item.partition("=")
        if not sep:
            raise UserError(f"--max_memory entries look like 0=20GiB or cpu=64GiB (got {item!r})")
        out[int(dev) if dev.isdigit() else dev] = size
    return out


#: the ``device_map`` keywords of accelerate / transformers
DEVICE_MAP_KEYWORDS = ("auto", "balanced", "balanced_low_0", "sequential")


def parse_device_map(text: str | None):
    """``--device_map``: ``auto`` (or another accelerate keyword), a device this machine has, or a JSON
    ``{module: device}`` map; anything else is a :class:`UserError` in one line."""
    if not text:
        return text
    example = "give auto, balanced, sequential, a device (cpu, cuda:0) or a map such as '{\"model.layers.0\": 0, " \
              "\"lm_head\": 1}'"
    if not text.strip().startswith(("{", "[")):
        if text.strip() in DEVICE_MAP_KEYWORDS:
            return text.strip()
        from .loading import pick_device

        try:
            pick_device(text.strip())
        except UserError:
            raise UserError(f"--device_map {text!r} is neither a keyword nor a device of this machine; {example}") \
                from None
        return text.strip()
    import json

    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"--device_map is not valid JSON ({exc.msg} at character {exc.pos}); {example}") from None
    if not isinstance(value, dict) or not value:
        raise UserError(f"--device_map must be a JSON object mapping modules to devices (got a "
                        f"{type(value).__name__}); {example}")
    return value


def load_inspector(args, device: str | None = None, *, cfg=None):
    """A ModelInspector for ``args.model`` with the model flags of ``args`` (``device``, ``dtype``, ``device_map``,
    ``max_memory``, ``budget_mb``, ``compile``, ``lens_spec``, ``lens_precision``, ``threads``, ``no_progress``). ``device``: this process's device in
    a data-parallel run (used when ``--device auto``); ``cfg``: the run's
    :class:`~model_inspector.run.config.RunConfig`, whose dtype and device were resolved once, at the edge."""
    from .architecture import load_lens_spec
    from .inspector import ModelInspector
    from .threads import set_threads

    set_threads(getattr(args, "threads", None))
    if getattr(args, "no_progress", False):  # transformers' "Loading weights" bar too
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    device_map = parse_device_map(getattr(args, "device_map", None))
    want = getattr(args, "device", "auto") or "auto"
    if device is not None and want == "auto" and not device_map:
        want = device
    elif want == "auto" and cfg is not None and cfg.device:
        want = cfg.device
    dtype = cfg.dtype if cfg is not None and cfg.dtype else getattr(args, "dtype", "auto") or "auto"
    return ModelInspector(args.model, device=want, dtype=dtype, device_map=device_map,
                          max_memory=parse_max_memory(getattr(args, "max_memory", None)),
                          budget_bytes=int(float(getattr(args, "budget_mb", 256)) * 2**20),
                          compile=bool(getattr(args, "compile", False)), random_init=getattr(args, "random_init", None),
                          lens_precision=getattr(args, "lens_precision", None) or "fp32",
                          lens_spec=load_lens_spec(args.lens_spec) if getattr(args, "lens_spec", None) else None)


#: ``entropy-lens`` subcommand -> (module of :mod:`model_inspector.commands`, or ``run:EXPERIMENT``; the paper's
#: script; what it does)
COMMANDS = {
    "run": ("run", "-m model_inspector run", "profile any registered experiment: run EXPERIMENT MODEL [flags]"),
    "profile-ts": ("run:tinystories", "run_experiments_ts.py", "TinyStories task identification profiles"),
    "profile-mmlu": ("run:mmlu", "run_experiments.py", "MMLU correctness profiles"),
    "evaluate": ("evaluate", "run_tests.py", "k-NN evaluation of a results file"),
    "formats": ("run:formats", "generate_format_dataset.py", "output-format profiles"),
    "classify-formats": ("classify_formats", "classify_formats.py", "k-NN classification of output formats"),
    "explore": ("explore", "-m model_inspector.explore", "an interactive HTML explorer of a results file"),
    "strategies": ("strategies", "-m model_inspector.commands.strategies", "expansion and pruning layers (dH) of a "
                   "results file"),
    "family": ("family", "-m model_inspector.commands.family", "agreement of model families' profiles on relative "
               "depth (claim ii)"),
    "reproduce": ("reproduce", "-m model_inspector.commands.reproduce", "every claim with its controls, one report"),
    "skip-layers": ("skip_layers", "-m model_inspector.commands.skip_layers", "accuracy with the expansion, pruning, "
                    "random or every single block skipped"),
}


def command_main(name: str):
    """The ``main(argv)`` of subcommand ``name``."""
    import importlib

    module = COMMANDS[name][0]
    if module.startswith("run:"):
        from .commands.run import script_main

        return script_main(module.partition(":")[2])
    return importlib.import_module(f".commands.{module}", __package__).main


def main(argv=None) -> None:
    """The ``entropy-lens`` command: ``entropy-lens SUBCOMMAND [flags]`` (``--help`` per subcommand)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        from . import __version__

        width = max(map(len, COMMANDS))
        rows = "\n".join(f"  {name:<{width}}  {desc} (= python3 {script})" for name, (_, script, desc) in COMMANDS.items())
        print(f"usage: entropy-lens SUBCOMMAND [flags]     (entropy-lens {__version__})\n\nsubcommands:\n{rows}\n\n"
              "entropy-lens SUBCOMMAND --help lists its flags.")
        sys.exit(0 if argv else 2)
    if argv[0] in ("-V", "--version"):
        from . import __version__

        print(f"entropy-lens {__version__}")
        sys.exit(0)
    if argv[0] not in COMMANDS:
        print(f"error: unknown subcommand {argv[0]!r}; choose one of {', '.join(COMMANDS)} (entropy-lens --help)",
              file=sys.stderr)
        sys.exit(2)
    fn = command_main(argv[0])
    sys.argv[0] = f"entropy-lens {argv[0]}"
    run_main(lambda: fn(argv[1:]))
