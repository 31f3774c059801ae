#!/usr/bin/env python3
"""k-NN evaluation of saved entropy profiles (paper's evaluation): k = 29 (Euclidean) on the mean

A thin wrapper kept for the paper's commands: the code is :mod:`model_inspector.commands.evaluate`
(also ``entropy-lens evaluate ...``). ``--help`` lists the flags.
"""

from model_inspector.cli import run_main
from model_inspector.commands.evaluate import *  # noqa: F401,F403 - the paper's code imports names from here
from model_inspector.commands.evaluate import main

if __name__ == "__main__":
    run_main(main)
