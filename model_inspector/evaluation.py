"""Every evaluation of entropy profiles, in one place (scikit-learn and scipy throughout).

* :func:`evaluate_knn` — the paper's evaluation: stratified, shuffled k-fold CV of a k-NN classifier against a
  stratified dummy baseline, fold by fold, and a paired t-test of the per-fold ROC-AUCs (macro one-vs-rest for more
  than two classes, the positive-class AUC for two).
* :func:`evaluate_controls` — the same evaluation of several feature sets in the *same* folds (the paper's feature
  beside the controls a reviewer asks for: the last layer alone, the profile without it, prompt length, a
  random-weights run...), label permutations (an empirical p-value), and folds grouped by a column
  (``StratifiedGroupKFold``); each row has its n, spread across folds, direction against the baseline and its
  significance, and, for a control, its paired comparison with the paper's feature.
* :func:`split_report` — an 80/20 stratified split: classification report and confusion matrix.
* :func:`separation_score` — how well profiles separate by a label (silhouette, k-NN accuracy in CV).
* :func:`features_from_results` — the feature matrix of a results file; :func:`output_stem` — the one name of an
  evaluation's outputs (CSV, PNG), shared by ``evaluate`` and ``explore``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats
from sklearn.dummy import DummyClassifier
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from sklearn.neighbors import KNeighborsClassifier

from .errors import UserError

__all__ = ["evaluate_knn", "evaluate_controls", "Feature", "cv_splits", "paired_p", "features_from_results",
           "split_report", "separation_score", "InsufficientDataError", "output_stem", "EVALUATION_SUFFIXES"]


class InsufficientDataError(UserError):
    """Too few samples (per class) for the requested folds."""


def _auc(y_true, proba, classes) -> float:
    if len(classes) == 2:
        return roc_auc_score(y_true == classes[1], proba[:, 1])
    return roc_auc_score(y_true, proba, multi_class="ovr", average="macro", labels=classes)


def _check_labels(y, n_splits: int):
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise InsufficientDataError(f"only one class ({str(classes[0])!r}) among {len(y)} samples: nothing to "
                                    "classify (choose another --label)")
    if counts.min() < 2:
        raise InsufficientDataError(
            f"class {str(classes[counts.argmin()])!r} has {counts.min()} sample: cross-validation needs at least 2 "
            "samples per class; profile more samples (or choose another --label)")
    if counts.min() < n_splits:
        raise InsufficientDataError(
            f"class {str(classes[counts.argmin()])!r} has {counts.min()} samples, fewer than the {n_splits} folds; "
            f"profile more samples or lower --folds (to at most {counts.min()})")
    return classes, counts


def cv_splits(y, n_splits: int = 10, seed: int = 42, groups=None) -> list[tuple[np.ndarray, np.ndarray]]:
    """The (train, test) index pairs of stratified, shuffled ``n_splits``-fold CV (the paper's), or, with
    ``groups`` (``[sample]``), of ``StratifiedGroupKFold``: no group in both a training and a test fold."""
    y = np.asarray(y)
    if groups is None:
        return list(StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))
    groups = np.asarray(groups)
    n_groups = len(np.unique(groups))
    if n_groups < n_splits:
        raise InsufficientDataError(f"{n_groups} groups are fewer than the {n_splits} folds; lower --folds (to at "
                                    f"most {n_groups}) or profile more groups")
    return list(StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed).split(np.zeros(len(y)), y,
                                                                                               groups))


def _fold_scores(X, y, splits, *, k: int, weights: str = "uniform", seed: int = 42, dummy: bool = False):
    """Per-fold ROC-AUC and accuracy ``[fold]`` of k-NN (or of the stratified dummy) and the smallest k used."""
    aucs, accs, k_used = [], [], k
    for fold, (tr, te) in enumerate(splits):
        if dummy:
            clf = DummyClassifier(strategy="stratified", random_state=seed + fold).fit(X[tr], y[tr])
        else:
            kk = min(k, len(tr))
            k_used = min(k_used, kk)
            clf = KNeighborsClassifier(n_neighbors=kk, weights=weights, metric="euclidean").fit(X[tr], y[tr])
        proba = clf.predict_proba(X[te])
        aucs.append(_auc(y[te], proba, clf.classes_))
        accs.append(accuracy_score(y[te], clf.classes_[proba.argmax(1)]))
    return np.array(aucs), np.array(accs), k_used


def paired_p(a, b) -> float:
    """Two-sided paired t-test p-value of per-fold scores ``a`` vs ``b`` (0 or 1 when the differences are constant:
    a t statistic is undefined there)."""
    d = np.asarray(a) - np.asarray(b)
    if np.allclose(d, d[0]):
        return 0.0 if abs(d[0]) > 0 else 1.0
    return float(stats.ttest_rel(a, b).pvalue)


def evaluate_knn(X, y, *, k: int = 29, n_splits: int = 10, weights: str = "uniform", seed: int = 42,
                 alpha: float = 0.05, groups=None) -> dict:
    """k-NN (Euclidean) vs ``DummyClassifier(strategy="stratified")`` in stratified ``n_splits``-fold CV.

    ``X``: ``[sample, feature]``; ``y``: ``[sample]`` labels; ``groups``: ``[sample]`` (folds grouped, see
    :func:`cv_splits`). Returns a dict with ``model_roc_auc``, ``baseline_roc_auc`` (fold means), ``k`` and ``k_used``
    (k is capped by the training fold's size: ``k_used < k`` says so), ``improvement``, ``p_value`` (paired t-test
    over folds), ``significant`` (p < alpha), ``model_auc_by_fold``, ``baseline_auc_by_fold``, ``model_accuracy``
    (with ``_std`` and ``_by_fold``), ``baseline_accuracy``, ``n_samples``, ``classes``, ``class_counts``."""
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y)
    if X.ndim != 2 or len(X) != len(y):
        raise ValueError(f"X must be [sample, feature] matching y (got X {X.shape}, y {y.shape})")
    if not np.isfinite(X).all():
        raise UserError("features contain NaN or inf (a profile with no valid token?)")
    classes, counts = _check_labels(y, n_splits)
    splits = cv_splits(y, n_splits, seed, groups)
    m_auc, m_acc, k_used = _fold_scores(X, y, splits, k=k, weights=weights)
    b_auc, b_acc, _ = _fold_scores(X, y, splits, k=k, seed=seed, dummy=True)
    p_value = paired_p(m_auc, b_auc)
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


@dataclass(frozen=True)
class Feature:
    """A feature set to evaluate: ``X`` ``[sample, feature]`` (``None`` rows mean a sample the set lacks: refused),
    its ``name`` and a ``description`` (what it is, with its unit)."""

    name: str
    X: np.ndarray
    description: str


def evaluate_controls(features: list[Feature], y, *, k: int = 29, n_splits: int = 10, seed: int = 42,
                      weights: str = "uniform", alpha: float = 0.05, groups=None, group_name: str = "group",
                      n_permutations: int = 0) -> list[dict]:
    """Every feature set in the same folds: one row each (the first is the reference, the paper's feature), plus a
    row of the reference under ``n_permutations`` label permutations and, with ``groups``, a row of the reference
    with folds grouped by them.

    A row: ``feature``, ``description``, ``n_samples``, ``folds``, ``k_used``, ``roc_auc`` (mean over folds),
    ``roc_auc_std`` (across folds), ``roc_auc_by_fold``, ``accuracy``, ``baseline_roc_auc``, ``vs_baseline``
    (``higher``/``lower``/``equal``), ``p_vs_baseline`` (paired t-test over folds) and ``significant``, and for the
    other rows ``vs_reference`` and ``p_vs_reference`` (paired, same folds). The permutation row gives the
    permuted scores' mean and 95th percentile and the empirical p-value ``(1 + #(perm >= true)) / (1 + N)``."""
    y = np.asarray(y)
    _check_labels(y, n_splits)
    splits = cv_splits(y, n_splits, seed)
    base_auc, base_acc, _ = _fold_scores(np.zeros((len(y), 1)), y, splits, k=k, seed=seed, dummy=True)
    rows, ref = [], None

    def row(name, description, aucs, accs, k_used, base, fold_label=f"{n_splits}"):
        diff = aucs.mean() - base.mean()
        p = paired_p(aucs, base)
        out = {"feature": name, "description": description, "n_samples": int(len(y)), "folds": fold_label,
               "k_used": int(k_used), "roc_auc": float(aucs.mean()), "roc_auc_std": float(aucs.std()),
               "roc_auc_by_fold": [round(float(a), 6) for a in aucs], "accuracy": float(accs.mean()),
               "baseline_roc_auc": float(base.mean()),
               "vs_baseline": "higher" if diff > 0 else "lower" if diff < 0 else "equal",
               "p_vs_baseline": p, "significant": bool(p < alpha)}
        if ref is not None and len(aucs) == len(ref):
            d = aucs.mean() - ref.mean()
            out.update(vs_reference="higher" if d > 0 else "lower" if d < 0 else "equal",
                       p_vs_reference=paired_p(aucs, ref))
        return out

    for f in features:
        X = np.asarray(f.X, dtype=np.float64)
        if X.ndim == 1:
            X = X[:, None]
        if len(X) != len(y) or not np.isfinite(X).all():
            raise UserError(f"feature set {f.name!r}: {len(X)} rows for {len(y)} samples, or non-finite values")
        aucs, accs, k_used = _fold_scores(X, y, splits, k=k, weights=weights)
        rows.append(row(f.name, f.description, aucs, accs, k_used, base_auc))
        if ref is None:
            ref, ref_X, ref_k = aucs, X, k_used
    if n_permutations:
        rng = np.random.default_rng(seed)
        perm = []
        for _ in range(n_permutations):  # as scikit-learn's permutation_test_score: folds stratified on the permuted y
            yp = rng.permutation(y)
            perm.append(_fold_scores(ref_X, yp, cv_splits(yp, n_splits, seed), k=k, weights=weights)[0].mean())
        perm = np.array(perm)
        p_emp = float((1 + np.sum(perm >= ref.mean())) / (1 + n_permutations))
        rows.append({"feature": "label_permutations", "description": f"{features[0].name} with the labels permuted "
                     f"{n_permutations} times (same folds)", "n_samples": int(len(y)), "folds": f"{n_splits}",
                     "k_used": int(ref_k), "roc_auc": float(perm.mean()), "roc_auc_std": float(perm.std()),
                     "roc_auc_p95": float(np.percentile(perm, 95)), "n_permutations": int(n_permutations),
                     "baseline_roc_auc": float(base_auc.mean()), "p_reference_vs_permutations": p_emp,
                     "significant": bool(p_emp < alpha),
                     "vs_baseline": "higher" if perm.mean() > base_auc.mean() else "lower"})
    if groups is not None:
        g_splits = cv_splits(y, n_splits, seed, groups)
        aucs, accs, k_used = _fold_scores(ref_X, y, g_splits, k=k, weights=weights)
        g_base, _, _ = _fold_scores(ref_X, y, g_splits, k=k, seed=seed, dummy=True)
        saved, ref = ref, None  # grouped folds are other folds: no paired comparison with the reference
        rows.append(row(f"{features[0].name}_grouped", f"{features[0].name} with folds grouped by {group_name} "
                        "(no group in both a training and a test fold)", aucs, accs, k_used, g_base,
                        fold_label=f"{n_splits} grouped by {group_name}"))
        ref = saved
    return rows


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


#: the outputs of one evaluation, after its :func:`output_stem`
EVALUATION_SUFFIXES = ("_overall.csv", "_subject.csv", "_profiles.png")


def output_stem(results_path: str | Path, out_dir: str | Path | None = None, *, label: str, k: int, folds: int,
                metric: str | None = None, num_windows: int | None = None) -> Path:
    """The one name of an evaluation's outputs: ``[OUT_DIR/]NAME_tm_LABEL_kK_FOLDSfold[_METRIC][_wW]`` + a suffix
    of :data:`EVALUATION_SUFFIXES`, so that evaluations of one file by another label, k, folds, metric or windows
    never replace each other. ``explore`` finds them with the same function (``NAME_tm_*``)."""
    src = Path(results_path)
    parts = [f"{src.stem}_tm_{_safe(label)}_k{k}_{folds}fold"]
    if metric and metric != "entropy":
        parts.append(_safe(metric))
    if num_windows:
        parts.append(f"w{num_windows}")
    return (Path(out_dir) if out_dir else src.parent) / "_".join(parts)


def _safe(text: str) -> str:
    return re.sub(r"[^\w.-]", "_", str(text))


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
