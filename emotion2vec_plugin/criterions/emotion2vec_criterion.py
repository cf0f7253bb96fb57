"""fairseq criterion ``emotion2vec``: L = L_frame + alpha * L_utt (paper eq. 11, docs/design.md §3).

Takes the model's output dict (see ``models/emotion2vec_model.py`` for the contract) and the
loss functions of ``modules/losses.py``; returns the summed loss with ``sample_size`` = masked
frames, which fairseq divides out (across update_freq and GPUs alike).
"""

from dataclasses import dataclass, field
from typing import Dict, List

import torch
from fairseq import metrics
from fairseq.criterions import FairseqCriterion, register_criterion
from fairseq.dataclass import ChoiceEnum, FairseqDataclass

from .common_metrics import log_loss_and_counts
from ..modules.losses import REDUCTIONS, frame_loss_sum, utterance_loss

STAT_KEYS = ("target_var", "pred_var", "ema_decay", "mask_frac", "utt_target_norm")


@dataclass
class Emotion2vecCriterionConfig(FairseqDataclass):
    alpha: float = field(default=1.0, metadata={"help": "weight α of the utterance loss (paper: 1; released cls_loss: 1.0)"})
    loss_reduction: ChoiceEnum(list(REDUCTIONS)) = field(
        default="data2vec",
        metadata={
            "help": "data2vec: errors scaled by 1/sqrt(D), frame term averaged over masked frames, utterance "
            "term summed over utterances x clones (reproduces data2vec 2.0 / the released training); "
            "mean: plain MSEs (scale 1/D, both averaged), as the paper's equations read"
        },
    )


@register_criterion("emotion2vec", dataclass=Emotion2vecCriterionConfig)
class Emotion2vecCriterion(FairseqCriterion):
    def __init__(self, cfg: Emotion2vecCriterionConfig, task):
        super().__init__(task)
        if cfg.alpha < 0:
            raise ValueError(f"criterion.alpha={cfg.alpha} must be >= 0")
        self.alpha = cfg.alpha
        self.reduction = str(cfg.loss_reduction)

    def forward(self, model, sample, reduce: bool = True):
        out = model(**sample["net_input"])
        n = out["sample_size"]
        frame_sum = frame_loss_sum(out["frame_pred"], out["frame_target"], self.reduction)
        utt = utterance_loss(out["utt_pred"], out["utt_target"], self.reduction)
        loss = frame_sum + self.alpha * utt * n
        logging_output = {
            "loss": loss.detach(),
            "loss_frame": frame_sum.detach(),
            "loss_utt": utt.detach() * n,
            "sample_size": n,
            "ntokens": n,
            "nsentences": sample["net_input"]["source"].size(0),
            "n_outputs": 1,
            "bad_files": sample.get("bad_files", 0),
            "nonfinite_loss": 0,  # set by the task's guard; every output carries the same keys
        }
        for key in STAT_KEYS:
            value = out["stats"][key]
            logging_output[key] = value.detach() if torch.is_tensor(value) else value
        return loss, n, logging_output

    @staticmethod
    def reduce_metrics(logging_outputs: List[Dict]) -> None:
        total, _ = log_loss_and_counts(logging_outputs, ("loss", "loss_frame", "loss_utt"))
        n_outputs = max(total("n_outputs"), 1.0)
        for key in STAT_KEYS:
            metrics.log_scalar(key, total(key) / n_outputs, n_outputs, round=6 if key == "ema_decay" else 4)

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        # every entry is a sum or a count, so fairseq may all-reduce them (fast_stat_sync path)
        return True
