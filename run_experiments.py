#!/usr/bin/env python3
"""MMLU correctness (paper, section 5): greedy answers to MMLU test questions with one of four

A thin wrapper kept for the paper's commands: the code is :mod:`model_inspector.commands.profile_mmlu`
(also ``entropy-lens profile-mmlu ...``). ``--help`` lists the flags.
"""

from model_inspector.cli import run_main
from model_inspector.commands.profile_mmlu import *  # noqa: F401,F403 - the paper's code imports names from here
from model_inspector.commands.profile_mmlu import main

if __name__ == "__main__":
    run_main(main)
