"""k-NN evaluation of entropy profiles, as in the paper (scikit-learn throughout).

``evaluate_knn`` runs a stratified, shuffled k-fold CV of a k-NN classifier against a stratified
dummy baseline, fold by fold, and a paired t-test (scipy) of the per-fold ROC-AUCs.
ROC-AUC is macro one-vs-rest for more than two classes and the positive-class AUC for two.
"""

from __future__ import annotations

import numpy as np
from scipy import stats
from sklearn.dummy import DummyClassifier
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.neighbors import KNeighborsClassifier

__all__ = ["evaluate_knn", "features_from_results", "InsufficientDataError"]


class InsufficientDataError(ValueError):
    """Too few samples (per class) for the requested folds."""


def _auc(y_true, proba, classes) -> float:
    if len(classes) == 2:
        return roc_auc_score(y_true == classes[1], proba[:, 1])
    return roc_auc_score(y_true, proba, multi_class="ovr", average="macro", labels=classes)


def evaluate_knn(X, y, *, k: int = 29, n_splits: int = 10, weights: str = "uniform", seed: int = 42,
                 alpha: float = 0.05) -> dict:
    """k-NN (Euclidean) vs ``DummyClassifier(strategy="stratified")`` in stratified ``n_splits``-fold CV.

    ``X``: ``[sample, feature]``; ``y``: ``[sample]`` labels. Returns a dict with ``model_roc_auc``,
    ``baseline_roc_auc`` (fold means), ``improvement``, ``p_value`` (paired t-test over folds),
    ``significant`` (p < alpha), ``model_auc_by_fold``, ``baseline_auc_by_fold``, ``model_accuracy``
    (with ``_std`` and ``_by_fold``), ``baseline_accuracy``, ``n_samples``, ``classes``, ``class_counts``."""
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y)
    if X.ndim != 2 or len(X) != len(y):
        raise ValueError(f"X must be [sample, feature] matching y (got X {X.shape}, y {y.shape})")
    if not np.isfinite(X).all():
        raise ValueError("features contain NaN or inf (a profile with no valid token?)")
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise InsufficientDataError(f"only one class ({classes[0]!r}) among {len(y)} samples: nothing to classify")
    if counts.min() < n_splits:
        raise InsufficientDataError(
            f"class {classes[counts.argmin()]!r} has {counts.min()} samples, fewer than the {n_splits} folds; "
            "profile more samples (or lower the number of folds)"
        )
    cv = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    m_auc, b_auc, m_acc, b_acc = [], [], [], []
    for fold, (tr, te) in enumerate(cv.split(X, y)):
        kk = min(k, len(tr))
        model = KNeighborsClassifier(n_neighbors=kk, weights=weights, metric="euclidean").fit(X[tr], y[tr])
        base = DummyClassifier(strategy="stratified", random_state=seed + fold).fit(X[tr], y[tr])
        for clf, aucs, accs in ((model, m_auc, m_acc), (base, b_auc, b_acc)):
            proba = clf.predict_proba(X[te])
            aucs.append(_auc(y[te], proba, clf.classes_))
            accs.append(accuracy_score(y[te], clf.classes_[proba.argmax(1)]))
    m_auc, b_auc = np.array(m_auc), np.array(b_auc)
    if np.allclose(m_auc - b_auc, (m_auc - b_auc)[0]):
        p_value = 0.0 if abs((m_auc - b_auc)[0]) > 0 else 1.0
    else:
        p_value = float(stats.ttest_rel(m_auc, b_auc).pvalue)
    return {
        "model_roc_auc": float(m_auc.mean()),
        "baseline_roc_auc": float(b_auc.mean()),
        "improvement": float(m_auc.mean() - b_auc.mean()),
        "p_value": p_value,
        "significant": bool(p_value < alpha),
        "model_auc_by_fold": [round(float(a), 6) for a in m_auc],
        "baseline_auc_by_fold": [round(float(a), 6) for a in b_auc],
        "model_accuracy": float(np.mean(m_acc)),
        "model_accuracy_std": float(np.std(m_acc)),
        "model_accuracy_by_fold": [round(float(a), 6) for a in m_acc],
        "baseline_accuracy": float(np.mean(b_acc)),
        "n_samples": int(len(y)),
        "classes": [str(c) for c in classes],
        "class_counts": [int(c) for c in counts],
    }


def features_from_results(data: dict, key: str = "entropy", num_windows: int | None = None) -> np.ndarray:
    """Features ``[sample, feature]``: the mean profile over generated tokens (``[L]``) or, with
    ``num_windows``, the window means flattened (``[num_windows * L]``)."""
    from .metrics import window_mean

    rows = []
    for prof in data[key]:
        prof = np.asarray(prof, dtype=np.float64)
        if prof.ndim != 2:
            raise ValueError(f"'{key}' entries must be [token, layer] arrays (got shape {prof.shape})")
        rows.append(window_mean(prof, num_windows or 1, axis=0).reshape(-1))
    return np.stack(rows)
