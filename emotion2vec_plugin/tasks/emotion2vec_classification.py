"""fairseq task ``emotion2vec_classification``: labelled manifests (``e2v-labels`` output) -> padded batches with targets.

``task.data`` holds ``<subset>.tsv`` + ``<subset>.emo`` for the training subset and every
validation subset (``dataset.valid_subset``). The label set is read from the training subset at
start, in a stable order (sorted, or ``task.labels``), stored in every checkpoint
(``task_state["labels"]``) and written to ``<checkpoint.save_dir>/labels.txt``.

The training guards shared with pretraining (non-finite loss skipped on every rank, batches of
bad files, repair of a truncated ``checkpoint_last.pt``) come from
:class:`~emotion2vec_plugin.tasks.base.Emotion2vecTaskBase`.
"""

import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np
import torch.distributed as dist
from fairseq.data import ResamplingDataset
from fairseq.tasks import register_task
from omegaconf import MISSING

from ..data.labelled_dataset import Emotion2vecLabelledDataset
from ..data.label_files import write_label_file
from ..data.labelled_split import LabelledDataError, label_ids, label_set, read_labelled_split
from ..formats.init_source import encoder_shape_from_init
from ..modules.config import parse_conv_layers
from .base import Emotion2vecTaskBase, Emotion2vecTaskConfig
from .startup_checks import check_audio_files, check_crops, report_input_errors

logger = logging.getLogger(__name__)

LABEL_FILE = "labels.txt"


@dataclass
class Emotion2vecClassificationConfig(Emotion2vecTaskConfig):
    data: str = field(
        default=MISSING,
        metadata={"help": "folder with e2v-labels output: <subset>.tsv and <subset>.emo (one label per line, same "
                          "order) for dataset.train_subset and every dataset.valid_subset"},
    )
    labels: Optional[str] = field(
        default=None,
        metadata={"help": "comma-separated class names in the head's order (e.g. to match another model); default: "
                          "the training labels, sorted. Every class needs at least one training utterance"},
    )
    min_sample_size: int = field(default=0, metadata={"help": "shorter utterances are left out (samples)"})
    class_balanced_sampling: bool = field(
        default=False,
        metadata={"help": "draw training utterances with probability 1 / (size of their class), with replacement, so "
                          "every class is equally frequent in each epoch (alternative: criterion.class_weights)"},
    )


@register_task("emotion2vec_classification", dataclass=Emotion2vecClassificationConfig)
class Emotion2vecClassificationTask(Emotion2vecTaskBase):
    """Attributes: ``labels`` (class names, index = class id) and ``label_counts`` (training
    utterances per class as listed in the training ``.emo``, for class weights)."""

    cfg: Emotion2vecClassificationConfig

    def __init__(self, cfg: Emotion2vecClassificationConfig):
        super().__init__(cfg)
        self.labels: Optional[List[str]] = None
        self.label_counts: Optional[List[int]] = None
        self.train_label_path: Optional[str] = None

    def read_label_set(self) -> None:
        """Class names and counts from the training subset's ``.emo`` (or ``task.labels``)."""
        cfg = self.cfg
        train = read_labelled_split(str(cfg.data), cfg.get("train_subset", "train"))
        explicit = str(cfg.labels).split(",") if cfg.get("labels") else None
        self.labels = label_set(train, explicit)
        counts = Counter(train.labels)
        self.label_counts = [counts[n] for n in self.labels]
        self.train_label_path = train.label_path
        logger.info("%d classes from %s: %s", len(self.labels), train.label_path,
                    ", ".join(f"{n} ({c})" for n, c in zip(self.labels, self.label_counts)))

    @classmethod
    def setup_task(cls, cfg: Emotion2vecClassificationConfig, **kwargs) -> "Emotion2vecClassificationTask":
        task = super().setup_task(cfg, **kwargs)
        from_checkpoint = kwargs.get("from_checkpoint", False)
        train_emo = os.path.join(str(cfg.data), f"{cfg.get('train_subset', 'train')}.emo")
        if not from_checkpoint or os.path.isfile(train_emo):
            task.read_label_set()  # a checkpoint loaded elsewhere brings its labels (load_state_dict)
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        save_dir = cfg.get("save_dir")
        if rank == 0 and save_dir and task.labels and not from_checkpoint:
            write_label_file(task.labels, os.path.join(save_dir, LABEL_FILE))
        return task

    def build_model(self, cfg, from_checkpoint=False):
        """The classifier. Encoder shape fields that ``cfg`` (the trainer's ``cfg.model``) leaves unset
        are filled from ``model.init_from`` first, in ``cfg`` itself, so every checkpoint carries the
        whole shape. The task's CNN spec (``${model.conv_feature_layers}``) follows; the crop check
        that needs it, skipped at start while it was null, runs here."""
        with report_input_errors():  # a bad model.init_from is one line under hydra (startup_checks.py)
            deferred = self.cfg.get("conv_feature_layers") is None
            encoder_shape_from_init(cfg)
            if self.cfg.get("conv_feature_layers") is None:  # a task config without the interpolation
                self.cfg.conv_feature_layers = cfg.conv_feature_layers
            if deferred:
                check_crops(self.cfg.conv_feature_layers, self.cfg.max_sample_size, self.cfg.min_sample_size)
        return super().build_model(cfg, from_checkpoint)

    # the label set travels in every checkpoint (fairseq saves task.state_dict() as task_state)
    def state_dict(self) -> Dict[str, Any]:
        return {"labels": list(self.labels or [])}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        saved = list(state_dict.get("labels") or [])
        if self.labels is None:
            self.labels = saved
        elif saved and saved != self.labels:
            raise LabelledDataError(f"the checkpoint was trained on classes {saved} but {self.train_label_path} gives "
                                    f"{self.labels}; use the same labels (or task.labels) as the checkpoint")

    def load_dataset(self, split: str, epoch: int = 1, **kwargs) -> None:
        cfg = self.cfg
        if not self.labels:
            raise LabelledDataError(f"no label set: {cfg.data} has no {cfg.get('train_subset', 'train')}.emo")
        training = split == cfg.get("train_subset", "train")
        labelled = read_labelled_split(str(cfg.data), split)
        targets = label_ids(labelled, self.labels, self.train_label_path or "the checkpoint's label set")
        if cfg.check_files:
            check_audio_files(labelled.manifest, "the manifests with e2v-labels",
                              cfg.get("check_files_sample", 0), cfg.seed)
        dataset = Emotion2vecLabelledDataset(
            labelled.manifest, targets, crop=training, max_sample_size=cfg.max_sample_size,
            sample_rate=cfg.sample_rate, min_sample_size=cfg.min_sample_size, normalize=cfg.normalize,
            seed=cfg.seed, conv_layers=parse_conv_layers(cfg.conv_feature_layers), vary_with_epoch=training)
        counts = dataset.class_counts(len(self.labels))
        if training:
            empty = [n for n, c in zip(self.labels, counts) if c == 0]
            if empty:
                raise LabelledDataError(
                    f"{labelled.label_path}: class(es) {empty} have no training utterance of at least "
                    f"task.min_sample_size={cfg.min_sample_size} samples; lower task.min_sample_size or drop the class")
        logger.info("%s: %d utterances, per class %s", split, len(dataset),
                    dict(zip(self.labels, counts.tolist())))
        if training and cfg.class_balanced_sampling:
            weights = 1.0 / counts[dataset.targets]
            dataset = ResamplingDataset(dataset, weights=weights / weights.sum(), replace=True, size_ratio=1.0,
                                        batch_by_size=True, seed=cfg.seed, epoch=epoch)
        self.datasets[split] = dataset

    def get_batch_iterator(self, dataset, *args, **kwargs):
        """fairseq's iterator, with ``required_batch_size_multiple`` forced to 1: with a multiple
        m > 1, fairseq 0.12's ``batch_by_size`` drops a last batch of fewer than m utterances
        (measured: 70 equal-length utterances, max_tokens for 64, m=8 -> one batch of 64, 6
        never seen), which would leave utterances out of every validation score."""
        if not args and kwargs.get("required_batch_size_multiple", 1) != 1:
            if not getattr(self, "_warned_multiple", False):
                self._warned_multiple = True
                logger.info("dataset.required_batch_size_multiple=%s -> 1: fairseq would drop the last batch "
                            "if it is smaller than that", kwargs["required_batch_size_multiple"])
            kwargs["required_batch_size_multiple"] = 1
        return super().get_batch_iterator(dataset, *args, **kwargs)

    def class_weights_balanced(self) -> np.ndarray:
        """sklearn's "balanced" weights N / (C * n_c) from the training label counts [C]."""
        counts = np.asarray(self.label_counts, dtype=np.float64)
        return counts.sum() / (len(counts) * counts)
