"""Output-format pipeline: generation on a tiny model, classification, overwrite refusal."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
from helpers import run_script

ROOT = Path(__file__).resolve().parents[1]


def test_pipeline_end_to_end(tiny_dir, tmp_path):
    out = tmp_path / "formats.pkl"
    run_script("generate_format_dataset.py", "--model", tiny_dir, "--n_topics", 4, "--max_len", 6, "--num_windows", 3,
        "--out", out, "--batch_size", 5, "--no_progress", "--update_steps", 5)
    from model_inspector import Results

    df = Results.load(out).to_records()  # the records layout's one reader
    assert len(df) == 4 * 3 * 3
    assert sorted(df["alpha"].unique()) == [0.5, 1.0, 5.0]
    assert df["entropy"].iloc[0].shape == (3, 3)
    assert set(df["format"]) == {"chat", "poem", "scientific"}
    assert df["input"].iloc[0] == "Simulate a chat log about a drug"
    # Rényi entropy does not increase with alpha
    piv = {a: np.stack(df[df["alpha"] == a]["entropy"]) for a in (0.5, 1.0, 5.0)}
    assert (piv[0.5] >= piv[1.0] - 1e-5).all() and (piv[1.0] >= piv[5.0] - 1e-5).all()
    assert df.attrs["metadata"]["alphas"] == [0.5, 1.0, 5.0] and df.attrs["metadata"]["complete"] is True
    summary = tmp_path / "s.json"
    proc = run_script("classify_formats.py", "-d", out, "-a", 0.5, 1, 5, "-k", 3, "--folds", 3, "--json", summary)
    assert "ROC-AUC" in proc.stdout
    s = json.loads(summary.read_text())
    assert set(s) == {"0.5", "1.0", "5.0"} and {"cv_accuracy_mean", "cv_accuracy_std", "roc_auc"} <= set(s["1.0"]["3"])
    # the file name carries the data file, k used and folds: two models' matrices in one folder never collide
    assert (tmp_path / "plots" / "formats_confusion_alpha1_k3_3fold.png").exists()
    # refusing to overwrite leaves the file byte-identical
    before = out.read_bytes()
    proc = run_script("generate_format_dataset.py", "--model", tiny_dir, "--n_topics", 4, "--max_len", 6,
               "--num_windows", 3, "--out", out, check=False)
    assert proc.returncode == 2 and "--overwrite" in proc.stderr and "Traceback" not in proc.stderr
    assert out.read_bytes() == before
    # the records file reads back as Results (one reader for both layouts); a resume checks its identity
    from model_inspector import Results

    res = Results.load(out)
    assert len(res) == 12 and res.metadata["layout"] == "format_records" and res["format"][:3] == ["chat", "poem",
                                                                                                 "scientific"]
    again = run_script("generate_format_dataset.py", "--model", tiny_dir, "--n_topics", 4, "--max_len", 6,
                       "--num_windows", 3, "--out", out, "--batch_size", 5, "--resume", "--no_progress")
    assert again.returncode == 0 and out.read_bytes() == before
    other = run_script("generate_format_dataset.py", "--model", tiny_dir, "--n_topics", 4, "--max_len", 7,
                       "--num_windows", 3, "--out", out, "--batch_size", 5, "--resume", check=False)
    assert other.returncode == 2 and "max_len: file 6 vs now 7" in other.stderr


def _synthetic(path, separable: bool, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    formats = ["chat", "poem", "scientific"]
    for i in range(90):
        f = formats[i % 3]
        base = rng.normal(size=(4, 6))
        if separable:
            base += 5 * (i % 3)
        rows.append({"sample": i, "format": f if separable else formats[rng.integers(3)], "topic": f"t{i}",
                     "alpha": 1.0, "entropy": base, "text": ""})
    pd.DataFrame(rows).to_pickle(path)


def test_classifier_separable_and_shuffled(tmp_path):
    sep, shuf = tmp_path / "sep.pkl", tmp_path / "shuf.pkl"
    _synthetic(sep, True)
    _synthetic(shuf, False)
    for path, lo, hi in ((sep, 0.97, 1.0), (shuf, 0.35, 0.65)):
        js = tmp_path / (path.stem + ".json")
        run_script("classify_formats.py", "-d", path, "-k", 5, "--json", js)
        r = json.loads(js.read_text())["1.0"]["5"]
        assert lo <= r["roc_auc"] <= hi, (path.name, r["roc_auc"])
    assert json.loads((tmp_path / "shuf.json").read_text())["1.0"]["5"]["cv_accuracy_mean"] < 0.5


def test_bad_arguments_are_one_line(tmp_path):
    proc = run_script("classify_formats.py", "-d", tmp_path / "none.pkl", check=False)
    assert proc.returncode == 2 and proc.stderr.startswith("error: formats file not found")
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(b"not a pickle")
    proc = run_script("classify_formats.py", "-d", bad, check=False)
    assert proc.returncode == 2 and "not a readable" in proc.stderr and "Traceback" not in proc.stderr
    _synthetic(tmp_path / "s.pkl", True)
    proc = run_script("classify_formats.py", "-d", tmp_path / "s.pkl", "-a", 7, check=False)
    assert proc.returncode == 2 and "alpha 7.0 not in" in proc.stderr
    proc = run_script("generate_format_dataset.py", "--num_windows", 9, "--max_len", 4, check=False)
    assert proc.returncode == 2 and "exceeds --max_len" in proc.stderr
    proc = run_script("generate_format_dataset.py", "--alphas", "-1", check=False)
    assert proc.returncode == 2 and "--alphas must be >= 0" in proc.stderr
