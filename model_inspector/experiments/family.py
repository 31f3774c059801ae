"""Model-family profiles (paper, section 3): N generations sampled from the BOS token alone (temperature 0.7;
the paper: 64 samples x 32 tokens); the mean profile of each sample, labelled with the model's family, saved to
results/{model}_family_{n_samples}.pkl. Several models' files together are the family-clustering data
(``entropy-lens family FILE ...``, the notebook get_model_entropy.ipynb).

Example:
  entropy-lens run family smollm2-135m-instruct --n_samples 24 --max_len 16
"""

from __future__ import annotations

from pathlib import Path

from ..options import Integer, Option
from .base import PROFILING_DEFAULTS, Experiment, Sample, model_label, register_experiment


def model_family(model: str) -> str:
    """The paper's family of ``model`` (``paper_family`` in the model table: gpt2, llama, gemma, qwen...), or
    ``unknown``."""
    from ..loading import read_model_table

    table = read_model_table()
    name = model_label(model).lower()
    hit = table[(table["alias"].str.lower() == name) | (table["hf_id"].str.lower().str.endswith("/" + name))]
    return str(hit.iloc[0]["paper_family"]) if len(hit) else "unknown"


@register_experiment
class Family(Experiment):
    name = "family"
    options = (Option("n_samples", 64, "generations sampled from the BOS token", Integer(min=1), group="family",
                      identity=True),)
    hidden = ("sample", "skip_bad_rows")
    defaults = {**PROFILING_DEFAULTS, "sample": True, "temperature": 0.7, "max_len": 32, "seed": 42,
                "batch_size": 16, "keep_top_tokens": 0}
    columns = {"family": "the model's family (the paper's four: gpt2, llama, gemma, qwen)"}
    evaluation = {"label": "family", "k": 5, "folds": 5}

    def samples(self, rows, args):
        family = model_family(args.model)
        return [Sample("", {"family": family, "sample": i}) for i in range(args.n_samples)], {}

    def describe(self, samples, rows, counts):
        return f"{len(samples)} generations from the BOS token ({samples[0].labels['family']} family)"

    def output(self, args):
        return Path(args.results_dir) / f"{model_label(args.model)}_family_{args.n_samples}.pkl"
