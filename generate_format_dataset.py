#!/usr/bin/env python3
"""Output-format dataset (paper, section 6): "Simulate a chat log about ", "Write a poem about ",

A thin wrapper kept for the paper's commands: the code is :mod:`model_inspector.commands.formats`
(also ``entropy-lens formats ...``). ``--help`` lists the flags.
"""

from model_inspector.cli import run_main
from model_inspector.commands.formats import *  # noqa: F401,F403 - the paper's code imports names from here
from model_inspector.commands.formats import main

if __name__ == "__main__":
    run_main(main)
