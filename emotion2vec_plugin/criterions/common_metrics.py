"""What both criteria log alike: the loss per sample, utterances, and the two guard counts."""

from typing import Callable, Dict, List, Sequence, Tuple

from fairseq import metrics


def log_loss_and_counts(logging_outputs: List[Dict], loss_keys: Sequence[str] = ("loss",)
                        ) -> Tuple[Callable[[str], float], float]:
    """Log each of ``loss_keys`` per sample, ``nsentences``, and the sums of ``bad_files``
    (utterances left out) and ``nonfinite_loss`` (skipped updates) over the log interval.

    Returns ``total(key)`` (the key summed over the outputs) and the sample size (at least 1).
    """

    def total(key: str) -> float:
        return sum(float(log.get(key, 0)) for log in logging_outputs)

    sample_size = max(total("sample_size"), 1.0)
    for key in loss_keys:
        metrics.log_scalar(key, total(key) / sample_size, sample_size, round=4)
    metrics.log_scalar("nsentences", total("nsentences"), round=0, priority=1000)
    metrics.log_scalar_sum("bad_files", total("bad_files"), round=0)
    metrics.log_scalar_sum("nonfinite_loss", total("nonfinite_loss"), round=0)
    return total, sample_size
