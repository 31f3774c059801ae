"""The original code's ``model_manager`` module: an alias of :mod:`model_inspector.loading`, so that
``import model_manager`` and ``from model_manager import load_model, get_model_list`` keep working."""

import sys

from model_inspector import loading as _loading

sys.modules[__name__] = _loading
