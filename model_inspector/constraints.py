"""The values an option admits (after scikit-learn's parameter constraints): each :class:`Constraint` checks a value
(``check`` returns ``None`` or what the value should be: ``"a positive integer"``), turns a command-line string into a
value (``convert``) and gives the canonical form (``normalize``). Used by the declarations of
:mod:`model_inspector.options`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from dataclasses import dataclass, field

from .errors import UserError

__all__ = ["Constraint", "Integer", "Real", "OneOf", "Flag", "Text", "ListOf", "Metrics"]


class Constraint:
    """What values an option admits. ``check(value)`` returns ``None`` or what the value should be (``"a positive
    integer"``); ``convert(text)`` turns a command-line string into a value (raising ``ValueError``)."""

    def check(self, value) -> str | None:
        return None

    def convert(self, text: str):
        return text

    def normalize(self, value):
        """The canonical form of an accepted value (a tuple for a list, parsed metrics...)."""
        return value

    metavar: str | None = None


def _whole(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


@dataclass(frozen=True)
class Integer(Constraint):
    min: int | None = None
    max: int | None = None
    none: bool = False

    def describe(self) -> str:
        if self.min == 1 and self.max is None:
            return "a positive integer"
        if self.min == 0 and self.max is None:
            return "an integer >= 0"
        if self.min is not None and self.max is not None:
            return f"an integer from {self.min} to {self.max}"
        return "an integer" + (f" >= {self.min}" if self.min is not None else "") + (
            f" <= {self.max}" if self.max is not None else "")

    def check(self, value):
        if value is None and self.none:
            return None
        if not _whole(value) or (self.min is not None and value < self.min) or (self.max is not None and value > self.max):
            return self.describe()
        return None

    def convert(self, text):
        return int(text)


@dataclass(frozen=True)
class Real(Constraint):
    min: float | None = None
    max: float | None = None
    min_open: bool = False
    max_open: bool = False
    none: bool = False
    finite: bool = True

    def bounds(self) -> str:
        parts = []
        if self.min is not None:
            parts.append(f"{'>' if self.min_open else '>='} {self.min:g}")
        if self.max is not None:
            parts.append(f"{'<' if self.max_open else '<='} {self.max:g}")
        return " and ".join(parts)

    def describe(self) -> str:
        return "a number" + (" " + self.bounds() if self.bounds() else "")

    def check(self, value):
        if value is None and self.none:
            return None
        if not isinstance(value, numbers.Real) or isinstance(value, bool) or math.isnan(value) or (
                self.finite and math.isinf(value)):
            return self.describe()
        if self.min is not None and (value <= self.min if self.min_open else value < self.min):
            return self.describe()
        if self.max is not None and (value >= self.max if self.max_open else value > self.max):
            return self.describe()
        return None

    def convert(self, text):
        return float(text)

    def normalize(self, value):
        return None if value is None else float(value)


@dataclass(frozen=True)
class OneOf(Constraint):
    choices: tuple
    none: bool = False

    def describe(self) -> str:
        return f"one of {', '.join(map(str, self.choices))}"

    def check(self, value):
        if value is None and self.none:
            return None
        return None if value in self.choices else self.describe()

    @property
    def metavar(self):
        return "{" + ",".join(map(str, self.choices)) + "}"


@dataclass(frozen=True)
class Flag(Constraint):
    """A boolean (a switch on the command line)."""

    def check(self, value):
        return None if isinstance(value, bool) else "True or False"


@dataclass(frozen=True)
class Text(Constraint):
    none: bool = True
    nonempty: bool = True

    def check(self, value):
        if value is None and self.none:
            return None
        if not isinstance(value, str) or (self.nonempty and not value.strip()):
            return "a non-empty string"
        return None


@dataclass(frozen=True)
class ListOf(Constraint):
    """A list (``nargs``) of values of ``item``; ``min_len`` entries at least; ``none``: may be absent."""

    item: Constraint = field(default_factory=Text)
    min_len: int = 1
    none: bool = False

    def check(self, value):
        if value is None and self.none:
            return None
        if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
            return f"a list of {self._item()}"
        value = list(value)
        if len(value) < self.min_len:
            return f"a list of at least {self.min_len} values"
        for v in value:
            problem = self.item.check(v)
            if problem:
                bounds = getattr(self.item, "bounds", lambda: "")()
                return f"{bounds} for every value" if bounds else f"a list of {self._item()} (not {v!r})"
        return None

    def _item(self) -> str:
        return getattr(self.item, "describe", lambda: "values")().replace("a ", "", 1).replace("an ", "", 1) + "s"

    def convert(self, text):
        return self.item.convert(text)

    def normalize(self, value):
        return None if value is None else tuple(self.item.normalize(v) for v in value)


@dataclass(frozen=True)
class Metrics(Constraint):
    """Metric specs (``shannon``, ``renyi:0.5``...), parsed by the metric registry into a tuple of ``Metric``."""

    def check(self, value):
        from .metrics import parse_metrics

        try:
            parse_metrics(value)
        except UserError as exc:
            return f"valid metrics ({exc})"
        return None

    def normalize(self, value):
        from .metrics import parse_metrics

        return parse_metrics(value)


