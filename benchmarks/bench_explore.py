#!/usr/bin/env python3
"""The explorer on a TinyStories-sized run: 2,400 synthetic samples (8 tokens x 30 layers, SmolLM2's shape,
two metrics, top lens token, real-length prompts from the shared TinyStories file). Prints the HTML size, the
time to build it, and the time headless Chromium takes to load and draw it (until the 2,400 points exist).

  .venv/bin/python benchmarks/bench_explore.py
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from model_inspector.explore import write_report
from model_inspector.results import save_results
from model_inspector.experiments.tinystories import tinystories_samples

ROOT = Path(__file__).resolve().parents[1]


def synthetic(path: Path, n_stories: int = 100) -> int:
    stories = [json.loads(line)["text"] for line in open(ROOT.parent / "shared/data/tinystories_validation_head.jsonl")]
    samples, _ = tinystories_samples(stories[:n_stories])
    rng = np.random.default_rng(0)
    n, t, layers = len(samples), 8, 30
    cls = {"continuation": 0.0, "counting": 0.4, "semantic": 0.8}
    data = {"entropy": [], "renyi_2": [], "tokens": [], "top_ids": [], "top_probs": []}
    for s in samples:
        base = np.linspace(1, 4, layers) + cls[s.labels["task"]] + rng.normal(0, 0.3, (t, layers))
        data["entropy"].append(base.astype(np.float32))
        data["renyi_2"].append((base * 0.7).astype(np.float32))
        data["tokens"].append(rng.integers(0, 49152, t))
        data["top_ids"].append(rng.integers(0, 49152, (t, layers, 1)).astype(np.int32))
        data["top_probs"].append(rng.random((t, layers, 1)).astype(np.float16))
    data.update({"input": [s.text for s in samples], "text": [" a generated answer"] * n, "model": ["m"] * n,
                 **{k: [s.labels[k] for s in samples] for k in ("task", "prompt", "variant", "story_index")}})
    ids = {int(i) for a in data["top_ids"] + data["tokens"] for i in np.unique(a)}
    data["metadata"] = {"format": "entropy-lens-results", "format_version": 3, "complete": True,
                        "token_strings": {str(i): f"tok{i}" for i in ids}}
    save_results(path, data)
    return n


def main() -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        n = synthetic(tmp / "ts.pkl")
        t0 = time.perf_counter()
        out = write_report(tmp / "ts.pkl", tmp / "ts.html")
        build = time.perf_counter() - t0
        opts = webdriver.ChromeOptions()
        opts.binary_location = shutil.which("chromium")
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-background-networking", f"--user-data-dir={tmp / 'p'}"):
            opts.add_argument(flag)
        driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
        try:
            t0 = time.perf_counter()
            driver.get(out.as_uri())
            points = driver.execute_script("return document.querySelectorAll('#emb circle.pt').length")
            load = time.perf_counter() - t0
        finally:
            driver.quit()
        print(f"{n} samples: HTML {out.stat().st_size / 1e6:.2f} MB, built in {build:.1f} s, "
              f"loaded and drawn by headless Chromium in {load:.2f} s ({points} points)")


if __name__ == "__main__":
    main()
