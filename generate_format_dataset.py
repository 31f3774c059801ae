#!/usr/bin/env python3
"""Output-format dataset (paper, section 6): chat log, poem and scientific piece prompts for 182 topics;
Rényi profiles averaged over token windows.

A thin wrapper kept for the paper's commands: the experiment is :mod:`model_inspector.experiments.formats`, run by
``entropy-lens run formats ...`` (also ``entropy-lens formats ...``, with this script's argument order). ``--help`` lists
the flags.
"""

from model_inspector.cli import run_main
from model_inspector.commands.run import script_main
from model_inspector.experiments.formats import *  # noqa: F401,F403 - the paper's code imports names from here

main = script_main("formats")

if __name__ == "__main__":
    run_main(main)
