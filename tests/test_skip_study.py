"""Claim (iv) as one command: the conditions, their statistics and the skip-layers study end to end."""

import json

import numpy as np
import pandas as pd
import pytest
from helpers import run_cli

from model_inspector.skipping.study import Condition, plan_conditions, strategy_blocks, summarize, sweep_correlations


def test_strategy_blocks_and_conditions():
    L = 8
    prof = np.tile(np.array([5.0, 5.0, 5.0, 7.0, 7.0, 4.0, 4.0, 4.5]), (10, 1)) + 0.01 * np.random.default_rng(0).normal(
        size=(10, L))
    chosen = strategy_blocks(prof, k=2)
    assert chosen["expansion"][0] == 3 and chosen["pruning"][0] == 5 and len(chosen["dH"]) == L - 1
    conds = plan_conditions(L, chosen["expansion"], chosen["pruning"], k=2, n_random=5, seed=1)
    names = [c.name for c in conds]
    assert names[:5] == ["none", "expansion_top1", "expansion_top2", "pruning_top1", "pruning_top2"]
    assert sum(c.kind == "random" for c in conds) == 10 and sum(c.kind == "sweep" for c in conds) == L
    assert all(0 < b < L for c in conds if c.kind == "random" for b in c.blocks)
    assert plan_conditions(L, chosen["expansion"], chosen["pruning"], k=2, n_random=5, seed=1) == conds  # seeded


def test_summary_statistics_and_correlations():
    rng = np.random.default_rng(0)
    n, L = 200, 6
    conds = [Condition("none", "none", ()), Condition("expansion_top1", "expansion", (2,)),
             Condition("pruning_top1", "pruning", (4,))]
    conds += [Condition(f"random1_{d:02d}", "random", (d % (L - 1) + 1,)) for d in range(9)]
    conds += [Condition(f"sweep_{b}", "sweep", (b,)) for b in range(L)]
    damage = {"none": 0.0, "expansion_top1": 1.0, "pruning_top1": 0.1}
    sweep_damage = np.array([0.0, 0.2, 1.0, 0.4, 0.1, 0.3])
    base = rng.normal(size=n)
    cols = []
    for c in conds:
        d = damage[c.name] if c.name in damage else 0.2 if c.kind == "random" else sweep_damage[c.blocks[0]]
        cols.append(base - d + 0.05 * rng.normal(size=n))
    score = np.stack(cols, 1)
    correct = (score > 0).astype(float)
    rows = summarize(conds, score, correct=correct)
    by = {r["condition"]: r for r in rows}
    assert abs(by["expansion_top1"]["score_change"] + 1.0) < 0.05 and by["expansion_top1"]["p_score"] < 1e-10
    assert by["expansion_top1"]["p_vs_random"] == pytest.approx(1 / 10)  # more damaging than all 9 draws
    assert by["pruning_top1"]["p_vs_random"] > 0.5 and by["expansion_top1"]["p_accuracy"] < 1e-6
    assert by["none"]["accuracy_ci_low"] < by["none"]["accuracy"] < by["none"]["accuracy_ci_high"]
    dH = [0.5, 2.0, 0.8, -0.3, 0.6]  # block b's dH is dH[b - 1]: block 2 expands most and hurts most
    corr = sweep_correlations(rows, dH, L)
    assert corr["n"] == 5 and corr["damage_vs_abs_dH"] > 0.8


@pytest.fixture(scope="module")
def mmlu_file(tmp_path_factory):
    rng = np.random.default_rng(0)
    p = tmp_path_factory.mktemp("mmlu") / "m.jsonl"
    rows = [{"question": f"What is {i} plus {i % 5}?", "subject": "math", "choices": [str(i + j) for j in range(4)],
             "answer": int(rng.integers(4))} for i in range(16)]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


@pytest.fixture(scope="module")
def six_layers(tmp_path_factory):
    from model_inspector.testing import char_tokenizer, tiny_model

    d = tmp_path_factory.mktemp("models") / "tiny-llama"
    tiny_model("llama", num_hidden_layers=6, max_position_embeddings=2048).save_pretrained(d)
    char_tokenizer().save_pretrained(d)
    return d


def test_skip_layers_end_to_end_and_resume(six_layers, mmlu_file, tmp_path):
    tiny_dir = six_layers
    args = ["skip-layers", tiny_dir, "--data_file", mmlu_file, "--n_questions", 16,
            "--n_random", 4, "--k", 2, "--batch_size", 4, "--results_dir", tmp_path, "--no_plot", "--threads", 1]
    proc = run_cli(*args)
    out = tmp_path / "tiny-llama_skip_mmlu_n16.pkl"
    table = pd.read_csv(tmp_path / "tiny-llama_skip_mmlu_n16_table.csv")
    assert "no skip:" in proc.stdout and "expansion_top1" in proc.stdout and "sweep over" in proc.stdout
    assert list(table["condition"][:1]) == ["none"] and (table["kind"] == "sweep").sum() == 6
    assert (table["n_items"] == 12).all() and table["accuracy"].between(0, 1).all()
    from model_inspector import Results

    res = Results.load(out)
    meta = res.metadata
    assert meta["complete"] and len(res["logprobs"]) == 12 and res["logprobs"][0].shape == (len(table), 4)
    cal, ev = set(meta["calibration"]["index"]), set(meta["evaluation_index"])
    assert len(cal) == 4 and not cal & ev  # disjoint splits, both recorded
    assert meta["letter_forms"] == ["A"] and meta["identity"]["k"] == 2
    again = run_cli(*args, "--resume")  # a complete study: read back, not recomputed
    assert pd.read_csv(tmp_path / "tiny-llama_skip_mmlu_n16_table.csv").equals(table) and "0 items done" not in again.stdout
    other = run_cli(*args[:-2], "--k", 3, "--resume", check=False)
    assert other.returncode == 2 and "k: file 2 vs now 3" in other.stderr
    # the replay engine against the hook reference for the same conditions
    from model_inspector import ModelInspector
    from model_inspector.skipping import letter_logprobs

    mi = ModelInspector(str(tiny_dir))
    conds = [tuple(c["blocks"]) for c in meta["conditions"]][:6]
    texts = [r for r in res["index"]]
    assert len(texts) == 12
    lp = np.stack(res["logprobs"])[:, :6]
    from model_inspector.experiments.mmlu import load_mmlu, mmlu_prompt

    rows = {r["index"]: r for r in load_mmlu(str(mmlu_file))}
    prompts = [mmlu_prompt(rows[i]["question"], rows[i]["choices"], rows[i]["subject"]) for i in res["index"]]
    ref = letter_logprobs(mi, prompts, conds, method="hooks").logprob
    np.testing.assert_allclose(lp, ref, atol=1e-4)
