#!/usr/bin/env python3
"""CPU threads: the default (``threads.default_threads``: cores this process may use less the busy ones)
against 1 thread and against all cores, on an idle machine and beside one competing CPU-bound
process. Job: SmolLM2-135M, 8 format prompts x 32 generated tokens, batch 8, fp32. Each setting runs
in a fresh process; prints a table and writes benchmarks/results_threads.json.

  .venv/bin/python benchmarks/bench_threads.py          # about 3 minutes on 2 cores
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

CHILD = r"""
import sys, time
from model_inspector import ModelInspector
from model_inspector.experiments.formats import format_samples
from model_inspector.threads import default_threads, set_threads
arg = sys.argv[1]
n = set_threads(None if arg == "default" else int(arg))
mi = ModelInspector("smollm2-135m-instruct", device="cpu", dtype="float32")
prompts = [s.text for s in format_samples(3)][:8]
mi.profile(prompts[:1], max_len=2)
t0 = time.perf_counter()
mi.profile(prompts, max_len=32, batch_size=8)
print(n, time.perf_counter() - t0)
"""


def run(setting: str) -> tuple[int, float]:
    out = subprocess.run([sys.executable, "-c", CHILD, setting], capture_output=True, text=True, check=True)
    n, secs = out.stdout.split()[-2:]
    return int(n), float(secs)


def main() -> None:
    from model_inspector.threads import available_cores

    cores = available_cores()
    rows = {}
    for load in ("idle", "one competing process"):
        hog = None
        if load != "idle":
            hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            time.sleep(2)
        try:
            for setting in ("default", "1", str(cores)):
                n, secs = run(setting)
                rows[f"{load} / {setting}"] = {"threads": n, "seconds": secs, "tokens_per_s": 8 * 32 / secs}
                print(f"{load:>22} | threads {setting:>7} -> {n} | {secs:6.1f} s | {8 * 32 / secs:6.1f} tokens/s")
        finally:
            if hog is not None:
                hog.kill()
    Path(__file__).with_name("results_threads.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
