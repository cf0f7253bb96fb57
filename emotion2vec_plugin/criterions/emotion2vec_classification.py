"""fairseq criterion ``emotion2vec_classification``: cross-entropy on utterance labels, WA / UA / F1 logged.

Takes the model's ``{"logits": [B, C]}`` (``models/emotion2vec_classifier.py``) and
``sample["target"]`` [B]. The loss is the *summed* cross-entropy (optionally label-smoothed and
class-weighted) with ``sample_size`` = utterances, which fairseq divides out across update_freq
and GPUs. Every logging output carries per-class counts (``tp``, ``true``, ``pred``; see
``evaluation/metrics.py``) that fairseq sums over batches and workers, so ``wa``, ``ua``,
``macro_f1`` and ``weighted_f1`` (in %) are exact for the whole validation set and
``checkpoint.best_checkpoint_metric=ua checkpoint.maximize_best_checkpoint_metric=true`` keeps
the best model.
"""

from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from fairseq import metrics
from fairseq.criterions import FairseqCriterion, register_criterion
from fairseq.dataclass import FairseqDataclass

from .common_metrics import log_loss_and_counts
from ..evaluation.metrics import METRICS, class_counts, log_name, scores_from_counts

COUNTS = ("tp", "true", "pred")


@dataclass
class Emotion2vecClassificationCriterionConfig(FairseqDataclass):
    label_smoothing: float = field(default=0.0, metadata={"help": "label smoothing epsilon in [0, 1)"})
    class_weights: Optional[str] = field(
        default=None,
        metadata={"help": "per-class loss weights: 'balanced' (N / (C * n_c) from the training label counts) or "
                          "comma-separated numbers in the label order (labels.txt); null = all 1"},
    )


def parse_class_weights(spec: Optional[str], task) -> Optional[torch.Tensor]:
    """criterion.class_weights -> [C] float tensor or None (ValueError showing the values)."""
    if spec is None or str(spec).strip() in ("", "none"):
        return None
    labels = list(task.labels)
    if str(spec).strip() == "balanced":
        if not task.label_counts:
            raise ValueError("criterion.class_weights=balanced needs the training label counts (task.data)")
        return torch.tensor(task.class_weights_balanced(), dtype=torch.float32)
    try:
        values = [float(v) for v in str(spec).split(",")]
    except ValueError:
        raise ValueError(f"criterion.class_weights={spec!r}: expected 'balanced' or comma-separated numbers") from None
    if len(values) != len(labels) or any(v < 0 for v in values) or sum(values) <= 0:
        raise ValueError(f"criterion.class_weights={spec!r}: need {len(labels)} non-negative numbers, one per class "
                         f"in the order {labels}")
    return torch.tensor(values, dtype=torch.float32)


@register_criterion("emotion2vec_classification", dataclass=Emotion2vecClassificationCriterionConfig)
class Emotion2vecClassificationCriterion(FairseqCriterion):
    def __init__(self, cfg: Emotion2vecClassificationCriterionConfig, task):
        super().__init__(task)
        if not 0.0 <= cfg.label_smoothing < 1.0:
            raise ValueError(f"criterion.label_smoothing={cfg.label_smoothing} must be in [0, 1)")
        self.label_smoothing = cfg.label_smoothing
        self.num_classes = len(task.labels)
        weights = parse_class_weights(cfg.class_weights, task)
        self.register_buffer("class_weights", weights if weights is not None else torch.ones(self.num_classes),
                             persistent=False)
        self.weighted = weights is not None

    def forward(self, model, sample, reduce: bool = True):
        logits = model(**sample["net_input"])["logits"].float()  # [B, C]
        target = sample["target"]
        loss = F.cross_entropy(logits, target, weight=self.class_weights.to(logits.device) if self.weighted else None,
                               label_smoothing=self.label_smoothing, reduction="sum")
        n = target.numel()
        logging_output = {
            "loss": loss.detach(),
            "sample_size": n,
            "ntokens": n,
            "nsentences": n,
            "bad_files": sample.get("bad_files", 0),
            "nonfinite_loss": 0,  # set by the task's guard; every output carries the same keys
        }
        counts = class_counts(logits.argmax(dim=-1).detach(), target, self.num_classes)
        for key in COUNTS:
            for c, value in enumerate(counts[key].tolist()):
                logging_output[f"{key}_{c}"] = value
        return loss, n, logging_output

    @staticmethod
    def reduce_metrics(logging_outputs: List[Dict]) -> None:
        total, _ = log_loss_and_counts(logging_outputs)
        keys = set().union(*(log.keys() for log in logging_outputs)) if logging_outputs else set()
        num_classes = sum(1 for k in keys if k.startswith("true_"))
        if num_classes == 0:
            return
        # hidden running sums ("_" prefix: not printed); the scores are derived from them, so
        # they are exact over the whole aggregation window (a validation pass, a log interval)
        for key in COUNTS:
            for c in range(num_classes):
                metrics.log_scalar_sum(f"_{key}_{c}", total(f"{key}_{c}"))

        def score(name):
            def derive(meters) -> float:
                tp, true, pred = ([meters[f"_{k}_{c}"].sum for c in range(num_classes)] for k in COUNTS)
                return round(100.0 * scores_from_counts(tp, true, pred)[name], 2)
            return derive

        for name in METRICS:
            metrics.log_derived(log_name(name), score(name))

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        # every entry is a sum or a count, so fairseq may all-reduce them (fast_stat_sync path)
        return True
