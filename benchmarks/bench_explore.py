#!/usr/bin/env python3
"""The explorer on a TinyStories-sized run: 2,400 synthetic samples (8 tokens x 30 layers, SmolLM2's shape,
two metrics, top lens token, real-length prompts from the shared TinyStories file). Prints the HTML size, the
time to build it, and the time headless Chromium takes to load and draw it (until the 2,400 points exist).

  .venv/bin/python benchmarks/bench_explore.py
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from model_inspector.experiments.tinystories import tinystories_samples
from model_inspector.explore import write_report
from model_inspector.results import Results

ROOT = Path(__file__).resolve().parents[1]
#: The shared offline data (as tests/conftest.py): ../shared/data, or $ENTROPY_LENS_DATA.
DATA = Path(os.environ.get("ENTROPY_LENS_DATA", ROOT.parent / "shared" / "data"))


def synthetic(path: Path, n_stories: int = 100) -> int:
    with open(DATA / "tinystories_validation_head.jsonl") as fh:
        stories = [json.loads(line)["text"] for line in fh]
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
    meta = {"format": "entropy-lens-results", "format_version": 3, "complete": True,
            "metrics": {"entropy": "-sum p log p [nats]", "renyi_2": "log(sum p^2) / (1 - 2) [nats]"},
            "token_strings": {str(i): f"tok{i}" for i in ids}}
    Results(data, meta).to_pickle(path)
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
            redraw = driver.execute_script(  # in-page ms: a class filter, a metric switch (grid included), a search
                "const t = [], go = (id, v) => { const e = document.getElementById(id), t0 = performance.now();"
                " e.value = v; e.dispatchEvent(new Event(id === 'search' ? 'input' : 'change')); return performance.now() - t0; };"
                "t.push(go('class', '1'), go('metric', '1'), go('search', 'story')); return t;")
        finally:
            driver.quit()
        print(f"{n} samples: HTML {out.stat().st_size / 1e6:.2f} MB, built in {build:.1f} s, "
              f"loaded and drawn by headless Chromium in {load:.2f} s ({points} points); redraw after a class filter "
              f"{redraw[0]:.0f} ms, a metric switch {redraw[1]:.0f} ms, a search {redraw[2]:.0f} ms")


if __name__ == "__main__":
    main()
