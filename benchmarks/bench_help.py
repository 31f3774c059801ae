#!/usr/bin/env python3
"""Wall time of ``--help`` for every script and ``entropy-lens`` subcommand (best of 3, fresh processes).
Heavy libraries (torch, transformers) are imported only after the arguments are parsed.

  .venv/bin/python benchmarks/bench_help.py
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ["run_experiments_ts.py", "run_experiments.py", "run_tests.py", "generate_format_dataset.py",
           "classify_formats.py"]


def best(cmd: list[str]) -> float:
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, capture_output=True, check=True)
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    for s in SCRIPTS:
        print(f"python3 {s} --help: {best([sys.executable, s, '--help']):.2f} s")
    for sub in ("profile-ts", "evaluate", "explore"):
        print(f"entropy-lens {sub} --help: {best([sys.executable, '-m', 'model_inspector', sub, '--help']):.2f} s")


if __name__ == "__main__":
    main()
