"""What every reader of a model returns and every export writer takes: :class:`ModelRecord`.

A record is the student's weights plus what is needed to rebuild and use them: the architecture
(:class:`~emotion2vec_plugin.modules.config.StudentConfig`, the fields every format stores), the
inference settings, and for a fine-tuned classifier the class names of the head rows. Readers of
training checkpoints (``fairseq_checkpoint.py``) and of export folders (``formats/``) fill it;
the writers of ``formats/`` turn it into files.
"""

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import torch

from ..errors import Emotion2vecError
from ..modules.config import StudentConfig

# the linear head of a fine-tuned classifier (modules/classifier.py): weight [C, D], bias [C]
HEAD_KEYS = ("proj.weight", "proj.bias")


class ExportFormatError(Emotion2vecError, ValueError):
    """An export or checkpoint that cannot be loaded; names the file and the key."""


@dataclass
class InferenceSettings:
    """What feature extraction needs besides the weights."""

    normalize: bool = True
    sample_rate: int = 16000


@dataclass
class ModelRecord:
    """A model read from a checkpoint or an export folder.

    Attributes:
        state: student weights (no teacher); the decoder where the source has one; for a
            classifier also ``proj.weight`` [C, D] and ``proj.bias`` [C].
        encoder: the architecture.
        settings: waveform normalisation and sample rate.
        origin: the file (or files) the weights came from, for messages.
        labels: class names, class i = head row i; None for an encoder without head.
        training: the self-distillation settings released configs carry (``ema_decay``,
            ``mask_prob`` ... and ``max_update``; training checkpoints only).
        meta: provenance written into a ``plugin`` config.json: ``source`` (absolute path),
            ``num_updates`` [, ``random_init``].
        cfg: the training checkpoint's whole config as plain dicts (the released layout keeps it).
        optimizer_history, extra_state: fairseq's bookkeeping of a training checkpoint (its
            loader upgrades old checkpoints with them).
    """

    state: Dict[str, torch.Tensor]
    encoder: StudentConfig
    settings: InferenceSettings
    origin: str
    labels: Optional[List[str]] = None
    training: Dict[str, Any] = field(default_factory=dict)
    meta: Dict[str, Any] = field(default_factory=dict)
    cfg: Dict[str, Any] = field(default_factory=dict)
    optimizer_history: List[Dict[str, Any]] = field(default_factory=list)
    extra_state: Dict[str, Any] = field(default_factory=dict)

    @property
    def is_classifier(self) -> bool:
        return self.labels is not None


def encoder_or_head(key: str) -> bool:
    """Keys a classifier keeps: no teacher (``_ema*``), no decoder."""
    return not (key.startswith("_ema") or ".decoder." in key)


def check_head(state: Dict[str, torch.Tensor], labels: List[str], origin: str) -> None:
    """The head must have one output per class name (ExportFormatError naming both counts)."""
    for key in HEAD_KEYS:
        if key not in state:
            raise ExportFormatError(f"{origin}: classifier weights lack {key}")
    rows = state["proj.weight"].shape[0]
    if rows != len(labels) or state["proj.bias"].shape[0] != rows:
        raise ExportFormatError(f"{origin}: the head has {rows} outputs but the label list has {len(labels)} classes "
                                f"({labels[:10]}); the export and its label file do not belong together")


def with_random_weights(record: ModelRecord, seed: int) -> ModelRecord:
    """``record``'s encoder architecture with fresh weights drawn after ``torch.manual_seed(seed)``
    (the "random weights" control of a probe comparison: ``e2v-export --random-init SEED`` and
    ``e2v-benchmark --baselines``); the record is changed in place and returned. The same seed
    gives the same weights."""
    from ..modules.encoder import Emotion2vecEncoder

    torch.manual_seed(seed)
    record.state = Emotion2vecEncoder(record.encoder).state_dict()
    record.meta.update(random_init=seed, num_updates=0)
    return record
