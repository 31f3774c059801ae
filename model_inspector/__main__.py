"""``python -m model_inspector ...`` = the ``entropy-lens`` command."""

from .cli import main

main()
