#!/usr/bin/env python3
"""MMLU correctness (paper, section 5): greedy answers to MMLU test questions with one of four
prompt types (base, instruct, thinking, humble).

A thin wrapper kept for the paper's commands: the experiment is :mod:`model_inspector.experiments.mmlu`, run by
``entropy-lens run mmlu ...`` (also ``entropy-lens profile-mmlu ...``, with this script's argument order). ``--help`` lists
the flags.
"""

from model_inspector.cli import run_main
from model_inspector.commands.run import script_main
from model_inspector.experiments.mmlu import *  # noqa: F401,F403 - the paper's code imports names from here

main = script_main("mmlu")

if __name__ == "__main__":
    run_main(main)
