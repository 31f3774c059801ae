"""Command-line plumbing shared by the scripts: one clear line per user mistake, no traceback."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

from .errors import LensResolutionError, RunInterrupted, UserError

__all__ = ["run_main", "add_model_args", "add_generation_args", "add_data_args", "positive_int", "load_inspector",
           "run_settings"]


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


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer (got {value})")
    return value


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda, cuda:1... (default: auto)")
    p.add_argument("--dtype", default="auto", help="auto (bf16/fp16 on GPU, fp32 on CPU), float32, bfloat16, float16")
    p.add_argument("--device_map", default=None,
                   help="shard the model over devices through accelerate, e.g. 'auto' (default: one device)")
    p.add_argument("--max_memory", nargs="*", default=None, metavar="DEV=SIZE",
                   help="with --device_map: memory per device, e.g. 0=20GiB 1=20GiB cpu=64GiB")
    p.add_argument("--budget_mb", type=positive_int, default=256,
                   help="memory budget of the lens's vocabulary chunks in MiB (default: 256)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="CPU threads (default: the cores this process may use less those busy now, at least 1; "
                        "OMP_NUM_THREADS wins)")
    p.add_argument("--compile", action="store_true",
                   help="fuse the lens's vocabulary reductions with torch.compile (faster on long runs)")


def add_generation_args(p: argparse.ArgumentParser, *, default_batch: int = 8) -> None:
    p.add_argument("--max_len", type=positive_int, default=8, help="generated tokens per prompt (default: 8)")
    p.add_argument("--batch_size", type=positive_int, default=default_batch,
                   help=f"prompts per forward pass (default: {default_batch})")
    add_batch_order_arg(p)
    p.add_argument("--seed", type=int, default=0, help="seed of sampling and scrambling (default: 0)")
    p.add_argument("--metrics", nargs="+", default=["shannon"],
                   help="metrics to keep, e.g. shannon renyi:0.5 renyi:5 moment:2 kl_final (default: shannon)")
    p.add_argument("--update_steps", type=positive_int, default=1000,
                   help="write the results file every this many samples (default: 1000)")
    p.add_argument("--results_dir", default="results", help="output folder (default: results/)")
    p.add_argument("--resume", action="store_true",
                   help="continue a partial results file (a pickle: loading one runs code, so resume only your own files)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing results file")
    p.add_argument("--chat_template", action="store_true",
                   help="wrap each prompt in the tokenizer's chat template (the paper fed raw text: default off)")
    p.add_argument("--prepend_bos", default="auto", choices=["auto", "always", "never"],
                   help="BOS token before each prompt: auto = what TransformerLens (the original's tooling) did for "
                        "the model family (yes for GPT-2, Llama, Gemma, OPT...; no for Qwen, GPT-NeoX/Pythia, Bloom)")
    p.add_argument("--keep_top_tokens", type=int, default=1, metavar="K",
                   help="keep the top K lens tokens and their probabilities per generated token and layer (the "
                        "explorer's grid; a few kB per sample; 0: none; default: 1)")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")


def add_batch_order_arg(p: argparse.ArgumentParser) -> None:
    # the choices are batching.BATCH_ORDERS, written out so that --help does not import numpy (tested equal)
    p.add_argument("--batch_order", default="length", choices=["length", "given"],
                   help="which prompts share a batch: length = prompts of similar token length (less padding; results "
                        "come back in data order and sampled prompts draw from their own seeded streams, so only "
                        "speed changes), given = consecutive prompts (default: length)")


def run_settings(args) -> dict:
    """The settings of :func:`add_model_args` (and ``--batch_order``) that are part of a run's identity:
    the dtype name and device type the model will be loaded with (resolved now, before loading), the
    lens budget, compile path and batch order. Keyword arguments for
    :class:`~model_inspector.experiment.RunConfig`."""
    from . import loading as model_manager

    if args.device_map:
        device, dtype = None, (None if args.dtype == "auto" else str(model_manager.pick_dtype(args.dtype, None)))
    else:
        dev = model_manager.pick_device(args.device)
        device, dtype = dev.type, str(model_manager.pick_dtype(args.dtype, dev))
    return {"dtype": dtype.replace("torch.", "") if dtype else None, "device": device,
            "budget_mb": float(args.budget_mb), "compile": bool(args.compile),
            "batch_order": getattr(args, "batch_order", "length")}


def add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--skip_bad_rows", action="store_true",
                   help="skip and count data rows that break the format rules instead of stopping at the first")


def parse_max_memory(items) -> dict | None:
    if not items:
        return None
    out = {}
    for item in items:
        dev, sep, size = item.partition("=")
        if not sep:
            raise UserError(f"--max_memory entries look like 0=20GiB or cpu=64GiB (got {item!r})")
        out[int(dev) if dev.isdigit() else dev] = size
    return out


def load_inspector(args, device: str | None = None):
    """A ModelInspector for ``args.model`` with the device flags of :func:`add_model_args`
    (``device``: this process's device in a data-parallel run, used when ``--device auto``)."""
    import json

    from .inspector import ModelInspector
    from .threads import set_threads

    set_threads(getattr(args, "threads", None))
    if getattr(args, "no_progress", False):  # transformers' "Loading weights" bar too
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    device_map = args.device_map
    if device_map and device_map.strip().startswith("{"):
        device_map = json.loads(device_map)
    if device is not None and args.device == "auto" and not device_map:
        args = argparse.Namespace(**{**vars(args), "device": device})
    return ModelInspector(args.model, device=args.device, dtype=args.dtype, device_map=device_map,
                          max_memory=parse_max_memory(args.max_memory), budget_bytes=args.budget_mb * 2**20,
                          compile=args.compile)


#: ``entropy-lens`` subcommand -> module of :mod:`model_inspector.commands` (and the paper's script)
COMMANDS = {
    "profile-ts": ("profile_ts", "run_experiments_ts.py", "TinyStories task identification profiles"),
    "profile-mmlu": ("profile_mmlu", "run_experiments.py", "MMLU correctness profiles"),
    "evaluate": ("evaluate", "run_tests.py", "k-NN evaluation of a results file"),
    "formats": ("formats", "generate_format_dataset.py", "output-format profiles"),
    "classify-formats": ("classify_formats", "classify_formats.py", "k-NN classification of output formats"),
    "explore": ("explore", "-m model_inspector.explore", "an interactive HTML explorer of a results file"),
}


def main(argv=None) -> None:
    """The ``entropy-lens`` command: ``entropy-lens SUBCOMMAND [flags]`` (``--help`` per subcommand)."""
    import importlib

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
    module = importlib.import_module(f".commands.{COMMANDS[argv[0]][0]}", __package__)
    sys.argv[0] = f"entropy-lens {argv[0]}"
    run_main(lambda: module.main(argv[1:]))
