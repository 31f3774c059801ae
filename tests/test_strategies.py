"""Expansion and pruning layers: synthetic profiles with known answers, the command end to end, one real run."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from model_inspector.errors import UserError
from model_inspector.results import Results
from model_inspector.strategies import (
    entropy_differences,
    find_strategy_layers,
    plot_strategies,
    strategies_from_results,
    strategy_table,
    write_strategies,
)

L = 12


def steps(n, T, rises: dict, noise: float, rng) -> np.ndarray:
    """``[n, T, L]`` profiles: a flat 1 nat plus a jump of ``rises[j]`` nats at transition j (layer j -> j + 1)."""
    base = np.ones(L)
    for j, size in rises.items():
        base[j + 1:] += size
    return base + rng.normal(0, noise, (n, T, L))


def two_classes(noise=0.15, seed=0):
    rng = np.random.default_rng(seed)
    a = steps(20, 6, {3: 2.0, 7: -3.0}, noise, rng)  # rises most between layers 3 and 4, falls most 7 -> 8
    b = steps(15, 6, {5: 1.5, 9: -2.5}, noise, rng)
    return np.concatenate([a, b]), np.array(["A"] * 20 + ["B"] * 15)


def test_entropy_differences_shape_nan_and_telescoping():
    rng = np.random.default_rng(1)
    H = rng.uniform(0, 5, (4, 7, L)).astype(np.float32)
    H[1, 5:] = np.nan
    dH = entropy_differences(H)
    assert dH.shape == (4, 7, L - 1)
    np.testing.assert_allclose(dH[..., 3], H[..., 4] - H[..., 3], atol=1e-6, equal_nan=True)
    assert np.isnan(dH[1, 5:]).all() and np.isfinite(dH[1, :5]).all()
    np.testing.assert_allclose(dH.sum(-1), H[..., -1].astype(float) - H[..., 0], atol=1e-5, equal_nan=True)
    with pytest.raises(UserError, match="sample, token, layer"):
        entropy_differences(H[0])
    with pytest.raises(UserError, match="at least 2 layers"):
        entropy_differences(H[..., :1])


def test_known_layers_per_class_with_ci_and_stability():
    P, y = two_classes()
    r = find_strategy_layers(P, y, k=2, n_boot=400)
    assert list(r.classes) == ["overall", "A", "B"] and r.variants == ("all", "interior")
    assert [r.classes[c].n for c in r.classes] == [35, 20, 15]
    for name, up, down, size_up, size_down in (("A", 4, 8, 2.0, -3.0), ("B", 6, 10, 1.5, -2.5)):
        c = r.classes[name]
        assert c.mean_dh.shape == c.std_dh.shape == c.ci_low.shape == (L - 1,)
        for variant in ("all", "interior"):
            e, p = c.top(variant, "expansion")[0], c.top(variant, "pruning")[0]
            assert (e.layer, e.transition, p.layer) == (up, up - 1, down)
            assert e.relative_depth == pytest.approx((up + 1) / L)
            for s, size in ((e, size_up), (p, size_down)):
                se = c.std_dh[s.transition] / np.sqrt(c.n)  # the analytic standard error of the class mean
                assert s.ci_low < s.mean_dh < s.ci_high and abs(s.mean_dh - size) < 4 * se
                assert (s.ci_high - s.ci_low) / (2 * 1.96 * se) == pytest.approx(1, abs=0.25)
            assert e.sample_stability == 1.0 and e.bootstrap_stability == 1.0
            assert p.sample_stability == 1.0 and p.bootstrap_stability == 1.0
            assert len(c.top(variant, "expansion")) == 2  # noise gives small positive means elsewhere
    o = r.classes["overall"]
    np.testing.assert_allclose(o.mean_dh, (20 * r.classes["A"].mean_dh + 15 * r.classes["B"].mean_dh) / 35)
    assert o.top("all", "pruning")[0].layer == 8  # A's -3 nats outweighs B's -2.5 in the pooled mean


def test_stability_low_for_pure_noise():
    rng = np.random.default_rng(2)
    r = find_strategy_layers(rng.normal(3, 1.0, (60, 4, 20)), n_boot=500)
    for kind in ("expansion", "pruning"):
        s = r.classes["overall"].top("all", kind)[0]
        assert 0 <= s.sample_stability < 0.3 and 0 <= s.bootstrap_stability < 0.7
        assert s.ci_low < 0 < s.ci_high or abs(s.mean_dh) < 0.5  # nothing real to find


def test_nan_tokens_are_ignored_and_empty_samples_dropped():
    P, y = two_classes()
    P[0, 3:, :] = np.nan  # a sample that stopped after 3 tokens
    P[1] = np.nan  # a sample without a valid token
    r = find_strategy_layers(P, y, n_boot=50)
    a = r.classes["A"]
    assert (a.n, a.n_dropped, r.classes["overall"].n_dropped) == (19, 1, 1)
    by_sample = np.concatenate([np.diff(P[[0], :3], axis=2).mean(1), np.diff(P[2:20], axis=2).mean(1)])
    np.testing.assert_allclose(a.mean_dh, by_sample.mean(0))  # token means first, then the class mean
    assert np.isfinite(a.mean_dh).all()


def test_edge_exclusion_hides_first_and_last_layer():
    rng = np.random.default_rng(3)
    P = steps(30, 4, {0: 4.0, 4: 1.0, 6: -1.0, L - 2: -5.0}, 0.05, rng)
    c = find_strategy_layers(P, n_boot=100).classes["overall"]
    assert c.top("all", "expansion")[0].layer == 1 and c.top("all", "pruning")[0].layer == L - 1
    assert c.top("interior", "expansion")[0].layer == 5 and c.top("interior", "pruning")[0].layer == 7
    assert all(1 <= s.transition <= L - 3 for s in c.layers if s.variant == "interior")
    assert find_strategy_layers(P, n_boot=10, exclude_edges=0).variants == ("all",)
    wide = find_strategy_layers(P, n_boot=10, exclude_edges=6)
    assert wide.variants == ("all",) and any("too few for the interior" in n for n in wide.classes["overall"].notes)


def test_ties_go_to_the_shallower_transition():
    P = np.tile(np.array([0, 0, 1, 1, 1, 2, 2, 2, 2, 1, 1, 1.0])[None, None, :L], (5, 3, 1))
    c = find_strategy_layers(P, k=3, n_boot=50).classes["overall"]
    ranks = [(s.rank, s.layer, s.mean_dh) for s in c.top("all", "expansion")]
    assert ranks == [(1, 2, 1.0), (2, 5, 1.0)]  # equal rises: layer 2 first; only two positive transitions
    assert all(s.sample_stability == 1.0 and s.bootstrap_stability == 1.0 for s in c.top("all", "expansion"))
    assert any("only 2 expansion" in n for n in c.notes)


def test_single_sample_class_gets_a_note_not_a_crash():
    P, y = two_classes()
    y = y.copy()
    y[-1] = "C"
    r = find_strategy_layers(P, y, n_boot=50)
    c = r.classes["C"]
    assert c.n == 1 and any("only 1 sample" in n for n in c.notes)
    assert np.isnan(c.std_dh).all() and np.isnan(c.ci_low).all()
    top = c.top("all", "pruning")[0]
    assert top.layer == 10 and np.isnan(top.sample_stability) and np.isnan(top.bootstrap_stability)
    rows = strategy_table(r).query("`class` == 'C'")
    assert rows["note"].str.contains("only 1 sample").all()


def test_never_positive_gives_no_expansion_layer(tmp_path):
    P = np.tile(np.linspace(5, 0, L)[None, None, :], (4, 2, 1)) + np.arange(4)[:, None, None] * 0.01
    r = find_strategy_layers(P, n_boot=50)
    c = r.classes["overall"]
    assert c.top("all", "expansion") == [] and c.top("interior", "expansion") == []
    assert len(c.top("all", "pruning")) == 3
    assert any("0 transition(s) with a positive mean dH, so no expansion" in n for n in c.notes)
    t = strategy_table(r)
    empty = t[(t["kind"] == "expansion") & (t["variant"] == "all")]
    assert len(empty) == 1 and empty["rank"].isna().all() and "positive" in empty["note"].iloc[0]
    back = pd.read_csv(write_strategies(r, tmp_path / "n.csv"), dtype={"note": "string"})
    pd.testing.assert_frame_equal(back, t, check_dtype=False)  # the note rows survive the round trip


def test_bad_arguments():
    P, y = two_classes()
    with pytest.raises(UserError, match="k must be"):
        find_strategy_layers(P, k=0)
    with pytest.raises(UserError, match="one label per sample"):
        find_strategy_layers(P, y[:-1])
    with pytest.raises(UserError, match="rename it"):
        find_strategy_layers(P, ["overall"] * len(P))


def test_bootstrap_is_seeded():
    P, y = two_classes()
    a, b = (find_strategy_layers(P, y, n_boot=200, seed=s).classes["A"] for s in (7, 7))
    c = find_strategy_layers(P, y, n_boot=200, seed=8).classes["A"]
    np.testing.assert_array_equal(a.ci_low, b.ci_low)
    assert not np.array_equal(a.ci_low, c.ci_low)


def test_csv_round_trip_is_atomic(tmp_path):
    P, y = two_classes()
    r = find_strategy_layers(P, y, n_boot=100)
    path = write_strategies(r, tmp_path / "sub" / "s.csv")
    assert sorted(p.name for p in path.parent.iterdir()) == ["s.csv"]  # no temporary file left behind
    back, table = pd.read_csv(path, dtype={"note": "string"}), strategy_table(r)
    assert len(table) == 3 * 2 * 2 * 3  # class x variant x kind x rank
    pd.testing.assert_frame_equal(back, table, check_dtype=False)


def test_plot(tmp_path):
    P, y = two_classes()
    fig = plot_strategies(find_strategy_layers(P, y, n_boot=50, model="toy"), band="ci")
    assert "toy" in fig.axes[0].get_title() and "n=35" in fig.axes[0].get_title()
    with pytest.raises(UserError, match="band"):
        plot_strategies(find_strategy_layers(P, n_boot=10), band="sem")


def results_file(path, windows=False):
    P, y = two_classes()
    prompts = np.where(y == "A", "counting_prompt_1_base", "semantic_prompt_2_rev").tolist()
    cols = {"entropy": list(P.astype(np.float32)), "renyi_0.5": list(P.astype(np.float32) + 1),
            "prompt": prompts, "correct": [int(i % 2) for i in range(len(P))], "model": ["toy-model"] * len(P)}
    meta = {"num_windows": 6, "layout": "format_records"} if windows else {}
    Results(cols, meta).to_npz(path)
    return path


def test_from_results_labels_metrics_and_windows(tmp_path):
    res = Results.load(results_file(tmp_path / "r.npz"))
    r = strategies_from_results(res, label="prompt", n_boot=50)
    assert list(r.classes) == ["overall", "counting", "semantic"] and r.aggregation == "token"
    assert r.classes["counting"].top("all", "expansion")[0].layer == 4 and r.model == "toy-model"
    assert list(strategies_from_results(res, label="correct", n_boot=10).classes) == ["overall", "0", "1"]
    renyi = strategies_from_results(res, metric="renyi_0.5", n_boot=10)
    np.testing.assert_allclose(renyi.classes["overall"].mean_dh, r.classes["overall"].mean_dh, atol=1e-5)
    with pytest.raises(UserError, match="entropy, renyi_0.5"):
        strategies_from_results(res, metric="kl_final")
    w = strategies_from_results(Results.load(results_file(tmp_path / "w.npz", windows=True)), n_boot=10)
    assert w.aggregation == "window" and list(w.classes) == ["overall"]


def test_command_end_to_end(tmp_path, capsys):
    from model_inspector.commands.strategies import main

    src = results_file(tmp_path / "run.npz")
    out = tmp_path / "out"
    assert main([str(src), "--label", "prompt", "--n_boot", "100", "--out_dir", str(out)]) == 0
    text = capsys.readouterr().out
    assert "counting (n=20)" in text and "semantic (n=15)" in text
    assert "layer  4 -> depth 0.42" in text and "stability: samples 1.00, bootstrap 1.00" in text
    table = pd.read_csv(out / "run_strategies_prompt.csv")
    assert set(table["class"]) == {"overall", "counting", "semantic"} and (table["unit"] == "nats").all()
    assert (out / "run_strategies_prompt.png").stat().st_size > 10_000
    assert main([str(src), "--metric", "renyi_0.5", "--no_plot", "--n_boot", "10", "--out_dir", str(out)]) == 0
    assert (out / "run_strategies_overall_renyi_0.5.csv").exists()
    assert not (out / "run_strategies_overall_renyi_0.5.png").exists()


def test_command_bad_label_is_one_line(tmp_path):
    from model_inspector.commands.strategies import main

    src = results_file(tmp_path / "run.npz")
    with pytest.raises(UserError) as exc:
        main([str(src), "--label", "task", "--no_plot"])
    msg = str(exc.value)
    assert "\n" not in msg and "unknown label 'task'" in msg and "prompt, correct, model" in msg
    assert not list(tmp_path.glob("*_strategies_*"))
    with pytest.raises(UserError):
        main([str(tmp_path / "missing.npz")])


STORY_TASKS = {"continuation": "How can the story be continued?", "counting": "How many words are in the story?",
               "semantic": "What is the main idea of the story?"}


@pytest.mark.slow
def test_real_run_invariants(smollm2, shared_data):
    with open(shared_data / "tinystories_validation_head.jsonl") as fh:
        stories = [s for s in (json.loads(line)["text"] for line in fh) if len(s) <= 400][:2]
    prompts = [f"{s}\n\n{task}\n\n" for s in stories for task in STORY_TASKS.values()]
    labels = [name for _ in stories for name in STORY_TASKS]
    prof = smollm2.profile(prompts, max_len=4, sample=True, seed=0)
    H = prof.entropy  # [prompt, token, layer]
    n_layers = smollm2.n_layers
    assert H.shape == (6, 4, n_layers)
    dH = entropy_differences(H)
    valid = np.isfinite(H).all(-1)
    np.testing.assert_allclose(dH.sum(-1)[valid], (H[..., -1] - H[..., 0])[valid], atol=1e-4)
    r = find_strategy_layers(H, labels, n_boot=200)
    first_last = np.nanmean(H[..., -1] - H[..., 0].astype(float), axis=1)  # per sample, over valid tokens
    for name, c in r.classes.items():
        sel = np.ones(6, bool) if name == "overall" else np.array(labels) == name
        assert c.n == sel.sum() and c.mean_dh.shape == (n_layers - 1,)
        assert c.mean_dh.sum() == pytest.approx(first_last[sel].mean(), abs=1e-4)  # telescoping per class
        for s in c.layers:
            assert 0 <= s.sample_stability <= 1 and 0 <= s.bootstrap_stability <= 1
            assert s.ci_low <= s.mean_dh <= s.ci_high and 1 <= s.layer <= n_layers - 1
            assert (s.mean_dh > 0) == (s.kind == "expansion")
