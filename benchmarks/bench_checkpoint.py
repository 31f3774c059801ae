#!/usr/bin/env python3
"""Checkpoint cost: the append-only sidecar (``PartsStore.append``, what runs write now) against
rewriting the whole results pickle (what a checkpoint cost before), at 1k, 10k and 100k samples
already written. Rows are MMLU-like: an [8, 30] float32 profile, 8 token ids, a 1.1 kB prompt and
labels. Prints a table (seconds per checkpoint of 1,000 samples) and writes
benchmarks/results_checkpoint.json.

  .venv/bin/python benchmarks/bench_checkpoint.py            # about a minute
"""

from __future__ import annotations

import json
import pickle
import tempfile
import time
from pathlib import Path

import numpy as np

from model_inspector.storage import PartsStore, atomic_write_bytes

CHUNK = 1000


def rows(n: int, rng) -> dict:
    return {"entropy": [rng.random((8, 30), dtype=np.float32) for _ in range(n)],
            "tokens": [rng.integers(0, 49152, 8) for _ in range(n)],
            "input": [f"Subject: anatomy.\n\nQuestion {i}: " + "x" * 1100 for i in range(n)],
            "text": ["A. the answer" for _ in range(n)], "subject": ["anatomy"] * n, "correct": [1] * n}


def main() -> None:
    rng = np.random.default_rng(0)
    chunk = rows(CHUNK, rng)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for total in (1_000, 10_000, 100_000):
            # the sidecar: (total / CHUNK - 1) parts already there, time the next append
            store = PartsStore(Path(tmp) / f"r{total}.pkl")
            store.write_meta({"n": total})
            for _ in range(total // CHUNK - 1):
                store.append(chunk)
            t0 = time.perf_counter()
            store.append(chunk)
            t_parts = time.perf_counter() - t0
            # the whole-file rewrite: a pickle of every row so far
            whole = rows(total, rng)  # distinct objects (a list repeated by reference would pickle as memo hits)
            t0 = time.perf_counter()
            atomic_write_bytes(Path(tmp) / f"w{total}.pkl", pickle.dumps(whole, protocol=pickle.HIGHEST_PROTOCOL))
            t_whole = time.perf_counter() - t0
            out[total] = {"sidecar_s": t_parts, "rewrite_s": t_whole}
            print(f"{total:>7} samples written: sidecar append {t_parts * 1e3:7.1f} ms per 1,000-sample checkpoint "
                  f"({t_parts / CHUNK * 1e6:5.1f} us/sample); whole-file rewrite {t_whole * 1e3:8.1f} ms")
    Path(__file__).with_name("results_checkpoint.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
