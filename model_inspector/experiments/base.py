"""What an experiment is, and the registry of experiments.

An :class:`Experiment` declares in one place everything that makes it an experiment: its dataset (where the rows
come from and what a row is), its own options (flags), the shared run options it exposes and their defaults, how a
row becomes prompts (:class:`Sample`) with labels, the per-sample columns it adds and how a generation is graded,
its output's name and its evaluation defaults. The generic runner (``entropy-lens run EXPERIMENT MODEL``, see
:mod:`model_inspector.commands.run`) drives any registered experiment; ``register_experiment`` is all a new one
needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import ClassVar

from ..errors import UserError
from ..options import Option
from ..options import Text as TextOption
from ..readers import DataSource, load_rows
from ..run.config import model_label

__all__ = ["Sample", "Experiment", "register_experiment", "unregister_experiment", "get_experiment", "EXPERIMENTS",
           "PROFILING_GROUPS", "PROFILING_DEFAULTS", "model_label"]


@dataclass
class Sample:
    """One prompt to profile, with the labels saved beside its profile, and ``info`` the experiment grades with
    (the question's choices...: not saved, not part of the data fingerprint)."""

    text: str
    labels: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)


#: The groups of shared options (see :mod:`model_inspector.options`) a profiling experiment exposes as flags,
#: except those it hides: an option registered later in these groups appears in every experiment.
PROFILING_GROUPS = ("decode", "run", "model", "output", "data")
#: The command-line defaults of the shared options where they differ from the library's.
PROFILING_DEFAULTS = {"max_len": 8, "seed": 0, "keep_top_tokens": 1, "dtype": "auto", "device": "auto"}


class Experiment:
    """An experiment, declared by class attributes and a few methods (override what differs):

    * ``name`` (registry key and ``entropy-lens run NAME``), ``dataset`` (recorded in the run identity; default:
      the name), ``description`` (``--help``; default: the module's docstring), ``command`` / ``script`` (an alias
      subcommand and the paper's script, if any);
    * ``source``: where the rows come from and what a row is (:class:`~model_inspector.readers.DataSource`: a
      ``Record`` of field rules, the hub dataset, the ``--data_file`` help; ``None``: no data, the experiment makes
      its prompts itself);
    * ``options``: the experiment's own :class:`~model_inspector.options.Option` s (those with ``identity=True``
      go into the run identity's ``extra``); ``hidden``: the shared options it does not expose as flags (it runs
      with their ``defaults``), ``defaults``: the shared options' defaults here; :meth:`run_values`: run options it
      computes from its own (the format experiment's metrics from its ``--alphas``);
    * ``columns``: the label columns its samples carry (name -> description; every results layout keeps them);
    * ``evaluation``: defaults of its evaluation (``label``, ``k``, ``folds``, ``group``);
    * :meth:`samples` (rows -> prompts with labels), :meth:`grade` (labels computed from a generation),
      :meth:`fields` (how a profile row becomes per-sample fields; ``None``: the default), :meth:`output`
      (the results file's path), :meth:`rows` (the data; default: ``--data_file`` or the hub source).
    """

    name: ClassVar[str] = ""
    dataset: str = ""
    description: str = ""
    command: ClassVar[str | None] = None
    script: ClassVar[str | None] = None
    source: ClassVar[DataSource | None] = None
    options: ClassVar[tuple] = ()
    hidden: ClassVar[tuple] = ("sample", "temperature")
    defaults: ClassVar[dict] = PROFILING_DEFAULTS
    columns: ClassVar[dict] = {}
    evaluation: ClassVar[dict] = {"label": None, "k": 29, "folds": 10}
    #: the results layout (``samples``: the paper's dict; ``format_records``: the format experiment's DataFrame)
    layout: ClassVar[str] = "samples"
    #: the model's default in the paper's script (``--model``, the format experiment); ``None``: a positional MODEL
    model_default: ClassVar[str | None] = None

    # ------------------------------------------------------------------ data and prompts
    def rows(self, args: SimpleNamespace, stats: dict) -> list[dict]:
        """The parsed data rows (``args.data_file`` or the hub); ``stats["n_bad_rows"]`` counts skipped rows."""
        if self.source is None:
            return []
        return load_rows(self.source.record, data_file=args.data_file, hub=self.source.hub, limit=self.limit(args),
                         skip_bad_rows=getattr(args, "skip_bad_rows", False), stats=stats)

    def limit(self, args: SimpleNamespace) -> int | None:
        """How many rows the run needs from the start of the source, if it needs only a head (``None``: all)."""
        return None

    def samples(self, rows: list[dict], args: SimpleNamespace) -> tuple[list[Sample], dict]:
        """The prompts with their labels, and counts for the metadata (``{"n_skipped": ...}``)."""
        raise NotImplementedError

    def describe(self, samples: list[Sample], rows: list[dict], counts: dict) -> str:
        """One line printed before profiling."""
        return f"{len(samples)} prompts from {len(rows)} rows"

    # ------------------------------------------------------------------ profiling
    def grade(self, sample: Sample, fields: dict) -> dict:
        """Labels computed from a generation (``fields``: ``text``, ``tokens``, metrics...); default: none."""
        return {}

    def grade_batch(self, args: SimpleNamespace):
        """``None``, or ``fn(inspector, samples, profile) -> [labels per sample]``: grading that needs the model
        (MMLU's log-likelihood of the answer letters)."""
        return None

    def fields(self, args: SimpleNamespace):
        """``fields_fn(profile, i) -> dict`` for the runner, or ``None`` for the default per-sample fields."""
        return None

    def metadata(self, args: SimpleNamespace) -> dict:
        """Extra metadata of the results file."""
        return {}

    def run_values(self, args: SimpleNamespace) -> dict:
        """Values of shared run options computed from the experiment's own (default: none)."""
        return {}

    def identity_extra(self, args: SimpleNamespace) -> dict:
        """The experiment's part of the run identity: its options marked ``identity``."""
        return {o.name: getattr(args, o.name) for o in self.options if o.identity}

    def output(self, args: SimpleNamespace) -> Path:
        """The results file: ``RESULTS_DIR/MODEL_NAME.pkl`` by default."""
        return Path(args.results_dir) / f"{model_label(args.model)}_{self.name}.pkl"

    def report(self, state: dict, out: Path, seconds: float) -> str:
        """The line printed when the run is done."""
        n = len(next(v for k, v in state.items() if k != "metadata"))
        return f"wrote {out} ({n} samples, {seconds:.1f} s)"

    # ------------------------------------------------------------------ checks
    def check(self, args: SimpleNamespace) -> None:
        """Checks that involve several options (raise :class:`UserError`)."""

    def run_options(self) -> list[Option]:
        """The shared options exposed as flags: every registered option of :data:`PROFILING_GROUPS` that has a
        flag and is not ``hidden``."""
        from ..options import REGISTRY

        return [o for o in REGISTRY.values() if o.group in PROFILING_GROUPS and o.flag_name and o.name not in self.hidden]

    def own_options(self) -> list[Option]:
        """The experiment's own options, and ``--data_file`` when it reads data."""
        data = [Option("data_file", None, self.source.help, TextOption(), group=self.name)] if self.source else []
        return list(self.options) + data

    def all_options(self) -> list[Option]:
        return self.run_options() + self.own_options()


#: name -> the registered :class:`Experiment`
EXPERIMENTS: dict[str, Experiment] = {}


def register_experiment(experiment):
    """Register an experiment (an instance, or a class: it is instantiated); returns it. Usable as a decorator."""
    exp = experiment() if isinstance(experiment, type) else experiment
    if not exp.name:
        raise UserError(f"{type(exp).__name__} has no name")
    if not exp.dataset:
        exp.dataset = exp.name
    if not exp.description:
        import sys

        exp.description = sys.modules[type(exp).__module__].__doc__ or exp.name
    EXPERIMENTS[exp.name] = exp
    return experiment


def unregister_experiment(name: str) -> None:
    EXPERIMENTS.pop(name, None)


def get_experiment(name: str) -> Experiment:
    from . import load_builtin

    load_builtin()
    try:
        return EXPERIMENTS[name]
    except KeyError:
        raise UserError(f"unknown experiment {name!r}; choose one of {', '.join(EXPERIMENTS)}") from None
