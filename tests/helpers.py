"""Helpers shared by the tests that run the command-line scripts."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_script(script, *args, check=True, timeout=600):
    """Run ``python ROOT/script args...`` offline; with ``check``, fail with its stderr on a non-zero exit."""
    proc = subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def run_cli(*args, check=True, timeout=600):
    """Run the ``entropy-lens`` command (``python -m model_inspector ARGS``) offline, like :func:`run_script`."""
    proc = subprocess.run([sys.executable, "-m", "model_inspector", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if check and proc.returncode != 0:
        raise AssertionError(f"entropy-lens {args[0] if args else ''} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def same_results(a: dict, b: dict) -> None:
    """Two results dicts hold the same samples (every column equal; metadata aside)."""
    import numpy as np

    keys = set(a) - {"metadata"}
    assert keys == set(b) - {"metadata"}
    for k in keys:
        assert len(a[k]) == len(b[k]), k
        for x, y in zip(a[k], b[k]):
            if isinstance(x, np.ndarray):
                np.testing.assert_array_equal(x, y, err_msg=k)
            else:
                assert x == y, k


def never_load(*_):
    """A ``load_inspector`` for runs that must finish without the model."""
    raise AssertionError("the model must not load")


def interrupt_at(n: int):
    """A runner ``label_fn`` that raises KeyboardInterrupt (Ctrl-C) while labelling the ``n``-th sample."""
    calls = {"n": 0}

    def label_fn(sample, fields):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        return {}

    return label_fn


#: two stories, 24 TinyStories prompts: the runner tests' data
TWO_STORIES = ["Tom had a red ball. He liked to play with it every day.", "Sue saw a cat. The cat was big and soft."]


def run_samples(n=24, stories=TWO_STORIES):
    """The first ``n`` TinyStories prompts of ``stories`` (seed 0)."""
    from model_inspector.experiments.tinystories import tinystories_samples

    return tinystories_samples(stories, seed=0)[0][:n]


def run_config(model, max_len=3, **kw):
    """A sampled, seeded, float32 CPU RunConfig of ``model`` for the runner tests; ``kw`` overrides."""
    from model_inspector.run.config import RunConfig

    base = dict(model=str(model), dataset="tinystories", max_len=max_len, batch_size=4, sample=True, seed=5,
                metrics=("shannon",), dtype="float32", device="cpu")
    return RunConfig(**{**base, **kw})
