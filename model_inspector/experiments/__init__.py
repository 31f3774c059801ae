"""Experiments as plugins: one module per experiment, each a registered :class:`~.base.Experiment`.

* :mod:`.tinystories` — task identification on TinyStories (``profile-ts``, ``run_experiments_ts.py``);
* :mod:`.mmlu` — MMLU correctness (``profile-mmlu``, ``run_experiments.py``);
* :mod:`.formats` — output formats (``formats``, ``generate_format_dataset.py``);
* :mod:`.family` — profiles sampled from the BOS token, for model-family clustering.

A new experiment is one module (or a few lines in a notebook) that subclasses ``Experiment`` and calls
:func:`register_experiment`; ``entropy-lens run NAME MODEL`` then runs it, resumes it and its file opens in the
explorer.
"""

from __future__ import annotations

from .base import EXPERIMENTS, Experiment, Sample, get_experiment, register_experiment, unregister_experiment

__all__ = ["EXPERIMENTS", "Experiment", "Sample", "get_experiment", "register_experiment", "unregister_experiment",
           "load_builtin"]

_BUILTIN = ("tinystories", "mmlu", "formats", "family")


def load_builtin() -> None:
    """Import (and so register) the built-in experiments."""
    import importlib

    for name in _BUILTIN:
        importlib.import_module(f".{name}", __name__)
