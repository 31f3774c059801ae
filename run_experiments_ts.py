#!/usr/bin/env python3
"""TinyStories task identification (paper, section 4): for each story, 6 task prompts (continuation,
counting, semantic) x 4 variants; sampled generation at temperature 1.0.

A thin wrapper kept for the paper's commands: the experiment is :mod:`model_inspector.experiments.tinystories`, run by
``entropy-lens run tinystories ...`` (also ``entropy-lens profile-ts ...``, with this script's argument order). ``--help`` lists
the flags.
"""

from model_inspector.cli import run_main
from model_inspector.commands.run import script_main
from model_inspector.experiments.tinystories import *  # noqa: F401,F403 - the paper's code imports names from here

main = script_main("tinystories")

if __name__ == "__main__":
    run_main(main)
