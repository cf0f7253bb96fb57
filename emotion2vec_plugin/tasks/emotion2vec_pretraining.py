"""fairseq task ``emotion2vec_pretraining``: wav manifests -> cropped, normalised batches."""

import logging
import os
import sys
from dataclasses import dataclass, field
from typing import Optional

from fairseq.dataclass import FairseqDataclass
from fairseq.tasks import FairseqTask, register_task
from omegaconf import II, MISSING

from ..data.audio_dataset import Emotion2vecAudioDataset
from ..data.manifest import ManifestError, first_missing_files, read_manifest
from ..modules.config import parse_conv_layers

logger = logging.getLogger(__name__)


@dataclass
class Emotion2vecPretrainingConfig(FairseqDataclass):
    data: str = field(default=MISSING, metadata={"help": "folder holding <subset>.tsv manifests (e2v-manifest output)"})
    sample_rate: int = field(default=16000, metadata={"help": "audio sample rate in Hz; other rates are an error"})
    normalize: bool = field(default=True, metadata={"help": "zero mean / unit variance per utterance (released model: true)"})
    max_sample_size: Optional[int] = field(default=320000, metadata={"help": "crop cap in samples (320000 = 20 s)"})
    min_sample_size: int = field(default=32000, metadata={"help": "shorter utterances are left out (32000 = 2 s)"})
    check_files: bool = field(default=True, metadata={"help": "check at start that every listed file exists"})
    precompute_mask: bool = field(
        default=False, metadata={"help": "compute the student masks in the data loader workers instead of the model"}
    )
    # mask settings are the model's; interpolated so they cannot disagree
    mask_prob: float = II("model.mask_prob")
    mask_length: int = II("model.mask_length")
    mask_prob_adjust: float = II("model.mask_prob_adjust")
    clone_batch: int = II("model.clone_batch")
    conv_feature_layers: str = II("model.conv_feature_layers")
    seed: int = II("common.seed")


@register_task("emotion2vec_pretraining", dataclass=Emotion2vecPretrainingConfig)
class Emotion2vecPretrainingTask(FairseqTask):
    cfg: Emotion2vecPretrainingConfig

    @classmethod
    def setup_task(cls, cfg: Emotion2vecPretrainingConfig, **kwargs) -> "Emotion2vecPretrainingTask":
        return cls(cfg)

    def load_dataset(self, split: str, **kwargs) -> None:
        cfg = self.cfg
        path = os.path.join(cfg.data, f"{split}.tsv")
        manifest = read_manifest(path)
        if cfg.check_files:
            missing = first_missing_files(manifest)
            if missing:
                raise ManifestError(
                    f"{path}: audio files are missing (first {len(missing)} shown):\n  " + "\n  ".join(missing)
                    + "\nfix the root on line 1 or rebuild the manifest with e2v-manifest"
                )
        mask = None
        if cfg.precompute_mask:
            mask = {
                "mask_prob": cfg.mask_prob, "mask_length": cfg.mask_length, "mask_prob_adjust": cfg.mask_prob_adjust,
                "clone_batch": cfg.clone_batch, "conv_layers": parse_conv_layers(cfg.conv_feature_layers),
            }
        self.datasets[split] = Emotion2vecAudioDataset(
            manifest, cfg.sample_rate, cfg.max_sample_size, cfg.min_sample_size, cfg.normalize, cfg.seed, mask
        )
        logger.info("loaded %d utterances from %s", len(self.datasets[split]), path)

    @property
    def source_dictionary(self):
        return None

    @property
    def target_dictionary(self):
        return None

    def max_positions(self) -> int:
        # lengths are capped by cropping, not by filtering (fairseq needs an int here)
        return sys.maxsize
