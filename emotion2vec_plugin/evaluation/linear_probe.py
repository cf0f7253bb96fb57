"""A fast linear probe on mean-pooled utterance features (plain numpy / scikit-learn).

Used during pretraining (``task.probe_data``, the training probe) and offline
(``e2v-probe --probe linear``), so the two give the same numbers on the same checkpoint:

    frames [T_i, D] -> time mean over the valid frames -> x_i [D]
    (optional) per-group z-scoring: every dimension standardised with the mean / std of the
        utterances of the same group (speaker or session; the usual speaker normalisation of SER
        probes; it uses no labels, and the test group's own statistics)
    per fold: StandardScaler fitted on the training utterances -> multinomial LogisticRegression
        (lbfgs, L2, C = 1) -> WA (accuracy), UA (balanced accuracy) on the held-out utterances

Folds: leave-one-group-out when a group file gives >= 2 groups, else stratified k-fold with a
fixed seed. Scores are the mean (and population std) over folds, like ``e2v-probe``'s MLP
protocol. lbfgs is deterministic: the same features give the same numbers on every rank/run.
"""

import logging
import warnings
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..data.feature_store import FeatureSet
from ..errors import Emotion2vecError
from .metrics import UA, WA, encode_labels, fold_summary, unweighted_accuracy
from .standardize import zscore_per_group

logger = logging.getLogger(__name__)

NORMALIZE_MODES = ("none", "group", "both")


class LinearProbeError(Emotion2vecError, ValueError):
    """Labels, groups or settings that cannot be probed; says what was expected and got."""


def per_group_standardize(x: np.ndarray, groups: Sequence[str]) -> np.ndarray:
    """z-score every dimension within each group: [N, D] -> [N, D] (float64; numpy's mean / std
    of the group's rows). A dimension that is constant within a group (std < 1e-8) is only centred."""
    rows = FeatureSet.from_arrays(np.asarray(x, dtype=np.float64))
    return np.concatenate(list(zscore_per_group(rows, groups, eps=1e-8, in_memory=True, dtype=np.float64)))


def make_folds(y: np.ndarray, groups: Optional[Sequence[str]], k: int, seed: int) -> List[Tuple[str, np.ndarray]]:
    """(fold name, test indices) pairs: one per group (>= 2 groups), else stratified k-fold."""
    if groups is not None and len(set(groups)) >= 2:
        g = np.asarray(groups)
        return [(str(name), np.flatnonzero(g == name)) for name in sorted(set(g.tolist()))]
    from sklearn.model_selection import StratifiedKFold

    smallest = int(np.bincount(y).min())
    n_splits = min(k, smallest)
    if n_splits < 2:
        raise LinearProbeError(f"k-fold probe: the smallest class has {smallest} utterance(s); need >= 2 per class "
                               f"(or give a .group file for leave-one-group-out)")
    splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    return [(f"fold{i}", test) for i, (_, test) in enumerate(splitter.split(np.zeros(len(y)), y))]


def fit_predict(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, C: float, max_iter: int) -> np.ndarray:
    """StandardScaler (train statistics) + multinomial L2 LogisticRegression (lbfgs): predicted class ids."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x_train)
    clf = LogisticRegression(C=C, max_iter=max_iter)
    with warnings.catch_warnings():
        # separable folds never "converge" for lbfgs' tolerance; the predictions are settled long before
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(scaler.transform(x_train), y_train)
    return clf.predict(scaler.transform(x_test))


def linear_probe_cv(x: np.ndarray, labels: Sequence[str], groups: Optional[Sequence[str]] = None,
                    folds: int = 5, seed: int = 0, per_group: bool = False, C: float = 1.0,
                    max_iter: int = 1000) -> dict:
    """Cross-validated linear probe on utterance vectors.

    Args:
        x: [N, D] utterance features (time means).
        labels: N class names (indexed in sorted order).
        groups: N fold keys (speaker/session) or None; >= 2 groups: leave-one-group-out.
        folds: k of the stratified k-fold used without groups; seed: its shuffle seed.
        per_group: z-score the features per group first (needs groups).
        C, max_iter: LogisticRegression settings.

    Returns:
        {"labels", "scheme" ("leave-one-group-out" | "k-fold"), "per_group", "folds": [{"group",
        "n_test", "UA", "WA"}], "summary": {"UA": {"mean", "std"}, "WA": {...}}}.
    """
    x = np.asarray(x, dtype=np.float64)
    labels = [str(v) for v in labels]
    if x.ndim != 2 or len(x) != len(labels) or (groups is not None and len(groups) != len(labels)):
        raise LinearProbeError(f"features {x.shape}, {len(labels)} labels, "
                               f"{'no' if groups is None else len(groups)} groups: expected [N, D] and N of each")
    names, y = encode_labels(labels, LinearProbeError)
    if per_group:
        if groups is None or len(set(groups)) < 2:
            raise LinearProbeError("per-group normalisation needs a group (speaker/session) per utterance")
        x = per_group_standardize(x, groups)
    results = []
    for name, test in make_folds(y, groups, folds, seed):
        train = np.setdiff1d(np.arange(len(y)), test)
        if len(np.unique(y[train])) < 2:
            raise LinearProbeError(f"fold {name!r}: the other folds hold a single class; a probe needs >= 2")
        pred = fit_predict(x[train], y[train], x[test], C, max_iter)
        results.append({"group": name, "n_test": int(len(test)), UA: unweighted_accuracy(y[test], pred),
                        WA: float(np.mean(pred == y[test]))})
    scheme = "leave-one-group-out" if groups is not None and len(set(groups)) >= 2 else "k-fold"
    return {"labels": names, "scheme": scheme, "per_group": per_group, "folds": results,
            "summary": fold_summary(results, (UA, WA))}
