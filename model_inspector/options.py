"""Every option, declared once (after scikit-learn's ``_parameter_constraints``).

An :class:`Option` states a setting's name, default, allowed values (a :class:`Constraint`), help text and whether
it belongs to the run identity (it changes a results file's numbers). Everything else is derived from the
declarations:

* the command-line flags (:func:`add_flags`), with the defaults of the command that uses them;
* validation (:func:`validate`), the one place a bad value is refused, as one line naming the flag;
* :class:`Settings` objects: :class:`~model_inspector.decoding.DecodeConfig` holds the ``decode`` group,
  :class:`~model_inspector.run.config.RunConfig` every identity option, and the run identity is built from the
  options marked ``identity``.

Adding a setting that changes the numbers is one :func:`register_option` call (or one entry below): its flag, its
check, its place in the configs and in every results file's identity follow. Experiments declare their own options
the same way (:mod:`model_inspector.experiments`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from .constraints import Constraint, Flag, Integer, ListOf, Metrics, OneOf, Real, Text
from .errors import UserError

__all__ = ["Option", "Constraint", "Integer", "Real", "OneOf", "Flag", "Text", "ListOf", "Metrics", "REGISTRY",
           "register_option", "unregister_option", "option", "identity_options", "group", "validate", "check_value",
           "add_flags", "values_from_args", "parse_checked", "Settings", "MISSING", "ArgumentParser"]

MISSING = object()


# ------------------------------------------------------------------------------------------------- options
@dataclass(frozen=True)
class Option:
    """One setting, declared once.

    * ``name``: the Python name and, unless ``flag`` says otherwise, the flag ``--name``;
    * ``default``: the library's default (a command or an experiment may use another one, see :func:`add_flags`);
    * ``constraint``: the values it admits (:class:`Integer`, :class:`Real`, :class:`OneOf`, :class:`Flag`...);
    * ``group``: ``decode`` (a field of ``DecodeConfig``), ``run``, ``model``, ``data``, ``output``, ``analysis`` or
      an experiment's name; ``identity``: part of ``RunConfig`` and of every results file's identity;
    * ``flag``: the flag's name (``None``: no flag), ``aliases`` (``-d``), ``switch``: a ``store_true`` flag,
      ``inverse``: a ``store_false`` flag (``--greedy`` sets ``sample`` to False);
    * ``to_identity(value, values)``: the value recorded in the identity (``temperature`` is ``None`` when greedy);
      ``legacy``: the value implied by files written before the option existed (``MISSING``: none, such a file
      differs).
    """

    name: str
    default: object
    help: str
    constraint: Constraint = field(default_factory=Constraint)
    group: str = "run"
    identity: bool = False
    flag: str | None = ""
    aliases: tuple = ()
    switch: bool = False
    inverse: bool = False
    nargs: str | None = None
    metavar: str | None = None
    to_identity: Callable | None = None
    legacy: object = MISSING

    @property
    def flag_name(self) -> str | None:
        if self.flag is None:
            return None
        return self.flag or f"--{self.name}"

    def identity_value(self, values: dict):
        v = values[self.name]
        if self.to_identity is not None:
            return self.to_identity(v, values)
        if isinstance(v, tuple):
            return [getattr(x, "key", x) for x in v]
        return v


#: name -> :class:`Option`, in declaration order
REGISTRY: dict[str, Option] = {}


def register_option(opt: Option) -> Option:
    """Add (or replace) an option; with ``identity=True`` it becomes part of ``RunConfig`` and of the identity of
    every run made afterwards (files that do not record it differ, unless ``legacy`` says what they implied)."""
    REGISTRY[opt.name] = opt
    return opt


def unregister_option(name: str) -> None:
    REGISTRY.pop(name, None)


def option(name: str) -> Option:
    try:
        return REGISTRY[name]
    except KeyError:
        raise UserError(f"unknown option {name!r}") from None


def group(*names: str) -> list[Option]:
    """The options of these groups, in declaration order."""
    return [o for o in REGISTRY.values() if o.group in names]


def identity_options() -> list[Option]:
    return [o for o in REGISTRY.values() if o.identity]


def check_value(opt: Option, value):
    """``value`` in canonical form, or :class:`UserError`: ``--name must be <what> (got <value>)``."""
    problem = opt.constraint.check(value)
    if problem:
        where = opt.flag_name or opt.name
        shown = f"{type(value).__name__} {value!r}" if isinstance(value, bool) and problem != "True or False" else repr(value)
        if isinstance(opt.constraint, OneOf):
            raise UserError(f"{where} must be one of {', '.join(map(str, opt.constraint.choices))} (invalid choice: "
                            f"{value!r})")
        raise UserError(f"{where} must be {problem} (got {shown})")
    return opt.constraint.normalize(value)


def validate(values: dict, options: Iterable[Option]) -> dict:
    """Check and normalise ``values`` (a dict with an entry per option, defaults filled in): the one place a bad
    value is refused."""
    out = dict(values)
    for opt in options:
        out[opt.name] = check_value(opt, values[opt.name])
    return out


# ------------------------------------------------------------------------------------------------- the flags
class ArgumentParser:
    """``argparse.ArgumentParser`` whose usage errors are one line (``error: ... (see --help)``), like every other
    mistake the commands report."""

    def __new__(cls, *args, **kwargs):
        import argparse

        class _Parser(argparse.ArgumentParser):
            def error(self, message):
                self.exit(2, f"error: {message} (see {self.prog} --help)\n")

        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        return _Parser(*args, **kwargs)


def _default_text(value) -> str:
    if isinstance(value, (list, tuple)):
        return " ".join(map(str, value)) if value else "none"
    return "none" if value is None else str(value)


def add_flags(parser, names: Iterable[str], defaults: dict | None = None, extra: Iterable[Option] = ()) -> None:
    """Add the flags of the options ``names`` (registered) and ``extra`` (an experiment's own) to ``parser``, with
    the command's ``defaults`` where they differ from the library's. Values are typed here but checked by
    :func:`validate` (one line per mistake)."""
    defaults = defaults or {}
    opts = [option(n) for n in names] + list(extra)
    for opt in opts:
        if opt.flag_name is None:
            continue
        default = defaults.get(opt.name, opt.default)
        flags = [opt.flag_name, *opt.aliases]
        if opt.switch or opt.inverse:
            parser.add_argument(*flags, dest=opt.name, action="store_false" if opt.inverse else "store_true",
                                default=default, help=opt.help.replace("%", "%%"))
            continue

        def convert(text, c=opt.constraint, o=opt):
            import argparse

            try:
                return c.convert(text)
            except (TypeError, ValueError):
                what = c.describe() if hasattr(c, "describe") else "a valid value"
                raise argparse.ArgumentTypeError(f"must be {what} (got {text!r})") from None

        shown = f" (default: {_default_text(default)})" if "(default" not in opt.help else ""
        parser.add_argument(*flags, dest=opt.name, type=convert, default=default, nargs=opt.nargs,
                            metavar=opt.metavar or opt.constraint.metavar, help=(opt.help + shown).replace("%", "%%"))


def values_from_args(args, names: Iterable[str]) -> dict:
    """``{name: value}`` of the parsed ``args`` for the options ``names`` (those without a flag are left out)."""
    return {n: getattr(args, n) for n in names if hasattr(args, n)}


def parse_checked(parser, argv, options: Iterable[Option]):
    """``parser.parse_args(argv)`` with the values of ``options`` checked and normalised (:func:`validate`)."""
    args = parser.parse_args(argv)
    opts = [o for o in options if hasattr(args, o.name)]
    for name, value in validate({o.name: getattr(args, o.name) for o in opts}, opts).items():
        setattr(args, name, value)
    return args


# ------------------------------------------------------------------------------------------------- settings
class Settings:
    """Validated option values carried as one object (immutable): ``cfg.max_len``, ``cfg.replace(seed=1)``,
    ``cfg.as_dict()``. Subclasses say which options they hold (``_groups``, ``_identity``) and which plain
    fields (``_fields``: name -> default) come beside them."""

    _groups: tuple = ()
    _identity: bool = False
    _fields: dict = {}

    @classmethod
    def options(cls) -> list[Option]:
        return [o for o in REGISTRY.values() if o.group in cls._groups or (cls._identity and o.identity)]

    def __init__(self, **values):
        opts = {o.name: o for o in self.options()}
        unknown = set(values) - set(opts) - set(self._fields)
        if unknown:
            raise TypeError(f"{type(self).__name__} got unknown setting(s) {', '.join(sorted(unknown))}; it takes "
                            f"{', '.join([*self._fields, *opts])}")
        merged = {**{k: v for k, v in self._fields.items()}, **{n: o.default for n, o in opts.items()}, **values}
        merged = validate(merged, opts.values())
        object.__setattr__(self, "_values", merged)
        self._check()

    def _check(self) -> None:
        """Checks that involve several values (subclasses)."""

    def __getattr__(self, name):
        values = self.__dict__.get("_values", {})
        if name in values:
            return values[name]
        raise AttributeError(f"{type(self).__name__} has no setting {name!r}")

    def __setattr__(self, name, value):
        raise AttributeError(f"{type(self).__name__} is immutable; use .replace({name}=...)")

    def __eq__(self, other):
        return type(other) is type(self) and other._values == self._values

    def __hash__(self):
        return hash((type(self), repr(self)))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self._values.items())})"

    def replace(self, **changes):
        """A copy with ``changes`` (validated again)."""
        return type(self)(**{**self.raw(), **changes})

    def raw(self) -> dict:
        """The values as held (parsed metrics included: they can be passed again)."""
        return dict(self._values)

    def as_dict(self) -> dict:
        """JSON-ready values (metrics as their keys)."""
        out = {}
        for k, v in self._values.items():
            out[k] = [getattr(x, "key", x) for x in v] if isinstance(v, tuple) else v
        return out


# ------------------------------------------------------------------------------------------------- declarations
def _greedy_none(value, values):
    return value if values.get("sample") else None


def _lens_precision_identity(value, values):
    """The lens precision that will run on the run's device type (fp32 where it has no bf16 product)."""
    if value == "fp32":
        return value
    from .lens_precision import resolve_lens_precision

    return resolve_lens_precision(value, values.get("device"))


_BOOL = Flag()
for _opt in (
    # --- decoding (DecodeConfig)
    Option("max_len", 32, "generated tokens per prompt", Integer(min=1), group="decode", identity=True),
    Option("sample", False, "greedy decoding instead of sampling", _BOOL, group="decode", identity=True,
           flag="--greedy", inverse=True),
    Option("temperature", 1.0, "sampling temperature", Real(min=0, min_open=True), group="decode", identity=True,
           to_identity=_greedy_none),
    Option("seed", 0, "seed of sampling, scrambling and subsampling (sampled runs are reproducible: the same seed draws "
           "the same tokens; in the library, None draws fresh ones)", Integer(min=0, none=True), group="decode",
           identity=True),
    Option("stop_at_eos", False, "stop a row at EOS (later positions NaN)", _BOOL, group="decode", identity=True,
           flag=None, legacy=False),
    Option("chat_template", False, "wrap each prompt in the tokenizer's chat template (the paper fed raw text: "
           "default off)", _BOOL, group="decode", identity=True, switch=True),
    Option("prepend_bos", "auto", "BOS token before each prompt: auto = what TransformerLens (the original's tooling) "
           "did for the model family (yes for GPT-2, Llama, Gemma, OPT...; no for Qwen, GPT-NeoX/Pythia, Bloom)",
           OneOf(("auto", "always", "never")), group="decode", identity=True),
    Option("keep_top_tokens", 0, "keep the top K lens tokens and their probabilities per generated token and layer "
           "(the explorer's grid; a few kB per sample; 0: none)", Integer(min=0), group="decode", identity=True,
           metavar="K"),
    # --- what a run computes and how (RunConfig, identity)
    Option("metrics", ("shannon",), "metrics to keep, e.g. shannon renyi:0.5 renyi:5 moment:2 kl_final", Metrics(),
           identity=True, nargs="+", metavar="METRIC"),
    Option("batch_size", 8, "prompts per forward pass", Integer(min=1), identity=True),
    Option("batch_order", "length", "which prompts share a batch: length = prompts of similar token length (less "
           "padding; results come back in data order and sampled prompts draw from their own seeded streams, so only "
           "speed changes), given = consecutive prompts", OneOf(("length", "given")), identity=True),
    Option("budget_mb", 256.0, "memory budget of the lens's vocabulary chunks in MiB", Real(min=0, min_open=True),
           group="model", identity=True, to_identity=lambda v, _: float(v)),
    Option("compile", False, "fuse the lens's vocabulary reductions with torch.compile (3-7 % faster after a "
           "compilation of about 30 s; less exact)", _BOOL, group="model", identity=True, switch=True),
    Option("lens_precision", "fp32", "precision of the lens's vocabulary product; the statistics stay fp32. fp32: "
           "the head's dtype, exact. bf16: one bf16 product (the lens call about 3x faster on a CPU with "
           "avx512_bf16; entropies move by 0.01-0.02 nats on average, 0.1-0.2 at worst). bf16x2: a second product "
           "removes the output's rounding (~1.7x; mean ~0.005 nats). bf16x3: hi/lo splits too (~1e-3 nats at worst; "
           "on CPU about fp32's speed). A device without bf16 runs fp32 and says so", OneOf(("fp32", "bf16", "bf16x2", "bf16x3")),
           group="model", identity=True, legacy="fp32", to_identity=_lens_precision_identity),
    # dtype and device: the flags take auto or a name; a RunConfig holds what they resolved to (float32, cpu...),
    # or None for "as the model is loaded"
    Option("dtype", None, "auto (bf16/fp16 on GPU, fp32 on CPU), float32, bfloat16, float16", Text(),
           group="model", identity=True),
    Option("device", None, "auto (cuda, mps, cpu), cpu, cuda, cuda:1...", Text(), group="model", identity=True),
    # --- where and how the run goes (not in the identity)
    Option("device_map", None, "shard the model over devices through accelerate, e.g. 'auto' or a JSON map "
           "(default: one device)", Text(), group="model"),
    Option("max_memory", None, "with --device_map: memory per device, e.g. 0=20GiB 1=20GiB cpu=64GiB",
           ListOf(Text(), none=True), group="model", nargs="*", metavar="DEV=SIZE"),
    Option("lens_spec", None, "the lens's parts for a model no rule covers: module:NAME or path/to/file.py:NAME naming a "
           "LensSpec (imports that module: name only code you trust)", Text(), group="model", identity=True, legacy=None,
           metavar="MODULE:NAME"),
    Option("random_init", None, "the random-weights control: the same architecture with weights drawn by its own "
           "initialiser under this seed (a profiling run's output name ends in _randomSEED)", Integer(min=0, none=True),
           group="model", identity=True, legacy=None, metavar="SEED"),
    Option("threads", None, "CPU threads (default: the cores this process may use less those busy now, at least 1; "
           "OMP_NUM_THREADS wins)", Integer(min=1, none=True), group="model"),
    Option("update_steps", 1000, "checkpoint the finished rows to the sidecar NAME.pkl.parts/ every this many samples",
           Integer(min=1), group="output"),
    Option("results_dir", "results", "output folder", Text(none=False), group="output"),
    Option("resume", False, "continue an unfinished run (its sidecar NAME.pkl.parts/ or a partial file)", _BOOL,
           group="output", switch=True),
    Option("overwrite", False, "replace an existing results file", _BOOL, group="output", switch=True),
    Option("no_progress", False, "no progress bar", _BOOL, group="output", switch=True),
    Option("skip_bad_rows", False, "skip and count data rows that break the format rules instead of stopping at the "
           "first", _BOOL, group="data", switch=True),
    Option("trust_pickle", False, "read pickles without the restricted unpickler: any code a file holds runs (only "
           "for files you wrote yourself)", _BOOL, group="output", switch=True),
    # --- evaluations of results files
    Option("label", None, "what to predict: correct (MMLU), prompt (task class), or any per-sample key (default: "
           "correct when the file has it, else the label its experiment is evaluated by, e.g. prompt for TinyStories)",
           Text(), group="analysis"),
    Option("metric", None, "the profile column to use, e.g. entropy, renyi_0.5 (default: entropy, else the file's "
           "first metric)", Text(), group="analysis"),
    Option("folds", 10, "CV folds", Integer(min=2), group="analysis"),
    Option("num_windows", None, "features: window means over generated tokens, flattened (default: the mean profile)",
           Integer(min=1, none=True), group="analysis"),
    Option("out_dir", None, "folder for the outputs (default: beside FILE)", Text(), group="analysis"),
    Option("no_plot", False, "skip the plot", _BOOL, group="analysis", switch=True),
    # --- appended by the runner's edge cases
    Option("keep_nonfinite", False, "keep rows whose metrics are NaN or inf at a generated step (counted in "
           "metadata n_nonfinite) instead of stopping at the first, which names its prompt", _BOOL, group="run",
           switch=True),
):
    register_option(_opt)
