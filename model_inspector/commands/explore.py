"""``entropy-lens explore``: see :mod:`model_inspector.explore`."""

from ..explore import build_parser, main  # noqa: F401
