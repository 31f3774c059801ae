"""The lens explorer: one self-contained HTML file, tested in a real browser (Debian's chromium and
chromedriver, driven by Selenium) on a small real run of SmolLM2."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import run_script

from model_inspector.results import load_results

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def real_run(tmp_path_factory, shared_data):
    """SmolLM2-135M, 2 TinyStories stories (48 prompts), greedy, 3 tokens, top lens token kept; evaluated."""
    d = tmp_path_factory.mktemp("explore")
    run_script("run_experiments_ts.py", "smollm2-135m-instruct", "tinystories", "--n_stories", 2, "--data_file",
               shared_data / "tinystories_validation_head.jsonl", "--max_len", 3, "--greedy", "--results_dir", d,
               "--no_progress", "--metrics", "shannon", "renyi:2")
    out = d / "smollm2-135m-instruct_tinystories_2.pkl"
    run_script("run_tests.py", out, "--label", "prompt", "--folds", 3, "--k", 5, "--no_plot")
    return out


def _browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1400,1800", f"--user-data-dir={tmp_path / 'profile'}"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"), options=opts)


@pytest.mark.slow
def test_explorer_in_a_real_browser(real_run, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    data = load_results(real_run)
    n = len(data["entropy"])
    assert data["top_ids"][0].shape == (3, 30, 1) and data["top_ids"][0].dtype == np.int32
    assert data["top_probs"][0].dtype == np.float16 and data["metadata"]["format_version"] == 4
    html_path = tmp_path / "report.html"
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "model_inspector.explore", str(real_run), "--out", str(html_path)],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    text = html_path.read_text()
    assert "http://" not in text.replace("http://www.w3.org", "") and "https://" not in text  # works offline
    driver = _browser(tmp_path)
    try:
        driver.get(html_path.as_uri())
        points = driver.find_elements(By.CSS_SELECTOR, "#emb circle.pt")
        assert len(points) == n == 48
        driver.save_screenshot(str(tmp_path / "1_overview.png"))
        # hovering a point shows its prompt (a point no other point covers: the one under its centre)
        on_top = driver.execute_script(
            "return [...document.querySelectorAll('#emb circle.pt')].map(c => {const r = c.getBoundingClientRect();"
            " return document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2) === c;});")
        i = on_top.index(True, 7)
        assert int(points[i].get_attribute("data-i")) == i
        ActionChains(driver).move_to_element(points[i]).perform()
        tip = driver.find_element(By.ID, "tip")
        assert tip.is_displayed() and data["input"][i][:60] in tip.text
        driver.save_screenshot(str(tmp_path / "2_hover.png"))
        # clicking opens the grid: 3 generated tokens x 30 layers
        points[i].click()
        rows = driver.find_elements(By.CSS_SELECTOR, "#grid tbody tr")
        assert len(rows) == 3 and len(rows[0].find_elements(By.TAG_NAME, "td")) == 30
        assert driver.find_element(By.ID, "sprompt").text.strip() == data["input"][i].strip()
        # greedy: the last layer's top lens token is the generated token, in every row
        for row in rows:
            gen = row.find_element(By.CSS_SELECTOR, "th.gen").get_attribute("data-id")
            last = row.find_elements(By.TAG_NAME, "td")[-1].get_attribute("data-id")
            assert gen == last != "65535"
        cell = rows[0].find_elements(By.TAG_NAME, "td")[-1]
        assert "top token" in cell.get_attribute("title") and "p = " in cell.get_attribute("title")
        driver.execute_script("document.getElementById('sample').scrollIntoView()")
        driver.save_screenshot(str(tmp_path / "3_sample.png"))
        # the filter and the search narrow the views
        driver.execute_script("const s=document.getElementById('class'); s.value='counting'; s.onchange({target:s});")
        dim = driver.find_elements(By.CSS_SELECTOR, "#emb circle.pt.dim")
        assert len(dim) == 32  # 16 of 48 are counting prompts
        search = driver.find_element(By.ID, "search")
        search.send_keys("How many words")
        assert "8 of 48 samples match" in driver.find_element(By.ID, "count").text
        # the evaluation beside the file is in the summary
        assert "tm_overall.csv" in driver.find_element(By.ID, "summary").text
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors
    finally:
        driver.quit()
    print(f"screenshots in {tmp_path}")


def test_explorer_page_data(tmp_path):
    """Synthetic file: the page holds every sample, the labels and the quantised profiles."""
    from model_inspector.explore import build_report
    from model_inspector.results import save_results

    rng = np.random.default_rng(0)
    n, t, layers = 30, 4, 6
    data = {"entropy": [rng.random((t, layers), dtype=np.float32) * 5 for _ in range(n)],
            "tokens": [rng.integers(0, 50, t) for _ in range(n)],
            "top_ids": [rng.integers(0, 50, (t, layers, 1)).astype(np.int32) for _ in range(n)],
            "top_probs": [rng.random((t, layers, 1)).astype(np.float16) for _ in range(n)],
            "input": [f"prompt {i}" for i in range(n)], "text": ["x"] * n, "model": ["m"] * n,
            "prompt": [["counting_p", "semantic_p", "continuation_p"][i % 3] for i in range(n)],
            "metadata": {"format": "entropy-lens-results", "token_strings": {str(i): f"t{i}" for i in range(50)},
                         "metrics": {"entropy": "-sum p log p [nats]"}}}
    save_results(tmp_path / "r.pkl", data)
    page = build_report(tmp_path / "r.pkl")
    payload = json.loads(page.split('<script id="data" type="application/json">')[1].split("</script>")[0])
    assert payload["N"] == n and payload["T"] == t and payload["L"] == layers
    assert payload["labels"]["class"][:3] == ["counting", "semantic", "continuation"]
    import base64

    q = np.frombuffer(base64.b64decode(payload["arrays"]["entropy"]), dtype=np.uint16).reshape(n, t, layers)
    lo, scale = payload["ranges"]["entropy"]
    np.testing.assert_allclose(lo + q * scale, np.stack(data["entropy"]), atol=scale)
