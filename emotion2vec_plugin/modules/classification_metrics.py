"""WA, UA and macro-F1 from per-class counts that can be summed across batches and GPUs.

A classifier's batch gives, per class c, ``true_c`` (utterances whose label is c), ``pred_c``
(utterances predicted as c) and ``tp_c`` (both). These counts add up over validation batches and
over DDP workers, and the scores of the whole set follow from the sums:

* WA (weighted accuracy, plain accuracy) = sum_c tp_c / sum_c true_c
* UA (unweighted accuracy, balanced accuracy) = mean over classes with true_c > 0 of tp_c / true_c
* macro-F1 = mean over classes with true_c + pred_c > 0 of 2 tp_c / (true_c + pred_c)

(sklearn's accuracy_score, balanced_accuracy_score and f1_score(average="macro") on the same
predictions; the classes averaged over are the ones sklearn uses.)
"""

from typing import Dict, Sequence

import torch


def class_counts(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> Dict[str, torch.Tensor]:
    """pred, target [N] class indices -> ``{"tp", "true", "pred"}``, each [C] int64."""
    pred, target = pred.reshape(-1).long(), target.reshape(-1).long()
    return {
        "tp": torch.bincount(target[pred == target], minlength=num_classes),
        "true": torch.bincount(target, minlength=num_classes),
        "pred": torch.bincount(pred, minlength=num_classes),
    }


def scores_from_counts(tp: Sequence[float], true: Sequence[float], pred: Sequence[float]) -> Dict[str, float]:
    """``{"wa", "ua", "macro_f1"}`` in [0, 1] from per-class counts (0 where nothing was counted)."""
    present = [c for c in range(len(true)) if true[c] > 0]
    seen = [c for c in range(len(true)) if true[c] + pred[c] > 0]
    total = sum(true)
    return {
        "wa": sum(tp) / total if total else 0.0,
        "ua": sum(tp[c] / true[c] for c in present) / len(present) if present else 0.0,
        "macro_f1": sum(2 * tp[c] / (true[c] + pred[c]) for c in seen) / len(seen) if seen else 0.0,
    }
