#!/usr/bin/env python3
"""Classify output formats from entropy profiles (paper, section 6): per Rényi alpha, k-NN

A thin wrapper kept for the paper's commands: the code is :mod:`model_inspector.commands.classify_formats`
(also ``entropy-lens classify-formats ...``). ``--help`` lists the flags.
"""

from model_inspector.cli import run_main
from model_inspector.commands.classify_formats import *  # noqa: F401,F403 - the paper's code imports names from here
from model_inspector.commands.classify_formats import main

if __name__ == "__main__":
    run_main(main)
