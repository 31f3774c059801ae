"""entropy-lens reproduce: every claim's step on a model, resumable, and one report with a verdict per claim."""

import json
import shutil

import pytest

from model_inspector.report import VERDICTS, identification
from model_inspector.reproduce import reproduce, with_sizes


def _controls(**rows):
    import pandas as pd

    base = {"n_samples": 90, "folds": "5", "roc_auc_std": 0.02, "baseline_roc_auc": 0.5, "vs_baseline": "higher",
            "significant": True, "p_vs_baseline": 1e-4}
    out = []
    for name, (auc, extra) in rows.items():
        out.append({**base, "feature": name, "roc_auc": auc, **extra})
    return pd.DataFrame(out)


def test_identification_verdicts():
    perm = ({"n_permutations": 50, "roc_auc_p95": 0.56, "p_reference_vs_permutations": 0.02})
    good = _controls(profile=(0.97, {}), last_layer=(0.70, {"vs_reference": "lower", "p_vs_reference": 0.001}),
                     label_permutations=(0.5, perm))
    assert identification(good, [0.948, 0.984])["verdict"] == VERDICTS[0]
    weak = _controls(profile=(0.80, {}), label_permutations=(0.5, perm))
    assert identification(weak, [0.948, 0.984])["verdict"] == VERDICTS[1]
    length = _controls(profile=(0.97, {}), prompt_length=(0.99, {"vs_reference": "higher", "p_vs_reference": 0.2}),
                       label_permutations=(0.5, perm))
    v = identification(length, [0.948, 0.984])
    assert v["verdict"] == VERDICTS[2] and "prompt length alone" in v["why"]
    chance = _controls(profile=(0.52, {"significant": False}), label_permutations=(0.5, {**perm,
                                                                                          "p_reference_vs_permutations": 0.4}))
    v = identification(chance)
    assert v["verdict"] == VERDICTS[1] and "baseline (p 0.0001)" in v["why"] and "permuted labels (empirical p 0.4)" in v["why"]
    # the reason names only the test that failed: above the permutations, not above the stratified baseline
    noisy = _controls(profile=(0.77, {"significant": False, "p_vs_baseline": 0.13}), label_permutations=(0.5, perm))
    v = identification(noisy)
    assert v["verdict"] == VERDICTS[1] and "baseline (p 0.13)" in v["why"] and "permuted" not in v["why"]


@pytest.mark.slow
def test_reproduce_end_to_end_on_a_tiny_model(tiny_dir, shared_data, tmp_path):
    sizes = with_sizes("demo", ts_stories=2, ts_tokens=2, mmlu_questions=16, mmlu_tokens=2, format_topics=4,
                       format_tokens=4, format_windows=2, family_samples=4, family_tokens=2, skip_questions=12,
                       skip_random=2, folds=2, k=3, permutations=5, n_boot=20)
    out = tmp_path / "rep"
    manifest = reproduce([str(tiny_dir)], scale=sizes, data_dir=shared_data, out_dir=out, threads=1)
    steps = manifest["models"][str(tiny_dir)]
    assert set(steps) == {"tasks", "strategies", "mmlu", "formats", "family", "skip"}
    assert all(s["seconds"] >= 0 and s["commands"] for s in steps.values()) and sum(s["seconds"] for s in steps.values()) > 1
    md = (out / "report.md").read_text()
    for claim in ("(i) expansion and pruning", "(ii) family", "(iii) task identification", "(iii) format",
                  "(iv) layer skipping", "correctness prediction"):
        assert claim in md, claim
    table = [ln for ln in md.splitlines() if ln.startswith("| (") or ln.startswith("| correctness")]
    assert len(table) == 7 and all(any(v in ln for v in VERDICTS) for ln in table)
    assert "one model per family" in md or "one model" in md
    assert "Estimated at the paper's scale" in md and json.loads((out / "manifest.json").read_text())["scale"] == "custom"
    # a second run reuses every complete output: no profiling again
    before = {p.name: p.stat().st_mtime for p in (out / "results").glob("*.pkl")}
    reproduce([str(tiny_dir)], scale=sizes, data_dir=shared_data, out_dir=out, threads=1, steps=["tasks", "skip"])
    assert {p.name: p.stat().st_mtime for p in (out / "results").glob("*.pkl")} == before
    # the HTML report in a real browser: one row per claim, every figure loads, no script at all
    html = (out / "report.html").read_text()
    assert "<script" not in html
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,900",
                 f"--user-data-dir={tmp_path / 'profile'}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"), options=opts)
    try:
        driver.get((out / "report.html").as_uri())
        assert len(driver.find_elements(By.CSS_SELECTOR, "tbody tr td b")) == 7
        imgs = driver.find_elements(By.TAG_NAME, "img")
        assert imgs and all(driver.execute_script("return arguments[0].naturalWidth", i) > 0 for i in imgs)
        driver.save_screenshot(str(tmp_path / "report.png"))
    finally:
        driver.quit()


def test_an_interrupted_reproduction_keeps_the_seconds_of_its_finished_stages(tmp_path, monkeypatch):
    """The manifest is saved after every stage (also a failing one), so a resumed run's report and its paper-scale
    estimate count the time of the stages an earlier, interrupted run finished."""
    import time

    import model_inspector.reproduce as rep
    from model_inspector.errors import UserError

    def fake_call(argv, log):
        if argv[0] == "formats":
            raise UserError("the model went away")
        time.sleep(0.2 if argv[0] == "profile-ts" else 0.0)
        return ""

    monkeypatch.setattr(rep, "_call", fake_call)
    out = tmp_path / "rep"
    with pytest.raises(UserError, match="went away"):
        reproduce(["m"], scale="demo", out_dir=out, steps=["tasks", "formats", "skip"])
    saved = json.loads((out / "manifest.json").read_text())["models"]["m"]
    assert saved["tasks"]["seconds"] >= 0.4 and len(saved["tasks"]["commands"]) == 3  # two profile-ts: 2 x 0.2 s
    assert saved["formats"]["commands"][0].startswith("entropy-lens formats") and "skip" not in saved
    # the resumed run adds to them instead of starting from zero
    monkeypatch.setattr(rep, "_call", lambda argv, log: "")
    monkeypatch.setattr("model_inspector.report.write_report", lambda out_dir, manifest: None)
    again = reproduce(["m"], scale="demo", out_dir=out, steps=["tasks", "formats", "skip"])
    assert again["models"]["m"]["tasks"]["seconds"] >= saved["tasks"]["seconds"] and "skip" in again["models"]["m"]
