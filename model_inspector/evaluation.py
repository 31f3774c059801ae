"""Every evaluation of entropy profiles, in one place (scikit-learn and scipy throughout).

* :func:`evaluate_knn` — the paper's evaluation: stratified, shuffled k-fold CV of a k-NN classifier
  against a stratified dummy baseline, fold by fold, and a paired t-test of the per-fold ROC-AUCs
  (macro one-vs-rest for more than two classes, the positive-class AUC for two).
* :func:`split_report` — an 80/20 stratified split: classification report and confusion matrix.
* :func:`separation_score` — how well profiles separate by a label (silhouette, k-NN accuracy in CV).
* :func:`features_from_results` — the feature matrix of a results file.
"""

from __future__ import annotations

import numpy as np
from scipy import stats
from sklearn.dummy import DummyClassifier
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.neighbors import KNeighborsClassifier

from .errors import UserError

__all__ = ["evaluate_knn", "features_from_results", "split_report", "separation_score", "InsufficientDataError"]


class InsufficientDataError(UserError):
    """Too few samples (per class) for the requested folds."""


def _auc(y_true, proba, classes) -> float:
    if len(classes) == 2:
        return roc_auc_score(y_true == classes[1], proba[:, 1])
    return roc_auc_score(y_true, proba, multi_class="ovr", average="macro", labels=classes)


def evaluate_knn(X, y, *, k: int = 29, n_splits: int = 10, weights: str = "uniform", seed: int = 42,
                 alpha: float = 0.05) -> dict:
    """k-NN (Euclidean) vs ``DummyClassifier(strategy="stratified")`` in stratified ``n_splits``-fold CV.

    ``X``: ``[sample, feature]``; ``y``: ``[sample]`` labels. Returns a dict with ``model_roc_auc``,
    ``baseline_roc_auc`` (fold means), ``k`` and ``k_used`` (k is capped by the training fold's
    size: ``k_used < k`` says so), ``improvement``, ``p_value`` (paired t-test over folds),
    ``significant`` (p < alpha), ``model_auc_by_fold``, ``baseline_auc_by_fold``, ``model_accuracy``
    (with ``_std`` and ``_by_fold``), ``baseline_accuracy``, ``n_samples``, ``classes``, ``class_counts``."""
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y)
    if X.ndim != 2 or len(X) != len(y):
        raise ValueError(f"X must be [sample, feature] matching y (got X {X.shape}, y {y.shape})")
    if not np.isfinite(X).all():
        raise UserError("features contain NaN or inf (a profile with no valid token?)")
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise InsufficientDataError(f"only one class ({str(classes[0])!r}) among {len(y)} samples: nothing to "
                                    "classify (choose another --label)")
    if counts.min() < n_splits:
        raise InsufficientDataError(
            f"class {str(classes[counts.argmin()])!r} has {counts.min()} samples, fewer than the {n_splits} folds; "
            f"profile more samples or lower --folds (to at most {counts.min()})"
        )
    cv = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    m_auc, b_auc, m_acc, b_acc = [], [], [], []
    k_used = k
    for fold, (tr, te) in enumerate(cv.split(X, y)):
        kk = min(k, len(tr))
        k_used = min(k_used, kk)
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
        "k": int(k),
        "k_used": int(k_used),
        "classes": [str(c) for c in classes],
        "class_counts": [int(c) for c in counts],
    }


def features_from_results(data: dict, key: str = "entropy", num_windows: int | None = None) -> np.ndarray:
    """Features ``[sample, feature]``: the mean profile over generated tokens (``[L]``) or, with
    ``num_windows``, the window means flattened (``[num_windows * L]``)."""
    from .profiling import window_mean

    rows = []
    for prof in data[key]:
        prof = np.asarray(prof, dtype=np.float64)
        if prof.ndim != 2:
            raise UserError(f"'{key}' entries must be [token, layer] arrays (got shape {prof.shape})")
        rows.append(window_mean(prof, num_windows or 1, axis=0).reshape(-1))
    return np.stack(rows)


def split_report(X, y, k: int, test_size: float = 0.2, seed: int = 42):
    """k-NN (Euclidean) on a stratified ``1 - test_size`` / ``test_size`` split: ``(classification report
    dict, confusion matrix [class, class], class labels)``."""
    from sklearn.metrics import classification_report, confusion_matrix
    from sklearn.model_selection import train_test_split

    y = np.asarray(y)
    labels = sorted(set(y.tolist()))
    n_test = int(np.ceil(test_size * len(y)))
    if n_test < len(labels) or len(y) - n_test < len(labels):
        raise InsufficientDataError(
            f"a {test_size:g} test split of {len(y)} samples holds {n_test}, fewer than the {len(labels)} classes; "
            "profile more samples or change --test-size")
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=test_size, stratify=y, random_state=seed)
    clf = KNeighborsClassifier(n_neighbors=min(k, len(Xtr)), metric="euclidean").fit(Xtr, ytr)
    pred = clf.predict(Xte)
    return (classification_report(yte, pred, labels=labels, zero_division=0, output_dict=True),
            confusion_matrix(yte, pred, labels=labels), labels)


def separation_score(X: np.ndarray, families, k: int = 5, n_splits: int = 5, seed: int = 42) -> dict:
    """How well profiles separate by family: silhouette (Euclidean, in [-1, 1]) and k-NN family
    accuracy in stratified CV (mean and std over folds, with the majority-class rate for reference)."""
    from sklearn.metrics import silhouette_score
    from sklearn.model_selection import cross_val_score

    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(families)
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise UserError("separation needs at least two families")
    folds = int(min(n_splits, counts.min()))
    if folds < 2:
        raise UserError(f"family {str(classes[counts.argmin()])!r} has {counts.min()} profile(s); need >= 2 per family")
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    kk = max(1, min(k, int(len(y) * (folds - 1) / folds) - 1))
    acc = cross_val_score(KNeighborsClassifier(n_neighbors=kk), X, y, cv=cv)
    return {"silhouette": float(silhouette_score(X, y)), "knn_accuracy": float(acc.mean()),
            "knn_accuracy_std": float(acc.std()), "chance_accuracy": float(counts.max() / counts.sum()),
            "n_profiles": int(len(y)), "n_families": int(len(classes)), "folds": folds, "k": kk}
