"""Reliability: bad input ends in one clear line, interrupted runs resume exactly, numbers stay bounded."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import run_script
from hypothesis import given, settings
from hypothesis import strategies as st

from model_inspector.metrics import metrics_from_logits
from model_inspector.results import load_results
from model_inspector.storage import PartsStore

ROOT = Path(__file__).resolve().parents[1]
STORIES = ["Tom had a red ball. He liked to play with it every day in the park.",
           "Sue saw a cat. The cat was big and soft and it liked milk.",
           "Ben and Mia went to the park. They saw a dog and a big tree."]


def cli(script, *args):
    return run_script(script, *args, check=False)


def one_line_error(proc, *fragments):
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if "error" in ln.lower()]
    assert len(lines) == 1, proc.stderr
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def stories_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("d") / "stories.jsonl"
    p.write_text("".join(json.dumps({"text": s}) + "\n" for s in STORIES))
    return p


@pytest.fixture(scope="module")
def ts_file(tiny_dir, stories_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("r")
    proc = cli("run_experiments_ts.py", tiny_dir, "tinystories", "--n_stories", 1, "--data_file", stories_file,
               "--max_len", 2, "--results_dir", out, "--no_progress")
    assert proc.returncode == 0, proc.stderr
    return out / "tiny-llama_tinystories_1.pkl"


# ----------------------------------------------------------------------------------------- bad input
def test_missing_and_corrupt_results_file(tmp_path):
    one_line_error(cli("run_tests.py", tmp_path / "nope.pkl"), "results file not found")
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(b"\x80\x04garbage")
    one_line_error(cli("run_tests.py", bad), "not a readable results pickle")
    import pickle

    (tmp_path / "list.pkl").write_bytes(pickle.dumps([1, 2]))
    one_line_error(cli("run_tests.py", tmp_path / "list.pkl"), "expected a dict of lists")


def test_unknown_label_and_too_few_samples(ts_file):
    one_line_error(cli("run_tests.py", ts_file, "--label", "colour"), "unknown label 'colour'", "prompt")
    # 24 samples, 8 per class: fewer than 10 folds
    one_line_error(cli("run_tests.py", ts_file, "--label", "prompt"), "fewer than the 10 folds")
    one_line_error(cli("run_tests.py", ts_file, "--label", "prompt", "--num_windows", 5, "--folds", 2),
                   "larger than the number of tokens")


def test_unknown_prompt_type_and_counts(tiny_dir, stories_file, tmp_path):
    proc = cli("run_experiments.py", tiny_dir, "mmlu", "--prompt_type", "polite")
    assert proc.returncode == 2 and "invalid choice: 'polite'" in proc.stderr and "Traceback" not in proc.stderr
    for flag, value in (("--n_stories", 0), ("--max_len", -3), ("--batch_size", 0), ("--update_steps", 0)):
        proc = cli("run_experiments_ts.py", tiny_dir, "tinystories", flag, value, "--results_dir", tmp_path)
        assert proc.returncode == 2 and "must be a positive integer" in proc.stderr, (flag, proc.stderr)
    one_line_error(cli("run_experiments_ts.py", tiny_dir, "tinystories", "--n_stories", 9, "--data_file",
                       stories_file, "--results_dir", tmp_path), "only 3 stories available")
    one_line_error(cli("run_experiments_ts.py", tiny_dir, "tinystories", "--n_stories", 1, "--data_file",
                       stories_file, "--results_dir", tmp_path, "--metrics", "renyi:-1"), "alpha must be")


def test_missing_or_malformed_data_file(tiny_dir, tmp_path):
    one_line_error(cli("run_experiments_ts.py", tiny_dir, "tinystories", "--data_file", tmp_path / "no.jsonl",
                       "--results_dir", tmp_path), "data file not found")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{oops\n')
    one_line_error(cli("run_experiments_ts.py", tiny_dir, "tinystories", "--n_stories", 1, "--data_file", bad,
                       "--results_dir", tmp_path), "line 2 is not valid JSON")
    nocol = tmp_path / "nocol.jsonl"
    nocol.write_text('{"story": "x"}\n')
    one_line_error(cli("run_experiments_ts.py", tiny_dir, "tinystories", "--n_stories", 1, "--data_file", nocol,
                       "--results_dir", tmp_path), "lacks column(s) text")
    one_line_error(cli("run_experiments.py", tiny_dir, "mmlu", "--data_file", nocol, "--results_dir", tmp_path),
                   "lacks column(s)")
    one_line_error(cli("run_experiments.py", tiny_dir, "mmlu", "--subjects", "astrology", "--data_file",
                       ROOT.parent / "shared/data/mmlu_test.jsonl", "--results_dir", tmp_path), "unknown subject")


def test_prompt_longer_than_context_is_skipped(tmp_path, stories_file):
    from tiny_models import char_tokenizer, tiny_model

    d = tmp_path / "short-ctx"
    tiny_model("gpt2", n_positions=110).save_pretrained(d)  # learned positions: a hard limit of 110 tokens
    char_tokenizer().save_pretrained(d)
    proc = cli("run_experiments_ts.py", d, "tinystories", "--n_stories", 1, "--data_file", stories_file,
               "--max_len", 4, "--results_dir", tmp_path, "--no_progress")
    assert proc.returncode == 0, proc.stderr
    data = load_results(tmp_path / "short-ctx_tinystories_1.pkl")
    skipped = data["metadata"]["n_skipped_context"]
    from model_inspector.experiments.tinystories import tinystories_samples

    too_long = sum(len(s.text) + 4 > 110 for s in tinystories_samples(STORIES[:1])[0])  # 1 char = 1 token
    assert 0 < too_long < 24 and skipped == too_long and len(data["entropy"]) == 24 - too_long
    assert f"{too_long} prompts do not fit the context of 110 tokens" in proc.stdout
    from model_inspector import ModelInspector

    mi = ModelInspector(str(d))
    with pytest.raises(ValueError, match="does not fit the model's context of 110 tokens"):
        mi.profile(["x" * 109], max_len=4)


# ----------------------------------------------------------------------------------------- interruption
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_killed_run_resumes_exactly(sig, tmp_path, stories_file):
    from tiny_models import char_tokenizer, tiny_model

    d = tmp_path / "slowish"
    tiny_model("llama", hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
               max_position_embeddings=4096).save_pretrained(d)
    char_tokenizer().save_pretrained(d)
    args = ["run_experiments_ts.py", d, "tinystories", "--n_stories", 3, "--data_file", stories_file, "--max_len", 24,
            "--batch_size", 2, "--update_steps", 2, "--no_progress", "--seed", 3, "--metrics", "shannon", "renyi:2"]
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    assert cli(*args, "--results_dir", ref_dir).returncode == 0
    out = run_dir / "slowish_tinystories_3.pkl"
    proc = subprocess.Popen([sys.executable, *map(str, args), "--results_dir", str(run_dir)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    store = PartsStore(out)  # checkpoints go to the append-only sidecar; the .pkl is written at the end
    while not store.parts() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    os.kill(proc.pid, sig)
    _, err = proc.communicate(timeout=120)
    partial = load_results(out)  # every completed checkpoint is readable whatever the signal (SIGKILL: from the sidecar)
    n_partial = len(partial["entropy"])
    assert 0 < n_partial < 72, n_partial
    # the run goes batch by batch in token-length order (the rows of an unfinished run say which samples they are)
    assert partial["sample_index"] != list(range(n_partial))  # the longest prompts first, not the first ones
    if sig != signal.SIGKILL:
        assert proc.returncode == 130 and "continue with --resume" in err and "Traceback" not in err
    resumed = cli(*args, "--results_dir", run_dir, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    a, b = load_results(ref_dir / out.name), load_results(out)
    assert len(b["entropy"]) == 72 and b["sample_index"] == list(range(72))
    for key in ("entropy", "renyi_2", "tokens"):
        for x, y in zip(a[key], b[key]):
            np.testing.assert_array_equal(x, y)
    assert a["text"] == b["text"] and a["prompt"] == b["prompt"]
    assert not store.dir.exists() and not list(run_dir.glob("*.tmp"))  # the sidecar and temporaries are gone


# ----------------------------------------------------------------------------------------- numbers
logit_arrays = st.integers(2, 300).flatmap(lambda v: st.tuples(
    st.just(v), st.integers(0, 2**31 - 1), st.floats(0.01, 60.0), st.floats(0.0, 0.5)))


@settings(max_examples=60, deadline=None)
@given(logit_arrays)
def test_entropy_bounds_and_renyi_order(params):
    v, seed, scale, frac_inf = params
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, v, generator=g) * scale
    mask = torch.rand(3, v, generator=g) < frac_inf
    mask[:, 0] = False  # at least one finite entry
    x[mask] = -math.inf
    alphas = [0, 0.5, 1, 2, 5, math.inf]
    got = metrics_from_logits(x, ["shannon"] + [f"renyi:{a}" for a in alphas], budget_bytes=4096)
    h = got["entropy"]
    assert torch.isfinite(h).all()
    assert (h >= -1e-5).all() and (h <= math.log(v) + 1e-4).all()
    assert torch.allclose(got["entropy"], metrics_from_logits(x, ["renyi:1"], budget_bytes=4096)["entropy"], atol=1e-6)
    assert torch.allclose(got["entropy"], metrics_from_logits(x, ["shannon"])["entropy"], atol=1e-5)  # one chunk
    keys = ["renyi_0", "renyi_0.5", "entropy", "renyi_2", "renyi_5", "renyi_inf"]
    for lo, hi in zip(keys[1:], keys[:-1]):
        assert (got[lo] <= got[hi] + 1e-4 * (1 + got[hi].abs())).all(), (lo, hi)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1), st.sampled_from([torch.float16, torch.bfloat16]), st.floats(1.0, 6e4))
def test_half_precision_logits_finite_and_equal_to_fp32(seed, dtype, scale):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(2, 3, 257, generator=g) * scale).clamp(-6e4, 6e4).to(dtype)
    x[0, 0, :5] = -math.inf
    specs = ["shannon", "renyi:0.5", "renyi:5", "renyi:inf", "kl_final"]
    low = metrics_from_logits(x, specs, budget_bytes=2000)
    ref = metrics_from_logits(x.float(), specs)
    for k in ref:
        assert torch.isfinite(low[k]).all(), k
        assert torch.allclose(low[k], ref[k], atol=1e-4, rtol=1e-4), k
