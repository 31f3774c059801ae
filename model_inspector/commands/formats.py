"""Output-format dataset (paper, section 6): "Simulate a chat log about ", "Write a poem about ",
"Write a scientific piece about " + each of 182 topics; greedy generation of --max_len tokens;
Rényi entropy profiles for every --alphas, each averaged over --num_windows contiguous token
windows. One generation serves all alphas (computed on the fly, no activations stored).

Output: a pickled DataFrame of records (format, topic, alpha, entropy [windows, L], text), by default
data/<model>/formats.pkl (data/gemma/formats.pkl for the paper's gemma-2-2b-it).

The paper fed the raw prompt to gemma-2-2b-it (no chat template): that is the default here;
--chat_template wraps prompts in the tokenizer's chat template.

Example:
  python3 generate_format_dataset.py
  python3 generate_format_dataset.py --model smollm2-135m-instruct --n_topics 30 --max_len 64
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..cli import add_batch_order_arg, add_model_args, load_inspector, positive_int, run_settings
from ..errors import UserError
from ..tasks import format_samples, load_format_prompts


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="gemma-2-2b-it", help="model (default: gemma-2-2b-it, as the paper)")
    p.add_argument("--alphas", type=float, nargs="+", default=[0.5, 1.0, 5.0],
                   help="Rényi orders (1 = Shannon; default: 0.5 1 5)")
    p.add_argument("--num_windows", type=positive_int, default=8, help="token windows per profile (default: 8)")
    p.add_argument("--max_len", type=positive_int, default=256, help="generated tokens per prompt (default: 256)")
    p.add_argument("--n_topics", type=positive_int, default=None, help="first N of the 182 topics (default: all)")
    p.add_argument("--batch_size", type=positive_int, default=8, help="prompts per forward pass (default: 8)")
    add_batch_order_arg(p)
    p.add_argument("--out", default=None, help="output file (default: data/<model>/formats.pkl; data/gemma/... for gemma-2-2b-it)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--resume", action="store_true",
                   help="continue a partial output file (a pickle: loading one runs code, so resume only your own files)")
    p.add_argument("--update_steps", type=positive_int, default=48, help="write the file every N prompts (default: 48)")
    p.add_argument("--chat_template", action="store_true", help="apply the tokenizer's chat template (paper: off)")
    p.add_argument("--prepend_bos", default="auto", choices=["auto", "always", "never"],
                   help="BOS token before each prompt: auto = what TransformerLens (the original's tooling) did for "
                        "the model family (yes for GPT-2, Llama, Gemma, OPT...; no for Qwen, GPT-NeoX/Pythia, Bloom)")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    add_model_args(p)
    return p


def default_out(model: str) -> Path:
    from ..experiment import model_label

    name = model_label(model)
    return Path("data") / ("gemma" if name == "gemma-2-2b-it" else name) / "formats.pkl"


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from ..distributed import run_distributed
    from ..experiment import RunConfig
    from ..formats import alpha_metric, windowed_fields

    if any(a < 0 for a in args.alphas):
        raise UserError(f"--alphas must be >= 0 (got {' '.join(map(str, args.alphas))})")
    if args.num_windows > args.max_len:
        raise UserError(f"--num_windows {args.num_windows} exceeds --max_len {args.max_len}: "
                         "each window needs at least one token")
    n_all = len(load_format_prompts()["topics"])
    if args.n_topics and args.n_topics > n_all:
        raise UserError(f"--n_topics {args.n_topics} exceeds the {n_all} topics")
    samples = format_samples(args.n_topics)
    alphas = sorted(set(args.alphas))
    cfg = RunConfig(model=args.model, dataset="formats", max_len=args.max_len,
                    metrics=tuple(alpha_metric(a) for a in alphas), batch_size=args.batch_size, sample=False,
                    chat_template=args.chat_template, prepend_bos=args.prepend_bos, extra={"num_windows": args.num_windows,
                                                             "n_topics": args.n_topics},
                    **run_settings(args))
    out = Path(args.out) if args.out else default_out(args.model)
    t0 = time.time()
    state = run_distributed(samples, cfg, out, load_inspector=lambda dev: load_inspector(args, dev),
                            update_steps=args.update_steps, resume=args.resume, overwrite=args.overwrite,
                            fields_fn=windowed_fields(args.num_windows),
                            metadata={"alphas": alphas, "num_windows": args.num_windows, "layout": "format_records"},
                            progress=not args.no_progress)
    if state is None:  # a non-main process of a data-parallel run: rank 0 reports
        return 0
    print(f"wrote {out} ({len(state['input'])} prompts x {len(alphas)} alphas, {time.time() - t0:.1f} s)")
    return 0

