"""TinyStories task identification (paper, section 4): for each story, 6 task prompts (continuation,
counting, semantic) x 4 variants (base, rev, scramble, scramble_rev); sampled generation at
temperature 1.0; entropy profiles saved to results/{model}_tinystories_{n_stories}.pkl.

Example:
  python3 run_experiments_ts.py "gemma-2-2b-it" tinystories --update_steps 1000 --max_len 8 --n_stories 100
  python3 run_experiments_ts.py smollm2-135m-instruct tinystories --n_stories 20 \\
      --data_file ../shared/data/tinystories_validation_head.jsonl
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..cli import (
    add_data_args,
    add_generation_args,
    add_model_args,
    load_inspector,
    positive_int,
    run_settings,
)
from ..tasks import MAX_TS_PROMPT_CHARS, tinystories_samples


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="alias (smollm2-135m-instruct, gemma-2-2b-it...), HF id, local dir or .gguf")
    p.add_argument("dataset", choices=["tinystories"], help="the dataset (tinystories)")
    p.add_argument("--n_stories", type=positive_int, default=100, help="first N validation stories (default: 100)")
    p.add_argument("--data_file", default=None,
                   help="local stories (jsonl/json/parquet/csv with a 'text' column, or txt) instead of the hub")
    p.add_argument("--greedy", action="store_true", help="greedy decoding instead of sampling")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default: 1.0)")
    add_data_args(p)
    add_generation_args(p)
    add_model_args(p)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from ..data import load_tinystories
    from ..distributed import run_distributed
    from ..experiment import RunConfig, model_label

    stats: dict = {}
    stories = load_tinystories(args.n_stories, args.data_file, skip_bad_rows=args.skip_bad_rows, stats=stats)
    samples, skipped = tinystories_samples(stories, seed=args.seed)
    print(f"{len(samples)} prompts from {len(stories)} stories; {skipped} prompts over "
          f"{MAX_TS_PROMPT_CHARS} characters skipped")
    cfg = RunConfig(model=args.model, dataset="tinystories", max_len=args.max_len, metrics=tuple(args.metrics),
                    batch_size=args.batch_size, sample=not args.greedy, temperature=args.temperature,
                    seed=args.seed, chat_template=args.chat_template, prepend_bos=args.prepend_bos, keep_top_tokens=args.keep_top_tokens, extra={"n_stories": args.n_stories}, **run_settings(args))
    out = Path(args.results_dir) / f"{model_label(args.model)}_tinystories_{args.n_stories}.pkl"
    t0 = time.time()
    state = run_distributed(samples, cfg, out, load_inspector=lambda dev: load_inspector(args, dev),
                            update_steps=args.update_steps, resume=args.resume, overwrite=args.overwrite,
                            metadata={"n_skipped": skipped, "data_file": args.data_file, **stats},
                            progress=not args.no_progress)
    if state is None:  # a non-main process of a data-parallel run: rank 0 reports
        return 0
    print(f"wrote {out} ({len(state['entropy'])} samples, {time.time() - t0:.1f} s)")
    return 0

