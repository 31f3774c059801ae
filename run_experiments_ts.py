#!/usr/bin/env python3
"""TinyStories task identification (paper, section 4): for each story, 6 task prompts (continuation,

A thin wrapper kept for the paper's commands: the code is :mod:`model_inspector.commands.profile_ts`
(also ``entropy-lens profile-ts ...``). ``--help`` lists the flags.
"""

from model_inspector.cli import run_main
from model_inspector.commands.profile_ts import *  # noqa: F401,F403 - the paper's code imports names from here
from model_inspector.commands.profile_ts import main

if __name__ == "__main__":
    run_main(main)
