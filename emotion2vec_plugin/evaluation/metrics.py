"""The classification scores, under one set of names for every tool.

Every tool that scores emotion predictions (``e2v-probe``, the fine-tuning validation of the
``emotion2vec_classification`` criterion, ``e2v-predict``, the demo report) reports these four,
in [0, 1] (the fairseq log shows them in %):

==============  ===================  ==============  ==================================================
key (JSON)      fairseq log key      table header    definition
==============  ===================  ==============  ==================================================
``WA``          ``wa``               WA              accuracy (weighted accuracy)
``UA``          ``ua``               UA              balanced accuracy: mean recall over the classes
                                                     present in the true labels (unweighted accuracy)
``macro_f1``    ``macro_f1``         macro-F1        mean F1 over the classes that occur in the true
                                                     or the predicted labels
``weighted_f1`` ``weighted_f1``      weighted-F1     F1 per class weighted by its number of true labels
==============  ===================  ==============  ==================================================

Two ways to compute them, equal on the same predictions (``tests/test_metrics.py``):

* :func:`compute_metrics` from the label lists (scikit-learn's ``accuracy_score``,
  ``balanced_accuracy_score``, ``f1_score(average="macro"/"weighted")``), with the confusion
  matrix: the probes and ``e2v-predict``;
* :func:`scores_from_counts` from per-class counts: a batch gives, per class c, ``true_c``
  (utterances whose label is c), ``pred_c`` (predicted as c) and ``tp_c`` (both)
  (:func:`class_counts`); these add up over validation batches and DDP workers, so the scores of
  the whole set follow exactly from the sums (the fine-tuning criterion):

  * WA = sum_c tp_c / sum_c true_c
  * UA = mean over classes with true_c > 0 of tp_c / true_c
  * macro-F1 = mean over classes with true_c + pred_c > 0 of 2 tp_c / (true_c + pred_c)
  * weighted-F1 = sum_c true_c / sum_c true_c' * 2 tp_c / (true_c + pred_c)
"""

import warnings
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch

WA, UA, MACRO_F1, WEIGHTED_F1 = "WA", "UA", "macro_f1", "weighted_f1"
METRICS = (WA, UA, MACRO_F1, WEIGHTED_F1)
TITLES = {WA: "WA", UA: "UA", MACRO_F1: "macro-F1", WEIGHTED_F1: "weighted-F1"}  # table headers


def log_name(metric: str) -> str:
    """The key of ``metric`` in fairseq's logs (lower case: ``wa``, ``ua``, ``macro_f1``, ``weighted_f1``),
    e.g. for ``checkpoint.best_checkpoint_metric``."""
    return metric.lower()


def encode_labels(labels: Sequence[str], error: type = ValueError) -> Tuple[List[str], np.ndarray]:
    """Class names in sorted order and each label's index [N] (int64); ``error`` (the caller's
    error type) when fewer than 2 classes are present."""
    names = sorted(set(labels))
    if len(names) < 2:
        raise error(f"all {len(labels)} utterances have the label {names[0]!r}; a probe needs >= 2 classes")
    index = {name: i for i, name in enumerate(names)}
    return names, np.array([index[v] for v in labels], dtype=np.int64)


def unweighted_accuracy(y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    """UA: mean recall over the classes present in ``y_true`` (sklearn's balanced accuracy)."""
    from sklearn.metrics import balanced_accuracy_score

    with warnings.catch_warnings():
        # a small validation/test group may lack a class the model still predicts: expected, not news
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        # a one-class test set (a small official fold) predicted right: UA is 1, as it should be
        warnings.filterwarnings("ignore", message="A single label was found")
        return float(balanced_accuracy_score(y_true, y_pred))


def compute_metrics(y_true: Sequence[int], y_pred: Sequence[int], label_names: Sequence[str]) -> Dict[str, object]:
    """WA, UA, macro-F1, weighted-F1 and the confusion matrix (rows = true, cols = predicted, in
    ``label_names`` order) of class indices ``y_true``, ``y_pred`` [N]."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

    return {
        WA: float(accuracy_score(y_true, y_pred)),
        UA: unweighted_accuracy(y_true, y_pred),
        MACRO_F1: float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        WEIGHTED_F1: float(f1_score(y_true, y_pred, average="weighted", zero_division=0)),
        "confusion": {"labels": list(label_names), "rows": "true", "cols": "predicted",
                      "matrix": confusion_matrix(y_true, y_pred, labels=list(range(len(label_names)))).tolist()},
    }


def class_counts(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> Dict[str, torch.Tensor]:
    """pred, target [N] class indices -> ``{"tp", "true", "pred"}``, each [C] int64."""
    pred, target = pred.reshape(-1).long(), target.reshape(-1).long()
    return {
        "tp": torch.bincount(target[pred == target], minlength=num_classes),
        "true": torch.bincount(target, minlength=num_classes),
        "pred": torch.bincount(pred, minlength=num_classes),
    }


def scores_from_counts(tp: Sequence[float], true: Sequence[float], pred: Sequence[float]) -> Dict[str, float]:
    """:data:`METRICS` in [0, 1] from per-class counts [C] (0 where nothing was counted)."""
    present = [c for c in range(len(true)) if true[c] > 0]
    seen = [c for c in range(len(true)) if true[c] + pred[c] > 0]
    total = sum(true)
    return {
        WA: sum(tp) / total if total else 0.0,
        UA: sum(tp[c] / true[c] for c in present) / len(present) if present else 0.0,
        MACRO_F1: sum(2 * tp[c] / (true[c] + pred[c]) for c in seen) / len(seen) if seen else 0.0,
        WEIGHTED_F1: sum(true[c] * 2 * tp[c] / (true[c] + pred[c]) for c in present) / total if total else 0.0,
    }


def fold_summary(folds: Sequence[Dict[str, float]], metrics: Sequence[str]) -> Dict[str, Dict[str, float]]:
    """{metric: {"mean", "std"}} over cross-validation folds (population std, ddof=0)."""
    return {m: {"mean": float(np.mean([f[m] for f in folds])), "std": float(np.std([f[m] for f in folds]))}
            for m in metrics}
