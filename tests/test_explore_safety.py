"""The explorer treats results files as untrusted input: a pickle-free .npz whose prompts, generated texts, token
strings, label values, label names, metric names, metadata and evaluation CSV hold markup and script never gets
anything run, in the page's source (JSON block, no HTML sinks) or in a real browser (after clicking and focusing
everything)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from test_explore import check_layout, load_page, open_browser, screenshot, severe

from model_inspector.results import Results

PWN = "window.__pwned=1"
HOSTILE = ["'d", '"', "<!--<script>", "</script>", f"<img src=x onerror={PWN}>", f"x' autofocus onfocus='{PWN}' x='",
           "\u2028", "\u2029", f'"><svg onload="{PWN}">', f"</script><script>{PWN}</script>", "__proto__",
           f"javascript:{PWN}", "<style>*{display:none}</style>", "&lt;b&gt;"]
METRIC = f"<img src=x onerror={PWN}>'d"
LABELS = (f"x' autofocus onfocus='{PWN}' x='", "</script><!--<script>", "__proto__")
N, T, LAYERS = 12, 3, 5


def hostile_file(path: Path) -> Results:
    """A pickle-free .npz with hostile text everywhere the page shows text, and an evaluation CSV beside it."""
    rng = np.random.default_rng(0)
    h = HOSTILE
    cols = {
        "entropy": [rng.random((T, LAYERS), dtype=np.float32) * 4 for _ in range(N)],
        METRIC: [rng.random((T, LAYERS), dtype=np.float32) for _ in range(N)],
        "tokens": [np.arange(i, i + T) % len(h) for i in range(N)],
        "top_ids": [(np.arange(T * LAYERS).reshape(T, LAYERS, 1) + i) % len(h) for i in range(N)],
        "top_probs": [rng.random((T, LAYERS, 1)).astype(np.float16) for _ in range(N)],
        "input": [f"{h[i % len(h)]} prompt {i} {h[(i + 4) % len(h)]}" for i in range(N)],
        "text": [f"{h[(i + 3) % len(h)]} generated {h[(i + 5) % len(h)]}" for i in range(N)],
        LABELS[0]: [h[[4, 5, 9, 1][i % 4]] for i in range(N)],
        LABELS[1]: [h[[2, 3, 8][i % 3]] for i in range(N)],
        LABELS[2]: [h[[10, 6][i % 2]] for i in range(N)],
        "model": ["m"] * N,
    }
    meta = {"format": "entropy-lens-results", "format_version": 4, "complete": h[4], "created": h[2],
            "token_strings": {str(k): s for k, s in enumerate(h)},
            "metrics": {"entropy": f"{h[4]} [nats{h[3]}]", METRIC: h[9]},
            "identity": {"model": h[5], "dataset": h[3], "model_fingerprint": h[8], "sample": h[9], "temperature": h[4],
                         "dtype": h[2], "seed": h[6]}}
    res = Results(cols, meta)
    res.to_npz(path)
    import pandas as pd

    pd.DataFrame({h[4]: [h[5], h[9]], h[3]: [1.5, float("nan")], "note": ["ok", f"skipped: {h[4]}"],
                  "subject": [h[8], h[2]]}).to_csv(path.with_name(f"{path.stem}_tm_subject.csv"), index=False)
    return res


def blocks(page: str) -> tuple[str, str]:
    """(the JSON data block, the page's script)."""
    data = page.split('<script id="data" type="application/json">', 1)[1].split("</script>", 1)[0]
    script = page.rsplit("<script>", 1)[1].rsplit("</script>", 1)[0]
    return data, script


#: HTML-string sinks and code-from-string calls the page's script must never contain.
SINKS = [r"innerHTML", r"outerHTML", r"insertAdjacentHTML", r"document\.write", r"\beval\s*\(", r"new\s+Function",
         r"set(Timeout|Interval)\s*\(\s*[\"'`]", r"srcdoc", r"createContextualFragment", r"DOMParser", r"javascript:",
         r"setAttribute\(\s*[\"'`]on", r"[{,]\s*[\"']?on[a-z]+[\"']?\s*:"]


def test_page_source_is_safe_by_construction(tmp_path):
    from model_inspector.explore import build_report

    res = hostile_file(tmp_path / "hostile.npz")
    assert set(LABELS) <= set(res.label_keys) and METRIC in Results.load(tmp_path / "hostile.npz").metric_keys
    page = build_report(tmp_path / "hostile.npz")
    assert page.count("<script") == 2 and page.count("</script>") == 2  # data block + the page's own script
    assert page.count("<!--") == 0 and page.count("<img") == 0
    data, script = blocks(page)
    assert not re.search("[<>&\u2028\u2029]", data)  # nothing in the data can close or comment out a tag
    for sink in SINKS:
        assert not re.search(sink, script), sink
    payload = json.loads(data)  # and the data comes back intact
    assert payload["prompts"] == res["input"] and payload["texts"] == res["text"]
    assert [m["name"] for m in payload["metrics"]] == ["entropy", METRIC]
    assert {lab["name"] for lab in payload["labels"]} == set(LABELS)
    assert payload["vocab"] == HOSTILE and payload["summary"]["model"] == HOSTILE[5]
    ev = payload["evaluations"][0]
    # the hostile cell arrives intact under its hostile column name (the headline columns such as subject go first)
    assert ev["note"].endswith(f"1 subject skipped ({HOSTILE[4]}): {HOSTILE[2]}")
    assert ev["rows"][0][ev["columns"].index(HOSTILE[4])] == HOSTILE[5] and ev["columns"][0] == "subject"
    assert ev["note"].startswith("this CSV records no results identity")  # written by hand: no identity columns
    assert "<title>Entropy-Lens explorer: hostile.npz</title>" in page


ATTACKS_JS = """
const bad = [...document.querySelectorAll('*')].filter(e => [...e.attributes].some(a => /^on/i.test(a.name)));
return {on: bad.map(e => e.tagName), img: document.getElementsByTagName('img').length,
  scripts: document.getElementsByTagName('script').length, iframes: document.getElementsByTagName('iframe').length,
  styles: document.getElementsByTagName('style').length, pwned: window.__pwned === undefined ? null : String(window.__pwned),
  title: document.title};
"""


def check_clean(driver) -> None:
    state = driver.execute_script(ATTACKS_JS)
    assert state == {"on": [], "img": 0, "scripts": 2, "iframes": 0, "styles": 1, "pwned": None,
                     "title": "Entropy-Lens explorer: hostile.npz"}, state


@pytest.mark.slow
def test_hostile_file_in_a_real_browser(tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    from model_inspector.explore import write_report

    res = hostile_file(tmp_path / "hostile.npz")
    page = write_report(tmp_path / "hostile.npz")
    driver = open_browser(tmp_path)
    try:
        load_page(driver, page, 1400)
        check_clean(driver)
        assert len(driver.find_elements(By.CSS_SELECTOR, "#emb circle.pt")) == N
        assert driver.find_element(By.ID, "title").text == "Entropy-Lens explorer: hostile.npz"
        for i in range(N):  # click every point: the sample view shows the hostile text as text
            driver.execute_script("arguments[0].scrollIntoView({block: 'center'})",
                                  driver.find_element(By.CSS_SELECTOR, f"#emb circle.pt[data-i='{i}']"))
            driver.find_element(By.CSS_SELECTOR, f"#emb circle.pt[data-i='{i}']").click()
            assert driver.find_element(By.ID, "sprompt").get_attribute("textContent") == res["input"][i]
            assert driver.find_element(By.ID, "stext").get_attribute("textContent") == res["text"][i]
        cells = driver.find_elements(By.CSS_SELECTOR, "#grid td, #grid th")
        assert len(cells) == (T + 2) * (LAYERS + 1)
        for cell in cells:  # hover and click every cell of the last sample
            driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", cell)
            ActionChains(driver).move_to_element(cell).click().perform()
        titles = [c.get_attribute("title") for c in driver.find_elements(By.CSS_SELECTOR, "#grid td")]
        assert any(json.dumps(HOSTILE[4]) in t for t in titles)  # the token shown as a JSON string in the tooltip
        for sid in ("metric", "label", "embkind", "class"):  # every option of every select, hostile names included
            for k in range(len(Select(driver.find_element(By.ID, sid)).options)):
                Select(driver.find_element(By.ID, sid)).select_by_index(k)
                check_clean(driver)
        Select(driver.find_element(By.ID, "label")).select_by_visible_text(f"{LABELS[0]} (4)")
        assert HOSTILE[4] in driver.find_element(By.ID, "elegend").text  # class names shown literally
        for element in driver.find_elements(By.CSS_SELECTOR, "input, select, button"):  # focus every control
            driver.execute_script("arguments[0].focus()", element)
        search = driver.find_element(By.ID, "search")
        search.send_keys(HOSTILE[4])
        assert driver.find_element(By.ID, "count").text == "2 of 12 samples match"
        search.send_keys("\t")
        driver.find_element(By.ID, "next").click()
        check_clean(driver)
        assert HOSTILE[8] in driver.find_element(By.ID, "evaluation").text  # the CSV's cells shown as text
        check_layout(driver, 1400)  # long hostile names are cut to fit, not clipped
        assert not severe(driver)
        screenshot(driver, tmp_path / "hostile_1400.png")
    finally:
        driver.quit()
    print(f"screenshots in {tmp_path}")
