"""MMLU correctness (paper, section 5): greedy answers to MMLU test questions with one of four
prompt types (base, instruct, thinking, humble); entropy profiles and the label `correct`
(letter extracted from the generated text only) saved to results/{model}_mmlu_{prompt_type}.pkl.

Example:
  python3 run_experiments.py "gemma-2-2b-it" mmlu --update_steps 1000 --max_len 8 --prompt_type base
  python3 run_experiments.py smollm2-135m-instruct mmlu --n_questions 300 \\
      --data_file ../shared/data/mmlu_test.jsonl
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
from ..tasks import MAX_MMLU_QUESTION_CHARS, MMLU_PROMPT_TYPES, extract_letter, mmlu_samples


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="alias (smollm2-135m-instruct, gemma-2-2b-it...), HF id, local dir or .gguf")
    p.add_argument("dataset", choices=["mmlu"], help="the dataset (mmlu)")
    p.add_argument("--prompt_type", default="base", choices=MMLU_PROMPT_TYPES, help="prompt wording (default: base)")
    p.add_argument("--n_questions", type=positive_int, default=None,
                   help="reproducible random subsample of N questions (by --seed), in dataset order")
    p.add_argument("--subjects", nargs="+", default=None, help="only these subjects, e.g. abstract_algebra anatomy")
    p.add_argument("--data_file", default=None,
                   help="local MMLU (jsonl/json/parquet/csv: question, subject, choices, answer) instead of the hub")
    add_data_args(p)
    add_generation_args(p)
    add_model_args(p)
    return p


def sample_suffix(args) -> str:
    """What narrows the question set, in the file name: ``_n20``, ``_anatomy+virology`` (``_subjects-HASH``
    when long); empty for the full test split, so the paper's name is unchanged."""
    import hashlib

    out = ""
    if args.subjects:
        joined = "+".join(sorted(args.subjects))
        out += f"_{joined}" if len(joined) <= 60 else f"_subjects-{hashlib.sha1(joined.encode()).hexdigest()[:8]}"
    if args.n_questions:
        out += f"_n{args.n_questions}"
    return out


def grade(sample, fields) -> dict:
    predicted = extract_letter(fields["text"])
    return {"predicted": predicted or "", "correct": int(predicted == sample.labels["answer"])}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    import numpy as np

    from ..data import load_mmlu
    from ..distributed import run_distributed
    from ..experiment import RunConfig, model_label

    stats: dict = {}
    rows = load_mmlu(args.data_file, subjects=args.subjects, n_questions=args.n_questions, seed=args.seed,
                     skip_bad_rows=args.skip_bad_rows, stats=stats)
    samples, skipped = mmlu_samples(rows, args.prompt_type)
    print(f"{len(samples)} questions; {skipped} over {MAX_MMLU_QUESTION_CHARS} characters skipped")
    cfg = RunConfig(model=args.model, dataset="mmlu", max_len=args.max_len, metrics=tuple(args.metrics),
                    batch_size=args.batch_size, sample=False, seed=args.seed, chat_template=args.chat_template,
                    prepend_bos=args.prepend_bos, keep_top_tokens=args.keep_top_tokens,
                    extra={"prompt_type": args.prompt_type, "n_questions": args.n_questions,
                           "subjects": args.subjects}, **run_settings(args))
    out = Path(args.results_dir) / f"{model_label(args.model)}_mmlu_{args.prompt_type}{sample_suffix(args)}.pkl"
    t0 = time.time()
    state = run_distributed(samples, cfg, out, load_inspector=lambda dev: load_inspector(args, dev),
                            update_steps=args.update_steps, resume=args.resume, overwrite=args.overwrite,
                            label_fn=grade, metadata={"n_skipped": skipped, "data_file": args.data_file, **stats},
                            progress=not args.no_progress)
    if state is None:  # a non-main process of a data-parallel run: rank 0 reports
        return 0
    acc = float(np.mean(state["correct"]))
    print(f"wrote {out} ({len(state['entropy'])} samples, accuracy {acc:.3f}, {time.time() - t0:.1f} s)")
    return 0

