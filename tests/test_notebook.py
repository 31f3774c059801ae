"""get_model_entropy.ipynb executes headless on the embedded models (small N), and the family tools."""

import os
from pathlib import Path

import numpy as np
import pytest

from model_inspector.evaluation import separation_score
from model_inspector.family import align_profiles, embed, resample_depth

ROOT = Path(__file__).resolve().parents[1]


def test_resample_depth():
    p = np.array([[1.0, 2.0, 3.0]])
    np.testing.assert_allclose(resample_depth(p, 6), [[1, 1, 1.5, 2, 2.5, 3]])
    np.testing.assert_allclose(resample_depth(p, 5, "zero_pad"), [[1, 2, 3, 0, 0]])
    X, models = align_profiles({"a": np.ones((2, 4)), "b": np.zeros((3, 8))})
    assert X.shape == (5, 8) and list(models) == ["a", "a", "b", "b", "b"]
    with pytest.raises(ValueError, match="unknown method"):
        resample_depth(p, 4, "nope")


def test_separation_score_and_embedding():
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(0, 1, (20, 12)), rng.normal(4, 1, (20, 12))])
    fam = np.array(["a"] * 20 + ["b"] * 20)
    s = separation_score(X, fam)
    assert s["silhouette"] > 0.5 and s["knn_accuracy"] > 0.95
    mixed = separation_score(rng.normal(size=(40, 12)), fam)
    assert mixed["silhouette"] < 0.1 and mixed["knn_accuracy"] < 0.8
    assert embed(X, "tsne").shape == (40, 2) and embed(X, "pca").shape == (40, 2)


@pytest.mark.slow
def test_notebook_executes(tmp_path):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(ROOT / "get_model_entropy.ipynb", as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit the notebook without outputs"
    env = {"EL_N_SAMPLES": "6", "EL_N_TOKENS": "3", "EL_CACHE_DIR": str(tmp_path / "cache"),
           "EL_PLOT_DIR": str(tmp_path / "plots")}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    out = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "silhouette" in out and "k-NN family accuracy" in out
    assert "zero-padded (the paper's setting)" in out and "interpolated to relative depth (ours)" in out
    for name in ("family_profiles.png", "family_profiles.pdf", "family_tsne.png", "token_heatmap.png"):
        assert (tmp_path / "plots" / name).stat().st_size > 3000
    cached = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert cached == ["gemma-3-270m_N6_T3_temp0.7_seed42.csv", "smollm2-135m-instruct_N6_T3_temp0.7_seed42.csv"]
