"""fairseq task ``emotion2vec_pretraining``: wav manifests -> cropped, normalised batches."""

import logging
import os
import sys
from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np

import torch
import torch.distributed as dist
from fairseq.data import ConcatDataset, ResamplingDataset
from fairseq.dataclass import FairseqDataclass
from fairseq.tasks import FairseqTask, register_task
from omegaconf import II, MISSING

from ..checkpoint.repair import repair_last_checkpoint
from ..data.audio_dataset import Emotion2vecAudioDataset
from ..data.manifest import ManifestError, first_missing_files, read_manifest
from ..modules.config import parse_conv_layers

logger = logging.getLogger(__name__)


@dataclass
class Emotion2vecPretrainingConfig(FairseqDataclass):
    data: str = field(
        default=MISSING,
        metadata={"help": "folder holding <subset>.tsv manifests (e2v-manifest output); several folders "
                          "separated by commas pretrain on several corpora at once"},
    )
    data_weights: Optional[str] = field(
        default=None,
        metadata={"help": "comma-separated sampling weights, one per task.data folder, for the training subset: "
                          "each epoch draws that share of utterances from each corpus (with replacement); "
                          "default: plain concatenation (weights proportional to corpus sizes)"},
    )
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
    train_subset: str = II("dataset.train_subset")
    # where fairseq resumes from: a truncated checkpoint_last.pt there is repaired at start
    save_dir: str = II("checkpoint.save_dir")
    restore_file: str = II("checkpoint.restore_file")


@register_task("emotion2vec_pretraining", dataclass=Emotion2vecPretrainingConfig)
class Emotion2vecPretrainingTask(FairseqTask):
    cfg: Emotion2vecPretrainingConfig

    @classmethod
    def setup_task(cls, cfg: Emotion2vecPretrainingConfig, **kwargs) -> "Emotion2vecPretrainingTask":
        # runs after distributed init and before fairseq loads checkpoint_last.pt; rank 0 loads it
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        save_dir = cfg.get("save_dir")  # fairseq passes a DictConfig
        if rank == 0 and save_dir and cfg.get("restore_file") == "checkpoint_last.pt":
            repair_last_checkpoint(save_dir)
        return cls(cfg)

    def load_dataset(self, split: str, epoch: int = 1, **kwargs) -> None:
        folders = [d for d in str(self.cfg.data).split(",") if d]
        datasets = [self.load_manifest(os.path.join(d, f"{split}.tsv")) for d in folders]
        if len(datasets) == 1:
            self.datasets[split] = datasets[0]
            return
        weights = self.corpus_weights(len(folders))
        concat = ConcatDataset(datasets)
        if weights is None or split != self.cfg.get("train_subset", "train"):
            self.datasets[split] = concat
        else:
            # per-utterance probabilities w_c / |c| give corpus c the share w_c of every epoch
            item_w = np.concatenate([np.full(len(d), w / len(d)) for d, w in zip(datasets, weights)])
            self.datasets[split] = ResamplingDataset(concat, weights=item_w / item_w.sum(), replace=True,
                                                     size_ratio=1.0, batch_by_size=True, seed=self.cfg.seed,
                                                     epoch=epoch)
        logger.info("%s: %d corpora, %s utterances, sampling weights %s", split, len(folders),
                    [len(d) for d in datasets], weights)

    def corpus_weights(self, n: int) -> Optional[List[float]]:
        if not self.cfg.get("data_weights"):
            return None
        try:
            weights = [float(w) for w in str(self.cfg.data_weights).split(",")]
        except ValueError:
            raise ValueError(f"task.data_weights={self.cfg.data_weights!r} is not a comma-separated list of numbers") from None
        if len(weights) != n or any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(f"task.data_weights={self.cfg.data_weights!r}: need {n} non-negative weights, one per "
                             f"task.data folder, not all zero")
        return [w / sum(weights) for w in weights]

    def load_manifest(self, path: str) -> Emotion2vecAudioDataset:
        cfg = self.cfg
        manifest = read_manifest(path)
        if cfg.check_files:
            missing = first_missing_files(manifest)
            if missing:
                raise ManifestError(
                    f"{path}: audio files are missing (first {len(missing)} shown):\n  " + "\n  ".join(missing)
                    + "\nfix the root on line 1 or rebuild the manifest with e2v-manifest"
                )
        conv_layers = parse_conv_layers(cfg.conv_feature_layers)
        mask = None
        if cfg.precompute_mask:
            mask = {
                "mask_prob": cfg.mask_prob, "mask_length": cfg.mask_length, "mask_prob_adjust": cfg.mask_prob_adjust,
                "clone_batch": cfg.clone_batch,
            }
        dataset = Emotion2vecAudioDataset(
            manifest, cfg.sample_rate, cfg.max_sample_size, cfg.min_sample_size, cfg.normalize, cfg.seed, mask,
            conv_layers,
        )
        logger.info("loaded %d utterances from %s", len(dataset), path)
        return dataset

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        """fairseq's train_step plus a guard: a non-finite loss is replaced by a zero loss on the
        parameters (so DDP's gradient all-reduce still runs on every rank) and the update is
        marked for skipping in :meth:`optimizer_step`."""
        model.train()
        model.set_num_updates(update_num)
        loss, sample_size, logging_output = criterion(model, sample)
        if not torch.isfinite(loss):
            logger.warning("non-finite loss %s at update %d: this update will be skipped", loss.item(), update_num + 1)
            self._skip_update = True
            loss = sum(p.reshape(-1)[0] for p in model.parameters() if p.requires_grad) * 0.0
            # same keys as a normal step: fairseq all-reduces the summed stats as one dict per rank
            logging_output = {**{k: 0 for k in logging_output}, "nonfinite_loss": 1}
            sample_size = 0
        if ignore_grad:
            loss = loss * 0
        optimizer.backward(loss)
        return loss, sample_size, logging_output

    def optimizer_step(self, optimizer, model, update_num):
        """Step, unless any worker saw a non-finite loss in this update (agreed by all-reduce, so
        every rank skips together). The student is left untouched, hence so is the teacher."""
        skip = torch.tensor([1.0 if getattr(self, "_skip_update", False) else 0.0],
                            device=next(model.parameters()).device)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(skip)
        self._skip_update = False
        if skip.item() > 0:
            logger.warning("skipping update %d: non-finite loss on %d worker(s)", update_num + 1, int(skip.item()))
            optimizer.zero_grad()
            return
        optimizer.step()

    @property
    def source_dictionary(self):
        return None

    @property
    def target_dictionary(self):
        return None

    def max_positions(self) -> int:
        # lengths are capped by cropping, not by filtering (fairseq needs an int here)
        return sys.maxsize
