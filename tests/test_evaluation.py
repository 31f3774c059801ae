"""k-NN evaluation on synthetic data: separable -> AUC near 1, inseparable -> near 0.5."""

import numpy as np
import pytest

from model_inspector.evaluation import InsufficientDataError, evaluate_knn


def test_separable_three_classes():
    rng = np.random.default_rng(0)
    y = np.repeat(["a", "b", "c"], 60)
    X = rng.normal(size=(180, 10)) + np.repeat(np.eye(3, 10) * 6, 60, axis=0)
    r = evaluate_knn(X, y)
    assert r["model_roc_auc"] > 0.99 and r["model_accuracy"] > 0.95
    assert 0.35 < r["baseline_roc_auc"] < 0.65
    assert r["significant"] and r["p_value"] < 1e-6
    assert len(r["model_auc_by_fold"]) == 10


def test_inseparable_binary():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(400, 8))
    y = rng.integers(0, 2, 400)
    r = evaluate_knn(X, y)
    assert abs(r["model_roc_auc"] - 0.5) < 0.08
    assert abs(r["improvement"]) < 0.1


def test_too_few_per_class():
    X = np.zeros((15, 2))
    y = np.array([0] * 12 + [1] * 3)
    with pytest.raises(InsufficientDataError, match="fewer than the 10 folds"):
        evaluate_knn(X, y)
    with pytest.raises(InsufficientDataError, match="only one class"):
        evaluate_knn(X, np.zeros(15))
