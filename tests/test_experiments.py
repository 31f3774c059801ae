"""The experiment scripts end to end on a tiny local model: outputs, resume, refusals, evaluation."""

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from helpers import interrupt_at, run_script, same_results

from model_inspector.errors import RunInterrupted
from model_inspector.experiments.tinystories import tinystories_samples
from model_inspector.results import load_results
from model_inspector.results.layouts import load_npz, save_npz
from model_inspector.run.config import RunConfig
from model_inspector.run.loop import run_profiling

ROOT = Path(__file__).resolve().parents[1]
STORIES = ["Tom had a red ball. He liked to play with it every day.", "Sue saw a cat. The cat was big and soft.",
           "Ben and Mia went to the park. They saw a dog."]


@pytest.fixture(scope="session")
def stories_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("data") / "stories.jsonl"
    p.write_text("".join(json.dumps({"text": s}) + "\n" for s in STORIES))
    return p


def test_tinystories_script_and_evaluation(tiny_dir, stories_file, tmp_path):
    run_script("run_experiments_ts.py", tiny_dir, "tinystories", "--n_stories", 2, "--data_file", stories_file,
        "--max_len", 3, "--results_dir", tmp_path, "--batch_size", 5, "--update_steps", 10, "--no_progress",
        "--metrics", "shannon", "renyi:0.5")
    out = tmp_path / "tiny-llama_tinystories_2.pkl"
    data = load_results(out)
    assert len(data["entropy"]) == 48 and data["entropy"][0].shape == (3, 3)
    assert data["renyi_0.5"][0].shape == (3, 3)
    assert data["model"][0] == "tiny-llama" and data["prompt"][0] == "continuation_prompt_1_base"
    assert (data["renyi_0.5"][0] >= data["entropy"][0] - 1e-5).all()
    meta = data["metadata"]
    assert meta["format_version"] == 4 and meta["config"]["sample"] is True and meta["complete"] is True
    # batched by length (the default), written in sample order
    assert data["sample_index"] == list(range(48)) and meta["identity"]["batch_order"] == "length"
    assert meta["config"]["max_len"] == 3 and "torch" in meta["versions"] and meta["n_skipped"] == 0
    assert "nats" in meta["metrics"]["entropy"]
    proc = run_script("run_tests.py", out, "--bs", 8, "--label", "prompt")
    assert "ROC-AUC" in proc.stdout
    csv = tmp_path / "tiny-llama_tinystories_2_tm_prompt_k29_10fold_overall.csv"  # named by label, k used, folds
    import pandas as pd

    row = pd.read_csv(csv).iloc[0]
    for col in ("model_roc_auc", "baseline_roc_auc", "improvement", "p_value", "significant",
                "model_auc_by_fold", "baseline_auc_by_fold", "correct"):
        assert col in row.index
    assert 0 <= row["model_roc_auc"] <= 1
    assert (tmp_path / "tiny-llama_tinystories_2_tm_prompt_k29_10fold_profiles.png").stat().st_size > 5000
    # refusing to overwrite leaves the file byte-identical
    before = out.read_bytes()
    proc = run_script("run_experiments_ts.py", tiny_dir, "tinystories", "--n_stories", 2, "--data_file", stories_file,
               "--max_len", 3, "--results_dir", tmp_path, check=False)
    assert proc.returncode == 2 and "is already complete" in proc.stderr and "Traceback" not in proc.stderr
    assert out.read_bytes() == before


def test_mmlu_script(tiny_dir, shared_data, tmp_path):
    run_script("run_experiments.py", tiny_dir, "mmlu", "--n_questions", 12, "--data_file", shared_data / "mmlu_test.jsonl",
        "--max_len", 2, "--results_dir", tmp_path, "--batch_size", 6, "--prompt_type", "instruct", "--no_progress")
    data = load_results(tmp_path / "tiny-llama_mmlu_instruct_n12.pkl")  # the name says --n_questions
    assert len(data["entropy"]) == 12
    assert set(data["correct"]) <= {0, 1} and all(a in "ABCD" for a in data["answer"])
    assert all(t.startswith("The following is a multiple choice question about") for t in data["input"])
    for pred, ans, c in zip(data["predicted"], data["answer"], data["correct"]):
        assert c == int(pred == ans)


def _samples():
    return tinystories_samples(STORIES, seed=0)[0][:30]


def test_resume_after_interrupt_equals_uninterrupted(tiny_dir, tmp_path):
    from model_inspector import ModelInspector

    mi = ModelInspector(str(tiny_dir))
    cfg = RunConfig(model=str(tiny_dir), dataset="tinystories", max_len=3, batch_size=4, sample=True, seed=5,
                    metrics=("shannon", "renyi:2"))
    full = run_profiling(_samples(), cfg, tmp_path / "full.pkl", load_inspector=lambda: mi, update_steps=4,
                         progress=False)
    part = tmp_path / "part.pkl"
    with pytest.raises(RunInterrupted, match="interrupted after 12 of 30 samples"):
        run_profiling(_samples(), cfg, part, load_inspector=lambda: mi, update_steps=100, label_fn=interrupt_at(13),
                      progress=False)
    assert len(load_results(part)["entropy"]) == 12 and load_results(part)["metadata"]["complete"] is False
    resumed = run_profiling(_samples(), cfg, part, load_inspector=lambda: mi, update_steps=4, resume=True,
                            progress=False)
    same_results(full, resumed)
    same_results(load_results(part), full)
    # resuming with other settings is refused
    other = cfg.replace(seed=6)
    with pytest.raises(ValueError, match="settings differ .*seed"):
        run_profiling(_samples(), other, part, load_inspector=lambda: mi, resume=True, progress=False)


def test_npz_roundtrip_without_pickle(tiny_dir, tmp_path):
    from model_inspector import ModelInspector

    mi = ModelInspector(str(tiny_dir))
    cfg = RunConfig(model=str(tiny_dir), dataset="tinystories", max_len=2, batch_size=8)
    data = run_profiling(_samples()[:8], cfg, tmp_path / "r.pkl", load_inspector=lambda: mi, progress=False)
    save_npz(tmp_path / "r.npz", data)
    back = load_npz(tmp_path / "r.npz")
    same_results(data, back)
    assert back["metadata"]["config"]["max_len"] == 2


def test_run_tests_recomputes_original_activations(tiny_dir, tmp_path):
    """Original-format files hold raw activations [T, L, d]; run_tests recomputes the entropies."""
    from model_inspector import ModelInspector

    mi = ModelInspector(str(tiny_dir))
    samples = _samples()[:24]
    acts, ents = [], []
    for s in samples:
        _, a = mi.generate_with_activations(s.text, max_len=3, verbose=False)
        acts.append(a)
        ents.append(mi.calculate_entropy(a, num_windows=3))
    orig = {"activations": acts, "prompt": [s.labels["prompt"] for s in samples], "model": [str(tiny_dir)] * 24}
    path = tmp_path / "orig.pkl"
    path.write_bytes(pickle.dumps(orig))
    from model_inspector.commands import evaluate as run_tests  # = the run_tests.py script's code

    args = run_tests.build_parser().parse_args([str(path), "--bs", "5", "--label", "prompt"])
    data = load_results(path)
    run_tests.ensure_entropy(data, args)
    for got, want in zip(data["entropy"], ents):
        np.testing.assert_allclose(got, want, atol=1e-5)
    proc = run_script("run_tests.py", path, "--bs", 5, "--label", "prompt", "--folds", 3, "--k", 5)
    assert "ROC-AUC" in proc.stdout


def test_mmlu_loglik_grading(tiny_dir, shared_data, tmp_path):
    """--grading loglik: correct from the most likely of the four letters after the prompt (both grades kept);
    the paper's grading keeps its file name and identity."""
    base = ["run_experiments.py", tiny_dir, "mmlu", "--n_questions", 6, "--data_file", shared_data / "mmlu_test.jsonl",
            "--max_len", 2, "--results_dir", tmp_path, "--no_progress"]
    proc = run_script(*base, "--grading", "loglik")
    data = load_results(tmp_path / "tiny-llama_mmlu_base_n6_loglik.pkl")
    lp = np.stack(data["letter_logprobs"])
    assert lp.shape == (len(data["correct"]), 4) and (lp < 0).all() and "accuracy" in proc.stdout
    assert data["predicted"] == ["ABCD"[i] for i in lp.argmax(1)]
    assert data["correct"] == [int(p == a) for p, a in zip(data["predicted"], data["answer"])]
    assert "correct_generated" in data and data["metadata"]["grading"] == "loglik"
    assert '"grading": "loglik"' in data["metadata"]["identity"]["extra"]
    run_script(*base)
    paper = load_results(tmp_path / "tiny-llama_mmlu_base_n6.pkl")
    assert "letter_logprobs" not in paper and "grading" not in paper["metadata"]["identity"]["extra"]
