"""A new user's first hour: fast and honest failures, small-sample evaluation that says what it did,
names that say what a file holds, threads that suit the machine."""

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import run_script

from model_inspector.results import load_results

ROOT = Path(__file__).resolve().parents[1]
STORIES = ["Tom had a red ball. He liked to play with it every day.", "Sue saw a cat. The cat was big and soft.",
           "Ben and Mia went to the park. They saw a dog.", "A bird sang in a tree. It was a happy bird."]


def error_line(proc):
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def ts_file(tiny_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("fh")
    (d / "s.jsonl").write_text("".join(json.dumps({"text": s}) + "\n" for s in STORIES))
    run_script("run_experiments_ts.py", tiny_dir, "tinystories", "--n_stories", 4, "--data_file", d / "s.jsonl",
               "--max_len", 2, "--results_dir", d, "--no_progress")
    return d / "tiny-llama_tinystories_4.pkl"


def test_offline_hub_failures_are_fast_and_name_the_fix(tmp_path):
    t0 = time.time()
    model = error_line(run_script("run_experiments_ts.py", "no-such/model-xyz", "tinystories", "--n_stories", 1,
                                  "--data_file", ROOT.parent / "shared/data/tinystories_validation_head.jsonl",
                                  "--results_dir", tmp_path, check=False))
    data = error_line(run_script("run_experiments.py", "smollm2-135m-instruct", "mmlu", "--results_dir", tmp_path,
                                 check=False))
    assert time.time() - t0 < 30
    assert "not on this machine" in model and "HF_HUB_OFFLINE" in model and "local directory or .gguf" in model
    assert "--data_file" in data and "HF_HUB_OFFLINE" in data and "question, subject, choices, answer" in data


def test_unreachable_hub_is_one_quick_check(monkeypatch):
    import socket

    import model_manager
    from model_inspector.experiments.tinystories import load_tinystories
    from model_inspector.readers import DataError

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    calls = []

    def refuse(addr, timeout=None):
        calls.append((addr, timeout))
        raise OSError(101, "Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", refuse)
    t0 = time.time()
    with pytest.raises(model_manager.ModelNotFoundError, match="Network is unreachable.*HF_HUB_OFFLINE=1"):
        model_manager.load_model("someone/not-cached-model")
    with pytest.raises(DataError, match="--data_file"):
        load_tinystories(3)
    assert time.time() - t0 < 5 and len(calls) == 2 and calls[0][1] == 3.0


def test_small_samples_say_what_was_done(ts_file, tmp_path):
    proc = run_script("run_tests.py", ts_file, "--label", "prompt", "--folds", 3, "--k", 80, "--out_dir", tmp_path)
    assert "k reduced from 80 to 64" in proc.stdout and "k-NN (k=64)" in proc.stdout
    row = pd.read_csv(tmp_path / "tiny-llama_tinystories_4_tm_prompt_k64_3fold_overall.csv").iloc[0]
    assert row["k"] == 80 and row["k_used"] == 64 and row["folds"] == 3
    assert row["correct"] == "continuation:0.333|counting:0.333|semantic:0.333" and abs(row["chance_accuracy"] - 1 / 3) < 1e-9
    too_few = error_line(run_script("run_tests.py", ts_file, "--label", "prompt", "--folds", 40, check=False))
    assert "class 'continuation' has 32 samples, fewer than the 40 folds" in too_few and "--folds" in too_few
    assert "np." not in too_few


def test_classify_formats_small_split_is_reworded(tmp_path):
    rows = [{"sample": i, "format": "abc"[i % 3], "topic": str(i), "alpha": 1.0, "entropy": np.ones((2, 2)) * i,
             "text": ""} for i in range(6)]
    pd.DataFrame(rows).to_pickle(tmp_path / "f.pkl")
    line = error_line(run_script("classify_formats.py", "-d", tmp_path / "f.pkl", "--folds", 2, "-k", 1, check=False))
    assert "fewer than the 3 classes" in line and "--test-size" in line and "test_size =" not in line


def test_mmlu_file_name_says_what_narrowed_it(tiny_dir, shared_data, tmp_path):
    run_script("run_experiments.py", tiny_dir, "mmlu", "--subjects", "anatomy", "--n_questions", 3, "--data_file",
               shared_data / "mmlu_test.jsonl", "--max_len", 1, "--results_dir", tmp_path, "--no_progress")
    assert [p.name for p in tmp_path.glob("*.pkl")] == ["tiny-llama_mmlu_base_anatomy_n3.pkl"]


def test_profile_repr_is_short(tok):
    from model_inspector import ModelInspector
    from model_inspector.testing import tiny_model

    mi = ModelInspector(tiny_model("llama"), tok)
    prof = mi.profile(["abc", "de"], max_len=3, metrics=["shannon", "renyi:2"])
    text = repr(prof)
    assert text == "Profile(2 prompts x 3 tokens x 3 layers [prompt, token, layer]; metrics entropy, renyi_2; 6 generated tokens)"
    assert repr(mi.profile_prompt(["abc"])).startswith("PromptProfile(1 prompts x 4 positions")


def test_threads(monkeypatch):
    import torch

    from model_inspector import threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert 0.0 <= threads.busy_cores(0.05) <= len(threads.os.sched_getaffinity(0)) + 1e-9
    monkeypatch.setattr(threads, "busy_cores", lambda window=0.2: 0.0)
    idle = threads.default_threads()
    assert idle == threads.available_cores()
    monkeypatch.setattr(threads, "busy_cores", lambda window=0.2: float(idle))
    assert threads.default_threads() == 1  # every core busy: one thread, not an oversubscribed pool
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads.default_threads() == 3
    before = torch.get_num_threads()
    try:
        assert threads.set_threads(1) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_threads_flag_and_quiet_loading(tiny_dir, tmp_path):
    (tmp_path / "s.jsonl").write_text(json.dumps({"text": STORIES[0]}) + "\n")
    proc = run_script("run_experiments_ts.py", tiny_dir, "tinystories", "--n_stories", 1, "--data_file",
                      tmp_path / "s.jsonl", "--max_len", 1, "--results_dir", tmp_path, "--no_progress", "--threads", 1)
    assert load_results(tmp_path / "tiny-llama_tinystories_1.pkl")["metadata"]["threads"] == 1
    assert "Loading weights" not in proc.stderr and "it/s" not in proc.stderr


def test_help_is_fast():
    """--help imports no torch (timed by benchmarks/bench_help.py; here: what it imports)."""
    code = ("import runpy, sys; sys.argv = ['run_tests.py', '--help']\n"
            "try:\n    runpy.run_path('run_tests.py', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.stdout.strip().endswith("NO-TORCH") and "--out_dir" in out.stdout


def test_library_defaults_do_not_surprise(tok):
    """A sampled profile() is reproducible by default (seed 0; seed=None draws fresh), and ModelInspector takes a
    (model, tokenizer) tuple as the README writes it."""
    from model_inspector import ModelInspector
    from model_inspector.testing import tiny_model

    model = tiny_model("llama")
    mi = ModelInspector((model, tok))
    a = mi.profile(["abc", "de"], max_len=4, sample=True)
    b = mi.profile(["abc", "de"], max_len=4, sample=True)
    assert a.texts == b.texts and (a.token_ids == b.token_ids).all()
    c = mi.profile(["abc", "de"], max_len=4, sample=True, seed=7)
    assert (c.token_ids != a.token_ids).any()
