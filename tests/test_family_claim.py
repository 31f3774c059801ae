"""Claim (ii): profiles of one family agree on relative depth whatever the depth; the agreement is a number per
model pair, and a family with one model is named as untestable."""

import numpy as np
import pytest
from helpers import run_cli

from model_inspector.family import agreement_summary, depth_agreement


def _family_curve(L, kind, n=20, seed=0):
    rng = np.random.default_rng(seed)
    x = (np.arange(L) + 1) / L
    curve = 3 * np.sin(np.pi * x) if kind == "arch" else 4 * x ** 2
    return curve + 0.05 * rng.normal(size=(n, L))


def test_depth_rescaled_profiles_of_one_family_agree():
    by = {"arch-12": _family_curve(12, "arch"), "arch-30": _family_curve(30, "arch", seed=1),
          "ramp-18": _family_curve(18, "ramp", seed=2)}
    fam = {"arch-12": "arch", "arch-30": "arch", "ramp-18": "ramp"}
    pairs = depth_agreement(by, fam, n_points=48, n_boot=50)
    same = pairs[pairs["same_family"]].iloc[0]
    assert same["pearson_r"] > 0.99 and same["r_ci_low"] > 0.98 and same["rmse_nats"] < 0.2
    assert (pairs.loc[~pairs["same_family"], "pearson_r"] < 0.6).all()
    s = agreement_summary(pairs, fam)
    assert s["within_pairs"] == 1 and s["between_pairs"] == 2 and s["one_model_families"] == ["ramp"]
    assert s["within_r_mean"] > s["between_r_mean"]


@pytest.mark.slow
def test_family_command_on_the_embedded_models(tmp_path):
    for model in ("smollm2-135m-instruct", "gemma-3-270m"):
        run_cli("run", "family", model, "--n_samples", 6, "--max_len", 4, "--batch_size", 6, "--results_dir",
                tmp_path, "--no_progress")
    proc = run_cli("family", tmp_path / "smollm2-135m-instruct_family_6.pkl", tmp_path / "gemma-3-270m_family_6.pkl",
                   "--n_boot", 20, "--no_plot")
    assert "r = " in proc.stdout and "between-family pairs: 1" in proc.stdout
    assert "one model only in gemma, smollm2" in proc.stdout and (tmp_path / "family_agreement.csv").exists()
