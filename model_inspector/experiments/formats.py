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

import json
from importlib import resources
from pathlib import Path

from ..errors import UserError
from ..options import Integer, ListOf, Option, Real, Text
from .base import Experiment, Sample, model_label, register_experiment

__all__ = ["load_format_prompts", "format_samples", "FORMAT_NAMES", "alpha_metric", "windowed_fields", "Formats"]

#: prefix -> the format's label
FORMAT_NAMES = {"Simulate a chat log about ": "chat", "Write a poem about ": "poem",
                "Write a scientific piece about ": "scientific"}


def load_format_prompts() -> dict:
    """``{"formats": [3 prefixes], "topics": [182 topics]}`` (the paper's, in order)."""
    with resources.files("model_inspector").joinpath("data/format_prompts.json").open() as fh:
        return json.load(fh)


def format_samples(n_topics: int | None = None) -> list[Sample]:
    """prefix + topic for every format and the first ``n_topics`` topics (all 182 by default),
    topic-major order. Labels: ``format`` (chat, poem, scientific), ``topic``."""
    fp = load_format_prompts()
    topics = fp["topics"] if n_topics is None else fp["topics"][:n_topics]
    return [Sample(prefix + topic, {"format": FORMAT_NAMES.get(prefix, prefix.strip()), "topic": topic})
            for topic in topics for prefix in fp["formats"]]


def alpha_metric(alpha: float):
    """The Rényi metric of order ``alpha`` (Shannon for 1)."""
    from ..metrics import Metric

    return Metric("shannon") if alpha == 1 else Metric("renyi", float(alpha))


def windowed_fields(num_windows: int):
    """A ``fields_fn`` for the runner: every metric reduced to ``[num_windows, layer]`` window means."""

    def fields(profile, i):
        import numpy as np

        from ..profiling import window_mean

        out = {k: window_mean(v[i], num_windows, axis=0).astype(np.float32) for k, v in profile.metrics.items()}
        out["text"] = profile.texts[i]
        return out

    return fields


def default_out(model: str) -> Path:
    name = model_label(model)
    return Path("data") / ("gemma" if name == "gemma-2-2b-it" else name) / "formats.pkl"


@register_experiment
class Formats(Experiment):
    name = "formats"
    command, script = "formats", "generate_format_dataset.py"
    model_default = "gemma-2-2b-it"
    options = (
        Option("alphas", (0.5, 1.0, 5.0), "Rényi orders (1 = Shannon)", ListOf(Real(min=0)), group="formats",
               nargs="+"),
        Option("num_windows", 8, "token windows per profile", Integer(min=1), group="formats", identity=True),
        Option("n_topics", None, "first N of the 182 topics (default: all)", Integer(min=1, none=True),
               group="formats", identity=True),
        Option("out", None, "output file (default: data/<model>/formats.pkl; data/gemma/... for gemma-2-2b-it)",
               Text(), group="formats"),
    )
    hidden = ("sample", "temperature", "seed", "metrics", "results_dir", "keep_top_tokens", "skip_bad_rows")
    defaults = {"max_len": 256, "update_steps": 48, "seed": 0, "dtype": "auto", "device": "auto"}
    columns = {"format": "chat, poem or scientific", "topic": "the topic"}
    evaluation = {"label": "format", "k": 5, "folds": 10}
    layout = "format_records"

    def check(self, args):
        if args.num_windows > args.max_len:
            raise UserError(f"--num_windows {args.num_windows} exceeds --max_len {args.max_len}: "
                            "each window needs at least one token")
        n_all = len(load_format_prompts()["topics"])
        if args.n_topics and args.n_topics > n_all:
            raise UserError(f"--n_topics {args.n_topics} exceeds the {n_all} topics")

    def samples(self, rows, args):
        return format_samples(args.n_topics), {}

    def describe(self, samples, rows, counts):
        return f"{len(samples)} prompts"

    def run_values(self, args) -> dict:
        """The metrics are the Rényi orders of ``--alphas``."""
        return {"metrics": tuple(alpha_metric(a) for a in sorted(set(args.alphas)))}

    def fields(self, args):
        return windowed_fields(args.num_windows)

    def metadata(self, args):
        return {"alphas": sorted(set(args.alphas)), "num_windows": args.num_windows, "layout": self.layout}

    def output(self, args):
        return Path(args.out) if args.out else default_out(args.model)

    def report(self, state, out, seconds):
        alphas = state["metadata"]["alphas"]
        return f"wrote {out} ({len(state['input'])} prompts x {len(alphas)} alphas, {seconds:.1f} s)"
