"""The controls a reviewer asks for, in the same folds as the paper's feature: the last layer alone, the profile
without it, prompt length, label permutations, folds grouped by story, and a random-weights control run."""

import json

import numpy as np
import pandas as pd
import pytest
from helpers import run_script

from model_inspector.evaluation import Feature, cv_splits, evaluate_controls


def _one_error(proc, *fragments):
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, proc.stderr
    for f in fragments:
        assert f in lines[0], (f, lines[0])


def test_controls_find_where_the_signal_is():
    """The label is in the last layer only: the last layer alone finds it, the profile without it does not, prompt
    length does not; permutations give chance and a small empirical p-value; each row names its direction."""
    rng = np.random.default_rng(0)
    n, L = 120, 6
    y = np.repeat(["a", "b", "c"], n // 3)
    X = rng.normal(size=(n, L))
    X[:, -1] += np.select([y == "a", y == "b"], [0.0, 3.0], 6.0)
    lengths = rng.integers(50, 60, n)
    rows = evaluate_controls([Feature("profile", X, "all layers"), Feature("last_layer", X[:, -1:], "last"),
                              Feature("no_last_layer", X[:, :-1], "the rest"),
                              Feature("prompt_length", lengths[:, None], "tokens")],
                             y, k=9, n_splits=5, n_permutations=20)
    by = {r["feature"]: r for r in rows}
    assert by["profile"]["roc_auc"] > 0.9 and by["last_layer"]["roc_auc"] > 0.95
    assert abs(by["no_last_layer"]["roc_auc"] - 0.5) < 0.12 and abs(by["prompt_length"]["roc_auc"] - 0.5) < 0.12
    assert by["profile"]["vs_baseline"] == "higher" and by["profile"]["significant"]
    assert by["no_last_layer"]["vs_reference"] == "lower" and by["no_last_layer"]["p_vs_reference"] < 0.01
    perm = by["label_permutations"]
    assert abs(perm["roc_auc"] - 0.5) < 0.08 and perm["p_reference_vs_permutations"] == pytest.approx(1 / 21)
    for r in rows:
        assert r["n_samples"] == n and r["roc_auc_std"] >= 0


def test_grouped_folds_keep_each_group_on_one_side():
    y = np.tile(["a", "b", "c"], 40)
    groups = np.repeat(np.arange(20), 6)
    for tr, te in cv_splits(y, 5, 42, groups):
        assert not set(groups[tr]) & set(groups[te])
    # a feature that identifies the group, not the class: plain folds can still look good when a group's samples
    # share a class mix; grouped folds are the honest number
    rng = np.random.default_rng(1)
    X = groups[:, None] + 0.01 * rng.normal(size=(120, 1))
    rows = evaluate_controls([Feature("profile", X, "group id")], y, k=3, n_splits=5, groups=groups,
                             group_name="story_index")
    grouped = rows[-1]
    assert grouped["feature"] == "profile_grouped" and "story_index" in grouped["folds"]
    assert abs(grouped["roc_auc"] - 0.5) < 0.15


@pytest.fixture(scope="module")
def ts_run(tiny_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("controls")
    stories = d / "s.jsonl"
    stories.write_text("".join(json.dumps({"text": t}) + "\n" for t in [
        "Tom had a red ball. He liked it.", "Sue saw a cat. The cat was big.", "Ben and Mia went to the park.",
        "A dog ran fast. It was happy.", "The sun was hot. Lily drank water."]))
    args = ["run_experiments_ts.py", tiny_dir, "tinystories", "--n_stories", 5, "--data_file", stories, "--max_len", 2,
            "--batch_size", 8, "--no_progress", "--results_dir", d]
    run_script(*args)
    run_script(*args, "--random_init", 0)
    return d / "tiny-llama_tinystories_5.pkl", d / "tiny-llama_tinystories_5_random0.pkl"


def test_run_tests_controls_end_to_end(ts_run, tmp_path):
    real, control = ts_run
    assert control.exists()  # the random-weights run's name says so; the real run is not replaced
    from model_inspector import Results

    meta = Results.load(control).metadata
    assert meta["identity"]["random_init"] == 0 and Results.load(real).metadata["identity"]["random_init"] is None
    proc = run_script("run_tests.py", real, "--label", "prompt", "--folds", 3, "--k", 5, "--controls",
                      "--permutations", 5, "--control", control, "--out_dir", tmp_path, "--no_plot")
    out = proc.stdout
    for name in ("last_layer", "no_last_layer", "prompt_length", "label permutations", "control_file",
                 "profile_grouped"):
        assert name in out, (name, out)
    assert "random weights (seed 0)" in out and "than the baseline" in out
    verdict = next(ln for ln in out.splitlines() if "verdict at this size" in ln)
    assert "the paper's claim (ROC-AUC 0.948-0.984)" in verdict and any(v in verdict for v in (
        "reproduced", "not reproduced at this scale", "explained by a control"))
    df = pd.read_csv(tmp_path / "tiny-llama_tinystories_5_tm_prompt_k5_3fold_controls.csv")
    assert list(df["feature"]) == ["profile", "last_layer", "no_last_layer", "prompt_length", "control_file",
                                   "label_permutations", "profile_grouped"]
    assert (df["n_samples"] == 120).all() and df["results_identity"].nunique() == 1
    assert df.loc[df["feature"] == "prompt_length", "description"].item() == "prompt length in tokens alone"
    assert df.loc[df["feature"] == "profile_grouped", "folds"].item() == "3 grouped by story_index"


def test_a_control_of_other_prompts_is_refused(ts_run, tiny_dir, tmp_path):
    real, _ = ts_run
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"text": "Something else entirely."}) + "\n")
    run_script("run_experiments_ts.py", tiny_dir, "tinystories", "--n_stories", 1, "--data_file", other, "--max_len",
               2, "--no_progress", "--results_dir", tmp_path)
    _one_error(run_script("run_tests.py", real, "--label", "prompt", "--folds", 3, "--control",
                          tmp_path / "tiny-llama_tinystories_1.pkl", "--no_plot", "--out_dir", tmp_path, check=False),
               "holds other prompts")


def test_an_incomplete_file_is_refused_or_flagged(ts_run, tmp_path):
    from model_inspector import Results

    real, _ = ts_run
    res = Results.load(real)
    cut = Results({k: v[:60] for k, v in res.columns.items()}, {**res.metadata, "complete": False, "n_total": 120})
    path = tmp_path / "cut.pkl"
    cut.to_pickle(path)
    _one_error(run_script("run_tests.py", path, "--label", "prompt", "--folds", 3, check=False),
               "is incomplete (60 of 120 samples", "--resume", "--allow_partial")
    run_script("run_tests.py", path, "--label", "prompt", "--folds", 3, "--k", 5, "--allow_partial", "--no_plot")
    row = pd.read_csv(tmp_path / "cut_tm_prompt_k5_3fold_overall.csv").iloc[0]
    assert row["results_complete"] is False or row["results_complete"] == False  # noqa: E712
    assert "incomplete" in row["note"] and row["results_n_samples"] == 60


def test_a_k_too_large_for_the_smallest_class_suggests_one_that_fits(ts_run, tmp_path):
    """5 stories x 24 prompts, 3 folds: 16 training samples per story, so k = 9 is over half of them and the note
    suggests the largest odd k at most 8 (7), never the k already used."""
    real, _ = ts_run
    out = run_script("run_tests.py", real, "--label", "story_index", "--folds", 3, "--k", 9, "--out_dir", tmp_path,
                     "--no_plot").stdout
    note = next(ln for ln in out.splitlines() if "leans on the class sizes" in ln)
    assert "k=9 is over half the 16 training samples" in note and "try --k 7" in note
