"""TinyStories task identification (paper, section 4): for each story, 6 task prompts (continuation,
counting, semantic) x 4 variants (base, rev, scramble, scramble_rev); sampled generation at
temperature 1.0; entropy profiles saved to results/{model}_tinystories_{n_stories}.pkl.

Example:
  python3 run_experiments_ts.py "gemma-2-2b-it" tinystories --update_steps 1000 --max_len 8 --n_stories 100
  python3 run_experiments_ts.py smollm2-135m-instruct tinystories --n_stories 20 \\
      --data_file ../shared/data/tinystories_validation_head.jsonl
"""

from __future__ import annotations

import random
from pathlib import Path

from ..options import Integer, Option
from ..readers import DataError, DataSource, HubSource, Record, load_rows
from ..readers import Text as TextField
from .base import PROFILING_DEFAULTS, Experiment, Sample, model_label, register_experiment

__all__ = ["TS_TASKS", "TS_VARIANTS", "MAX_TS_PROMPT_CHARS", "scramble_words", "tinystories_samples",
           "load_tinystories", "TinyStories"]

MAX_TS_PROMPT_CHARS = 1500
#: label -> task prompt, in the paper's order; the class is the label's first word.
TS_TASKS = {
    "continuation_prompt_1": "How can the story be continued?",
    "continuation_prompt_2": "Which could be a continuation of the story?",
    "counting_prompt_1": "How many words are in the story?",
    "counting_prompt_2": "Count the number of words in the story.",
    "semantic_prompt_1": "What is the main idea of the story?",
    "semantic_prompt_2": "Who is the subject of the story?",
}
#: variant suffix -> (story first?, scrambled?)
TS_VARIANTS = {"base": (True, False), "rev": (False, False), "scramble": (True, True), "scramble_rev": (False, True)}

STORY = Record({"text": TextField()})
HUB = HubSource("roneneldan/TinyStories", None, "validation", head=True)


def scramble_words(story: str, seed: int, index: int) -> str:
    """The story's space-separated words in a shuffled order (seeded by ``seed`` and the story's
    index). Returns a new string: the story itself is not modified (the original code overwrote it,
    so that later prompts of the same story saw an already scrambled story)."""
    words = story.split(" ")
    rng = random.Random(f"{seed}:{index}")
    shuffled = list(words)
    rng.shuffle(shuffled)
    return " ".join(shuffled)


def tinystories_samples(stories, seed: int = 0, max_chars: int = MAX_TS_PROMPT_CHARS) -> tuple[list[Sample], int]:
    """All prompts for ``stories``: per story, per task (6), the variants base, rev, scramble,
    scramble_rev. Prompts over ``max_chars`` characters are skipped. Returns ``(samples, n_skipped)``."""
    out, skipped = [], 0
    for i, story in enumerate(stories):
        scrambled = scramble_words(story, seed, i)
        for label, task in TS_TASKS.items():
            for variant, (story_first, scr) in TS_VARIANTS.items():
                s = scrambled if scr else story
                text = f"{s}\n\n{task}\n\n" if story_first else f"{task}\n\n{s}\n\n"
                if len(text) > max_chars:
                    skipped += 1
                    continue
                out.append(Sample(text, {"task": label.split("_")[0], "prompt": f"{label}_{variant}",
                                         "variant": variant, "story_index": i}))
    return out, skipped


def load_tinystories(n_stories: int, data_file: str | None = None, *, skip_bad_rows: bool = False,
                     stats: dict | None = None) -> list[str]:
    """The first ``n_stories`` stories of the TinyStories validation split (hub or ``data_file``).
    ``stats["n_bad_rows"]`` receives the number of rows skipped."""
    if not isinstance(n_stories, int) or n_stories < 1:
        raise DataError(f"--n_stories must be a positive integer (got {n_stories!r})")
    rows = load_rows(STORY, data_file=data_file, hub=HUB, limit=n_stories, skip_bad_rows=skip_bad_rows, stats=stats)
    if len(rows) < n_stories:
        raise DataError(f"only {len(rows)} stories available, {n_stories} requested (lower --n_stories)")
    return [r["text"] for r in rows[:n_stories]]


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


@register_experiment
class TinyStories(Experiment):
    name = "tinystories"
    command, script = "profile-ts", "run_experiments_ts.py"
    source = DataSource(STORY, HUB, "local stories (jsonl/json/parquet/csv with a 'text' column, or txt) instead of "
                        "the hub")
    options = (Option("n_stories", 100, "first N validation stories", Integer(min=1), group="tinystories",
                      identity=True),)
    hidden = ()
    defaults = {**PROFILING_DEFAULTS, "sample": True}
    columns = {"task": "the task class (continuation, counting, semantic)",
               "prompt": "the task prompt's label and variant (continuation_prompt_1_base...)",
               "variant": "base, rev, scramble or scramble_rev", "story_index": "the story's index"}
    evaluation = {"label": "prompt", "k": 29, "folds": 10, "group": "story_index"}

    def limit(self, args):
        return args.n_stories

    def rows(self, args, stats):
        rows = super().rows(args, stats)
        if len(rows) < args.n_stories:
            raise DataError(f"only {len(rows)} stories available, {args.n_stories} requested (lower --n_stories)")
        return rows[: args.n_stories]

    def samples(self, rows, args):
        samples, skipped = tinystories_samples([r["text"] for r in rows], seed=args.seed)
        return samples, {"n_skipped": skipped}

    def describe(self, samples, rows, counts):
        return (f"{_count(len(samples), 'prompt', 'prompts')} from {_count(len(rows), 'story', 'stories')}; "
                f"{counts['n_skipped']} prompts over {MAX_TS_PROMPT_CHARS} characters skipped")

    def output(self, args):
        return Path(args.results_dir) / f"{model_label(args.model)}_tinystories_{args.n_stories}.pkl"

