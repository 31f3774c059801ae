"""The lens explorer: one self-contained HTML file, tested in a real browser (Debian's chromium and
chromedriver, driven by Selenium) at 800 px and 1400 px on a small real run of SmolLM2, and on synthetic
MMLU-like and formats-like files. Screenshots go to a tmp folder the tests print (and to $EXPLORER_SHOTS)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import run_script

from model_inspector.results import Results

ROOT = Path(__file__).resolve().parents[1]
WIDTHS = (800, 1400)


# ------------------------------------------------------------------------------------------- helpers
def open_browser(tmp_path: Path):
    """Headless Chromium (Debian's) through Selenium, browser log kept."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
                 "--window-size=1400,1000", f"--user-data-dir={tmp_path / 'profile'}"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"), options=opts)


def load_page(driver, html_path: Path, width: int) -> None:
    driver.set_window_size(width, 1000)
    driver.get(html_path.as_uri())
    assert driver.execute_script("return innerWidth") == width


def screenshot(driver, path: Path) -> None:
    """The whole page (the window grown to the document's height), also copied to $EXPLORER_SHOTS if set."""
    width = driver.execute_script("return innerWidth")
    driver.set_window_size(width, driver.execute_script("return document.documentElement.scrollHeight") + 20)
    driver.save_screenshot(str(path))
    if os.environ.get("EXPLORER_SHOTS"):
        Path(os.environ["EXPLORER_SHOTS"]).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(os.environ["EXPLORER_SHOTS"]) / path.name)


def severe(driver) -> list:
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


#: Layout facts: page overflow, section overflow, the two plots' boxes, every tick and axis label inside its svg.
LAYOUT_JS = """
const r = e => e.getBoundingClientRect(), P = r(document.getElementById('profiles').closest('section')),
  E = r(document.getElementById('emb').closest('section'));
const clipped = [];
for (const svg of document.querySelectorAll('svg')) { const b = r(svg);
  for (const t of svg.querySelectorAll('text')) { const q = r(t);
    if (q.left < b.left - 0.5 || q.right > b.right + 0.5 || q.top < b.top - 0.5 || q.bottom > b.bottom + 0.5) clipped.push(t.textContent); } }
const ticks = [...document.querySelectorAll('svg')].map(s => ['x', 'y'].map(a =>
  [...s.querySelectorAll('text.tick.' + a)].map(t => t.textContent))).flat().filter(a => a.length > 1);
return {page: document.documentElement.scrollWidth, inner: innerWidth, clipped, ticks,
  overflowing: [...document.querySelectorAll('section, header, .bar')].filter(s => s.scrollWidth > s.clientWidth + 1).map(s => s.id || s.className),
  prof: [P.left, P.top, P.right, P.bottom], emb: [E.left, E.top, E.right, E.bottom]};
"""


def check_layout(driver, width: int) -> None:
    lay = driver.execute_script(LAYOUT_JS)
    assert lay["page"] <= lay["inner"] == width, lay  # no horizontal scrolling of the page
    assert not lay["overflowing"], lay  # wide content scrolls inside its own box
    assert not lay["clipped"], lay  # every tick, axis title and label lies inside its svg
    for labels in lay["ticks"]:  # "nice" ticks: one step of 1, 2 or 5 x 10^k, the labels exactly its multiples
        values = [float(v) for v in labels]
        steps = np.diff(values)
        assert np.allclose(steps, steps[0], rtol=1e-6), labels
        mantissa = steps[0] / 10 ** np.floor(np.log10(steps[0]))
        assert round(mantissa, 6) in (1, 2, 5), labels
        assert np.allclose(np.round(np.array(values) / steps[0]), np.array(values) / steps[0], atol=1e-6), labels
    p, e = lay["prof"], lay["emb"]
    if width < 900:  # one column: the sample map below the profiles, same left edge
        assert abs(p[0] - e[0]) < 1 and e[1] >= p[3], lay
    else:  # two columns side by side
        assert abs(p[1] - e[1]) < 1 and e[0] >= p[2], lay


def legend_counts(driver, box: str) -> dict:
    text = driver.find_element("id", box).text
    return {m.group(1).strip(): int(m.group(2)) for m in re.finditer(r"(.+?) \(n=(\d+)\)\s*", text)}


def check_counts(driver, n_all: int) -> int:
    """Legends agree with the points drawn and the count line; returns the number shown."""
    shown = driver.execute_script("return document.querySelectorAll('#emb circle.pt:not(.dim)').length")
    dim = driver.execute_script("return document.querySelectorAll('#emb circle.pt.dim').length")
    assert shown + dim == n_all
    assert driver.find_element("id", "count").text == f"{shown} of {n_all} samples match"
    emb = legend_counts(driver, "elegend")
    assert emb.pop("filtered out", 0) == dim and sum(emb.values()) == shown, emb
    assert sum(legend_counts(driver, "plegend").values()) == shown
    return shown


def select(driver, element_id: str, text: str) -> None:
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element("id", element_id)).select_by_visible_text(text)


# ------------------------------------------------------------------------------------------- the real run
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


@pytest.mark.slow
def test_explorer_in_a_real_browser(real_run, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    res = Results.load(real_run)
    n = len(res)
    vocab = {int(k): v for k, v in res.metadata["token_strings"].items()}
    html_path = tmp_path / "report.html"
    proc = subprocess.run([sys.executable, "-m", "model_inspector.explore", str(real_run), "--out", str(html_path)],
                          check=False, capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    text = html_path.read_text()
    assert "http://" not in text.replace("http://www.w3.org", "") and "https://" not in text  # works offline
    driver = open_browser(tmp_path)
    try:
        for width in WIDTHS:
            load_page(driver, html_path, width)
            points = driver.find_elements(By.CSS_SELECTOR, "#emb circle.pt")
            assert len(points) == n == 48
            check_layout(driver, width)
            # default colouring: the task class, three colours, legends in both plots
            assert driver.find_element(By.ID, "label").get_attribute("value") == "0"
            assert "task" in driver.find_element(By.CSS_SELECTOR, "#label option:checked").text
            assert legend_counts(driver, "plegend") == {"continuation": 16, "counting": 16, "semantic": 16}
            # expansion and pruning: one row per class, the top transitions marked in the plot
            assert len(driver.find_elements(By.CSS_SELECTOR, "#dtable tbody tr")) == 3
            marks = [t.text for t in driver.find_elements(By.CSS_SELECTOR, "#strat svg text") if t.text in "▲▼"]
            assert marks.count("▲") == 3 and marks.count("▼") == 3
            check_counts(driver, n)
            assert "greedy" in driver.find_element(By.ID, "subtitle").text
            # the first sample is open, numbered from 1; the grid's headers say layer and depth; a colour bar with unit
            assert driver.find_element(By.ID, "stitle").text == f"Sample 1 of {n}"
            heads = [th.text for th in driver.find_elements(By.CSS_SELECTOR, "#grid thead tr.layer th")]
            depths = [th.text for th in driver.find_elements(By.CSS_SELECTOR, "#grid thead tr.depth th")]
            assert heads == ["layer"] + [str(k) for k in range(1, 31)] and depths[1] == "0.03" and depths[-1] == "1.00"
            assert "entropy [nats]" in driver.find_element(By.ID, "colorbar").text
            screenshot(driver, tmp_path / f"ts_{width}_overview.png")
        # hovering a point (one no other point covers) shows its number and prompt
        load_page(driver, html_path, 1400)
        i = driver.execute_script(
            "for (const c of document.querySelectorAll('#emb circle.pt')) { const r = c.getBoundingClientRect();"
            " if (document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2) === c && +c.dataset.i > 6)"
            " return +c.dataset.i; }")
        point = driver.find_element(By.CSS_SELECTOR, f"#emb circle.pt[data-i='{i}']")
        ActionChains(driver).move_to_element(point).perform()
        tip = driver.find_element(By.ID, "tip")
        assert tip.is_displayed() and tip.text.startswith(f"sample {i + 1} ") and " ".join(res["input"][i].split())[:60] in tip.text
        # clicking opens the grid: 3 generated tokens x 30 layers, numbered from 1
        point.click()
        assert driver.find_element(By.ID, "stitle").text == f"Sample {i + 1} of {n}"
        rows = driver.find_elements(By.CSS_SELECTOR, "#grid tbody tr")
        assert len(rows) == 3 and len(rows[0].find_elements(By.TAG_NAME, "td")) == 30
        assert driver.find_element(By.ID, "sprompt").get_attribute("textContent") == res["input"][i]
        for t, row in enumerate(rows):
            th = row.find_element(By.CSS_SELECTOR, "th.gen")
            token = vocab[int(res["tokens"][i][t])]
            shown = token.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥")
            assert th.get_attribute("textContent") == shown != "" and "\\" not in shown  # visible, unescaped
            # greedy: the last layer's top lens token is the generated token
            assert th.get_attribute("data-id") == row.find_elements(By.TAG_NAME, "td")[-1].get_attribute("data-id")
        cell = rows[0].find_elements(By.TAG_NAME, "td")[-1]
        assert "top token" in cell.get_attribute("title") and "p = " in cell.get_attribute("title")
        assert "nats" in cell.get_attribute("title")
        # the filter and the search narrow every view; legends follow
        select(driver, "class", "counting")
        assert check_counts(driver, n) == 16 and legend_counts(driver, "elegend") == {"counting": 16, "filtered out": 32}
        driver.find_element(By.ID, "search").send_keys("How many words")
        assert check_counts(driver, n) == 8
        driver.find_element(By.ID, "search").send_keys("zzz no such prompt")
        assert check_counts(driver, n) == 0 and legend_counts(driver, "plegend") == {}
        assert "No sample matches" in driver.find_element(By.ID, "profiles").text
        driver.find_element(By.ID, "search").clear()
        driver.execute_script("document.getElementById('search').dispatchEvent(new Event('input'))")
        select(driver, "class", "all")
        assert check_counts(driver, n) == n
        # colouring by the 24 prompt labels is refused in one visible line; everything grey
        select(driver, "label", "prompt (24)")
        note = driver.find_element(By.ID, "colnote")
        assert note.is_displayed() and "24 classes" in note.text and "20 colours" in note.text
        fills = driver.execute_script("return [...new Set([...document.querySelectorAll('#emb circle.pt')].map(c => c.getAttribute('fill')))]")
        assert len(fills) == 1 and legend_counts(driver, "plegend") == {"all shown samples": n}
        select(driver, "label", "variant (4)")
        assert not note.is_displayed() and len(legend_counts(driver, "plegend")) == 4
        # the other metric and PCA redraw with nice ticks, nothing clipped
        select(driver, "metric", "renyi_2")
        select(driver, "embkind", "PCA")
        assert "renyi_2 [nats]" in driver.find_element(By.ID, "colorbar").text
        assert "% of variance" in driver.find_element(By.ID, "emb").text
        check_layout(driver, 1400)
        assert "_tm_prompt_k5_3fold_overall.csv" in driver.find_element(By.ID, "evaluation").text
        assert not severe(driver)
        driver.execute_script("document.getElementById('sample').scrollIntoView()")
        screenshot(driver, tmp_path / "ts_1400_after_clicks.png")
    finally:
        driver.quit()
    print(f"screenshots in {tmp_path}")


# ------------------------------------------------------------------------------------------- synthetic files
LONG = "unbelievably_long_token"
TOKENS = [" ", "\n", "\t", " the", "'d", '"q"', LONG, "A", " B", ""]


def mmlu_like(path: Path, n: int = 48, t: int = 4, layers: int = 6) -> None:
    """An MMLU-shaped results .npz (greedy; labels subject, answer, predicted with empty values, correct) and
    run_tests.py-shaped CSVs beside it: an overall row and 39 per-subject rows, all skipped."""
    rng = np.random.default_rng(0)
    subjects = [f"subject_{k:02d}" for k in range(39)]
    correct = [int(i % 4 == 0) for i in range(n)]
    top_ids = [rng.integers(0, len(TOKENS), (t, layers, 1)).astype(np.int32) for _ in range(n)]
    top_ids[0] = (np.arange(t * layers) % len(TOKENS)).reshape(t, layers, 1).astype(np.int32)  # every token in sample 1
    cols = {
        "entropy": [(np.linspace(1, 3, layers) + c + rng.normal(0, 0.2, (t, layers))).astype(np.float32) for c in correct],
        "tokens": [rng.integers(0, len(TOKENS), t) for _ in range(n)],
        "top_ids": top_ids,
        "top_probs": [rng.random((t, layers, 1)).astype(np.float16) for _ in range(n)],
        "input": [f"Subject: {subjects[i % 39]}.\n\nQuestion {i + 1}?" for i in range(n)],
        "text": [" A. 1"] * n, "model": ["m"] * n, "subject": [subjects[i % 39] for i in range(n)],
        "answer": ["ABCD"[i % 4] for i in range(n)], "predicted": ["" if i % 3 else "ABCD"[i % 4] for i in range(n)],
        "correct": correct, "question_index": list(range(n)), "group": [f"g{i % 12}" for i in range(n)],
    }
    meta = {"format": "entropy-lens-results", "format_version": 4, "complete": True, "metrics": {"entropy": "-sum p log p [nats]"},
            "token_strings": {str(k): s for k, s in enumerate(TOKENS)},
            "identity": {"model": "m", "dataset": "mmlu", "max_len": t, "sample": False, "temperature": None, "seed": 0}}
    Results(cols, meta).to_npz(path)
    import pandas as pd

    stem = str(path.with_suffix(""))
    pd.DataFrame([{"model_roc_auc": 0.61, "baseline_roc_auc": 0.5, "model_auc_by_fold": "[0.61234, 0.6]"}]).to_csv(
        f"{stem}_tm_overall.csv", index=False)
    pd.DataFrame([{"subject": s, "n_samples": 1, "correct": 0.0, "note": "skipped: a class has fewer than 2 samples"}
                  for s in subjects]).to_csv(f"{stem}_tm_subject.csv", index=False)


def formats_like(path: Path, prompts: int = 12, windows: int = 4, layers: int = 6) -> None:
    """A formats-shaped results .npz: window means [window, layer] of two metrics, no tokens."""
    rng = np.random.default_rng(1)
    fmt = [["chat", "poem", "scientific"][i % 3] for i in range(prompts)]
    cols = {"entropy": [rng.random((windows, layers), dtype=np.float32) * 3 for _ in range(prompts)],
            "renyi_0.5": [rng.random((windows, layers), dtype=np.float32) * 4 for _ in range(prompts)],
            "input": [f"Write a {f} about topic {i // 3}" for i, f in enumerate(fmt)], "text": ["..."] * prompts,
            "format": fmt, "topic": [f"topic {i // 3}" for i in range(prompts)], "model": ["m"] * prompts,
            "sample_index": list(range(prompts))}
    meta = {"format": "entropy-lens-results", "layout": "format_records", "num_windows": windows, "alphas": [0.5, 1.0],
            "metrics": {"entropy": "-sum p log p [nats]", "renyi_0.5": "log(sum p^0.5) / (1 - 0.5) [nats]"},
            "identity": {"model": "m", "dataset": "formats", "max_len": 8 * windows, "sample": False, "temperature": None}}
    Results(cols, meta).to_npz(path)


def payload_of(page: str) -> dict:
    return json.loads(page.split('<script id="data" type="application/json">')[1].split("</script>")[0])


def test_explorer_page_data(tmp_path):
    """The page holds every sample, readable labels, the default colouring and the quantised profiles."""
    import base64

    from model_inspector.explore import build_report

    mmlu_like(tmp_path / "m.npz")
    res = Results.load(tmp_path / "m.npz")
    p = payload_of(build_report(tmp_path / "m.npz"))
    assert (p["N"], p["T"], p["L"]) == (48, 4, 6) and p["defaultLabel"] == "correct"
    labels = {lab["name"]: lab["values"] for lab in p["labels"]}
    assert set(labels) == {"answer", "predicted", "correct", "group"}  # subject: too many classes; indexes hidden
    assert labels["correct"][:2] == ["correct", "incorrect"] and labels["predicted"][1] == "(none)"
    assert p["summary"]["decoding"] == "greedy" and "temperature" not in json.dumps(p["summary"])
    assert p["summary"]["shape_text"] == "48 samples × 4 generated tokens × 6 layers"
    m = p["metrics"][0]
    assert (m["name"], m["unit"]) == ("entropy", "nats")
    q = np.frombuffer(base64.b64decode(m["data"]), dtype=np.uint16).reshape(48, 4, 6)
    np.testing.assert_allclose(m["lo"] + q * m["scale"], res.profiles("entropy"), atol=m["scale"])
    top = np.frombuffer(base64.b64decode(p["top"]), dtype=np.uint16).reshape(48, 4, 6)
    assert [p["vocab"][k] for k in top[0, 0]] == [TOKENS[k] for k in res["top_ids"][0][0, :, 0]]
    subject = next(e for e in p["evaluations"] if e["name"].endswith("_tm_subject.csv"))
    assert subject["rows"] == [] and "39 subjects skipped (a class has fewer than 2 samples): " in subject["note"]
    overall = next(e for e in p["evaluations"] if e["name"].endswith("_tm_overall.csv"))
    assert overall["rows"][0][overall["columns"].index("model_auc_by_fold")] == "[0.612, 0.6]"
    formats_like(tmp_path / "f.npz")
    p = payload_of(build_report(tmp_path / "f.npz", metric="renyi_0.5"))
    assert p["summary"]["shape_text"] == "12 prompts × 4 windows of 8 tokens × 6 layers" and p["defaultLabel"] == "format"
    assert p["summary"]["top_note"] == "no top lens tokens in this file (formats runs keep window means)"
    assert [m["name"] for m in p["metrics"]] == ["renyi_0.5", "entropy"] and p["top"] is None


def test_explorer_refuses_bad_input(tmp_path):
    from model_inspector.errors import UserError
    from model_inspector.explore import build_report

    formats_like(tmp_path / "f.npz")
    with pytest.raises(UserError, match="no metric 'renyi_2'.*--metric"):
        build_report(tmp_path / "f.npz", metric="renyi_2")
    with pytest.raises(UserError, match="--max_samples"):
        build_report(tmp_path / "f.npz", max_samples=0)
    p = payload_of(build_report(tmp_path / "f.npz", max_samples=5))
    assert p["N"] == 5 and p["summary"]["samples"] == 12 and p["summary"]["shown"] == 5
    res = Results.load(tmp_path / "f.npz")  # a constant metric and a NaN: the range is the values', not 65534 steps
    res.columns["entropy"] = [np.full((4, 6), 2.0, np.float32) for _ in range(len(res))]
    res["entropy"][0][0, 0] = np.nan
    res.to_npz(tmp_path / "c.npz")
    p = payload_of(build_report(tmp_path / "c.npz"))
    assert (p["metrics"][0]["lo"], p["metrics"][0]["hi"]) == (2.0, 2.0)
    assert [e["name"] for e in p["emb"]] == ["PCA"]  # identical mean profiles: no t-SNE (scikit-learn crashes on them)


@pytest.mark.slow
def test_mmlu_and_formats_pages_in_a_real_browser(tmp_path):
    from selenium.webdriver.common.by import By

    from model_inspector.explore import write_report

    mmlu_like(tmp_path / "mmlu.npz")
    formats_like(tmp_path / "formats.npz")
    pages = {k: write_report(tmp_path / f"{k}.npz") for k in ("mmlu", "formats")}
    driver = open_browser(tmp_path)
    try:
        for width in WIDTHS:
            load_page(driver, pages["mmlu"], width)
            check_layout(driver, width)
            assert legend_counts(driver, "plegend") == {"correct": 12, "incorrect": 36}
            check_counts(driver, 48)
            body = driver.find_element(By.TAG_NAME, "body").text
            assert "greedy" in body and "null" not in body and "temperature" not in body
            assert "39 subjects skipped (a class has fewer than 2 samples): subject_00, subject_01" in body
            assert len(driver.find_elements(By.CSS_SELECTOR, "#evaluation table.ev")) == 1  # the overall table only
            # full tokens (a CSS ellipsis at most), title tooltips, visible whitespace
            cells = driver.find_elements(By.CSS_SELECTOR, "#grid tbody td")
            texts = {c.get_attribute("textContent") for c in cells}
            assert LONG in texts and "␣the" in texts and {"␣", "↵", "⇥", "'d", '"q"'} & texts
            assert all(c.get_attribute("title") for c in cells)
            screenshot(driver, tmp_path / f"mmlu_{width}.png")
            select(driver, "label", "predicted (5)")
            assert legend_counts(driver, "elegend")["(none)"] == 32
            select(driver, "label", "group (12)")  # more than 10 classes: 12 distinct colours, no refusal
            fills = driver.execute_script("return [...document.querySelectorAll('#emb circle.pt')].map(c => c.getAttribute('fill'))")
            assert len(set(fills)) == 12 and not driver.find_element(By.ID, "colnote").is_displayed()
            assert len(legend_counts(driver, "plegend")) == 12
            load_page(driver, pages["formats"], width)
            check_layout(driver, width)
            assert "12 prompts × 4 windows of 8 tokens" in driver.find_element(By.ID, "subtitle").text
            assert legend_counts(driver, "plegend") == {"chat": 4, "poem": 4, "scientific": 4}
            assert driver.find_element(By.ID, "topnote").text == ("no top lens tokens in this file "
                                                                  "(formats runs keep window means)")
            rows = [th.text for th in driver.find_elements(By.CSS_SELECTOR, "#grid tbody th")]
            assert rows == ["window 1", "window 2", "window 3", "window 4"]
            screenshot(driver, tmp_path / f"formats_{width}.png")
            assert not severe(driver)
    finally:
        driver.quit()
    print(f"screenshots in {tmp_path}")


def test_evaluations_of_another_version_of_the_file_are_left_out(tmp_path):
    """An evaluation CSV records the identity and sample count of the file it evaluated; the explorer shows it
    only beside that file, and says why it leaves the others out (an evaluation of a partial run, say)."""
    import pandas as pd

    from model_inspector.explore import explorer_data
    from model_inspector.run.config import RunIdentity

    path = tmp_path / "r.npz"
    rng = np.random.default_rng(0)
    ident = {"model": "m", "max_len": 2}
    Results({"entropy": [rng.random((2, 3)).astype(np.float32) for _ in range(6)], "task": ["a", "b"] * 3},
            {"format": "entropy-lens-results", "identity": ident, "complete": True}).to_npz(path)
    good = pd.DataFrame([{"model_roc_auc": 0.7, "results_identity": RunIdentity(ident).digest(), "results_n_samples": 6}])
    good.to_csv(tmp_path / "r_tm_task_k5_3fold_overall.csv", index=False)
    good.assign(results_n_samples=4).to_csv(tmp_path / "r_tm_task_k5_2fold_overall.csv", index=False)
    (tmp_path / "r_tm_empty_overall.csv").write_text("")
    (tmp_path / "elsewhere").mkdir()
    good.to_csv(tmp_path / "elsewhere" / "r_tm_task_k3_3fold_overall.csv", index=False)
    evs = {e["name"]: e for e in explorer_data(path, eval_dirs=[tmp_path / "elsewhere"]).evaluations}
    assert evs["r_tm_task_k5_3fold_overall.csv"]["rows"] == [[0.7]] and not evs["r_tm_task_k5_3fold_overall.csv"]["note"]
    assert "another version of this file (4 samples" in evs["r_tm_task_k5_2fold_overall.csv"]["note"]
    assert "unreadable" in evs["r_tm_empty_overall.csv"]["note"]
    assert evs["r_tm_task_k3_3fold_overall.csv"]["rows"] == [[0.7]]


def test_an_unfinished_run_is_said_on_the_page(tmp_path):
    from model_inspector.explore import explorer_data

    path = tmp_path / "r.npz"
    rng = np.random.default_rng(0)
    Results({"entropy": [rng.random((2, 3)).astype(np.float32) for _ in range(4)], "task": ["a", "b"] * 2},
            {"format": "entropy-lens-results", "complete": False, "n_total": 10}).to_npz(path)
    assert "is incomplete (4 of 10 samples" in explorer_data(path).summary["partial"]


def test_evaluation_tables_put_the_numbers_first_and_descriptions_last():
    from model_inspector.explore import tidy_evaluation

    t = tidy_evaluation({"name": "x_tm_prompt_k9_5fold_controls.csv", "note": None,
                         "columns": ["feature", "description", "n_samples", "roc_auc", "p_vs_baseline", "note"],
                         "rows": [["profile", "mean profile", 120, 0.8, 0.003, "partial"],
                                  ["last_layer", "the last layer", 120, 0.7, 0.0015, None]]})
    assert t["columns"] == ["feature", "roc_auc", "p_vs_baseline", "n_samples", "description", "note"]
    assert t["rows"][0] == ["profile", 0.8, 0.003, 120, "mean profile", "partial"]
