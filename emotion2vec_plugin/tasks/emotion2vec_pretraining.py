"""fairseq task ``emotion2vec_pretraining``: wav manifests -> cropped, normalised batches."""

import logging
import os
from dataclasses import dataclass, field
from typing import List, Optional

from fairseq.data import ConcatDataset
from fairseq.tasks import register_task
from omegaconf import II, MISSING

from ..data.audio_dataset import Emotion2vecAudioDataset
from ..data.corpus_mix import WeightedCorpusMix
from ..data.manifest import ManifestError, read_manifest
from ..modules.config import parse_conv_layers
from .base import Emotion2vecTaskBase, Emotion2vecTaskConfig
from .startup_checks import check_audio_files, checked_load_dataset

logger = logging.getLogger(__name__)


@dataclass
class Emotion2vecPretrainingConfig(Emotion2vecTaskConfig):
    data: str = field(
        default=MISSING,
        metadata={"help": "folder holding <subset>.tsv manifests (e2v-manifest output); several folders "
                          "separated by ':' (as fairseq separates data paths), e.g. /data/iemocap:/data/meld, "
                          "pretrain on several corpora at once"},
    )
    data_weights: Optional[str] = field(
        default=None,
        metadata={"help": "sampling weights separated by ':', one per task.data folder, e.g. 1:3, for the "
                          "training subset: each epoch draws that share of utterances from each corpus (with "
                          "replacement); default: plain concatenation (weights proportional to corpus sizes)"},
    )
    min_sample_size: int = field(default=32000, metadata={"help": "shorter utterances are left out (32000 = 2 s)"})
    precompute_mask: bool = field(
        default=False, metadata={"help": "compute the student masks in the data loader workers instead of the model"}
    )
    # mask settings are the model's; interpolated so they cannot disagree
    mask_prob: float = II("model.mask_prob")
    mask_length: int = II("model.mask_length")
    mask_prob_adjust: float = II("model.mask_prob_adjust")
    clone_batch: int = II("model.clone_batch")
    # ---- emotion probe during pretraining (tasks/training_probe.py)
    probe_data: Optional[str] = field(
        default=None,
        metadata={"help": "folder with labelled manifests from e2v-labels (SPLIT.tsv, SPLIT.emo, optional SPLIT.group): "
                          "at validations a linear probe on mean-pooled features logs probe_ua / probe_wa (valid "
                          "stats, so checkpoint.best_checkpoint_metric=probe_ua works); null: no probe"},
    )
    probe_split: str = field(default="probe", metadata={"help": "name of the labelled manifest in task.probe_data"})
    probe_interval: int = field(
        default=0,
        metadata={"help": "probe at a validation once this many updates passed since the last probe; 0: at every "
                          "validation (in between, the last numbers are repeated only when a probe metric is the "
                          "best-checkpoint metric)"},
    )
    probe_network: str = field(
        default="student",
        metadata={"help": "student: the network e2v-export ships and downstream users probe (so the numbers equal "
                          "e2v-probe --probe linear on the exported checkpoint); teacher: its EMA (data2vec's target "
                          "network, smoother); both: log both (teacher keys end in _teacher)"},
    )
    probe_layers: str = field(
        default="last,mean",
        metadata={"help": "comma-separated: last (final block), mean (average of all blocks) or a block number "
                          "(1-based or negative); the first is the headline probe_ua"},
    )
    probe_normalize: str = field(
        default="both",
        metadata={"help": "per-speaker (per-group) z-scoring of the utterance features before the probe: none, "
                          "group (keys end in _gnorm) or both; the headline uses the first"},
    )
    probe_folds: int = field(default=5, metadata={"help": "k of the stratified k-fold when there is no .group file"})
    probe_seed: int = field(default=0, metadata={"help": "seed of the k-fold split (fixed across runs)"})
    probe_batch_seconds: float = field(default=160.0, metadata={"help": "max padded audio per probe batch (seconds)"})
    probe_at_start: bool = field(
        default=True,
        metadata={"help": "on a fresh run, probe the initial weights (update 0) and log-mel filterbanks once, as "
                          "reference points for e2v-curves"},
    )
    best_checkpoint_metric: str = II("checkpoint.best_checkpoint_metric")
    tensorboard_logdir: Optional[str] = II("common.tensorboard_logdir")


@register_task("emotion2vec_pretraining", dataclass=Emotion2vecPretrainingConfig)
class Emotion2vecPretrainingTask(Emotion2vecTaskBase):
    """Setup and training guards: :class:`~emotion2vec_plugin.tasks.base.Emotion2vecTaskBase`.
    Here: several corpora with sampling weights, and the emotion probe at validations."""

    cfg: Emotion2vecPretrainingConfig

    @checked_load_dataset  # bad manifests as one line; batches must hold the longest crop (startup_checks.py)
    def load_dataset(self, split: str, epoch: int = 1, **kwargs) -> None:
        folders = split_data_paths(str(self.cfg.data))
        training = split == self.cfg.get("train_subset", "train")
        manifests = [os.path.join(d, f"{split}.tsv") for d in folders]
        if not training and len(folders) > 1:
            # a corpus without this evaluation subset is simply not evaluated on
            absent = [m for m in manifests if not os.path.isfile(m)]
            for m in absent:
                logger.info("%s: no %s.tsv in %s, this corpus is left out of %s", split, split, os.path.dirname(m), split)
            manifests = [m for m in manifests if m not in absent] or manifests
        datasets, offset = [], 0
        for m in manifests:
            datasets.append(self.load_manifest(m, id_offset=offset, vary_with_epoch=training))
            offset += len(datasets[-1].manifest)  # global utterance ids: corpora never share a seed
        if len(datasets) == 1:
            self.datasets[split] = datasets[0]
            return
        weights = self.corpus_weights(len(folders)) if training else None
        concat = ConcatDataset(datasets)
        self.datasets[split] = concat if weights is None else WeightedCorpusMix(concat, weights, self.cfg.seed, folders)
        logger.info("%s: %d corpora, %s utterances, sampling weights %s", split, len(datasets),
                    [len(d) for d in datasets], weights)

    def corpus_weights(self, n: int) -> Optional[List[float]]:
        if not self.cfg.get("data_weights"):
            return None
        text = str(self.cfg.data_weights)
        try:
            weights = [float(w) for w in text.replace(",", ":").split(":")]
        except ValueError:
            raise ValueError(f"task.data_weights={text!r} is not a ':'-separated list of numbers such as 1:3") from None
        if len(weights) != n or any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(f"task.data_weights={text!r}: need {n} non-negative weights separated by ':', one per "
                             f"task.data folder, not all zero")
        return [w / sum(weights) for w in weights]

    def load_manifest(self, path: str, id_offset: int = 0, vary_with_epoch: bool = True) -> Emotion2vecAudioDataset:
        cfg = self.cfg
        manifest = read_manifest(path)
        if cfg.check_files:
            check_audio_files(manifest, "the manifest with e2v-manifest",
                              cfg.get("check_files_sample", 0), cfg.seed)
        conv_layers = parse_conv_layers(cfg.conv_feature_layers)
        mask = None
        if cfg.precompute_mask:
            mask = {
                "mask_prob": cfg.mask_prob, "mask_length": cfg.mask_length, "mask_prob_adjust": cfg.mask_prob_adjust,
                "clone_batch": cfg.clone_batch,
            }
        dataset = Emotion2vecAudioDataset(
            manifest, cfg.sample_rate, cfg.max_sample_size, cfg.min_sample_size, cfg.normalize, cfg.seed, mask,
            conv_layers, id_offset=id_offset, vary_with_epoch=vary_with_epoch,
        )
        logger.info("loaded %d utterances from %s", len(dataset), path)
        return dataset

    # ------------------------------------------------------------------ emotion probe (task.probe_data)
    @property
    def probe(self):
        """The :class:`TrainingProbe` (built on first use), or None without ``task.probe_data``."""
        if not self.cfg.get("probe_data"):
            return None
        if getattr(self, "_probe", None) is None:
            from .training_probe import ProbeSettings, TrainingProbe

            c = self.cfg
            self._probe = TrainingProbe(ProbeSettings(
                data=c.probe_data, split=c.probe_split, interval=c.probe_interval, network=c.probe_network,
                layers=c.probe_layers, normalize=c.probe_normalize, folds=c.probe_folds, seed=c.probe_seed,
                batch_seconds=c.probe_batch_seconds, at_start=c.probe_at_start, sample_rate=c.sample_rate,
                normalize_audio=c.normalize), save_dir=c.get("save_dir"),
                tensorboard_dir=c.get("tensorboard_logdir"))
            self._probe_pending = None
        return self._probe

    @staticmethod
    def _updates_done(model) -> int:
        """The trainer's update count (its ``num_updates`` meter; the model lags one behind in training)."""
        from fairseq.logging import metrics

        meter = metrics.get_meter("default", "num_updates")
        return int(meter.val) if meter is not None and meter.val is not None else int(getattr(model, "num_updates", 0))

    def begin_epoch(self, epoch, model):
        """On a fresh run (update 0), probe the initial weights and log-mel filterbanks once."""
        super().begin_epoch(epoch, model)
        if self.probe is not None and self.cfg.probe_at_start and self._updates_done(model) == 0 \
                and not getattr(self, "_probe_reference_done", False):
            self._probe_reference_done = True
            self.probe.run_reference(model)

    def begin_valid_epoch(self, epoch, model):
        """Run the probe (every rank, see training_probe.py); its numbers join this validation's stats."""
        super().begin_valid_epoch(epoch, model)
        probe = self.probe
        if probe is None:
            return
        updates = self._updates_done(model)
        if probe.due(updates):
            self._probe_pending = probe.run(model, updates)
        elif str(self.cfg.get("best_checkpoint_metric", "")).startswith("probe_"):
            self._probe_pending = {**probe.last_metrics, "probe_update": probe.last_update}

    def reduce_metrics(self, logging_outputs, criterion):
        super().reduce_metrics(logging_outputs, criterion)
        pending = getattr(self, "_probe_pending", None)
        if pending:  # only between begin_valid_epoch and post_validate: the "valid" aggregator
            from fairseq.logging import metrics

            for key, value in pending.items():
                metrics.log_scalar(key, value, weight=1, priority=900, round=4)

    def post_validate(self, model, stats, agg):
        """Make sure the probe numbers are in the stats even if no validation batch ran; close the window."""
        pending = getattr(self, "_probe_pending", None)
        if pending:
            for key, value in pending.items():
                stats.setdefault(key, round(value, 4))
        self._probe_pending = None


def split_data_paths(data: str) -> List[str]:
    """``task.data`` -> folders: separated by ':' as fairseq separates data paths (fairseq's own
    start-up check lists each of them). A folder that does not exist is an error that says so."""
    folders = [d for d in data.split(os.pathsep) if d]
    for d in folders:
        if not os.path.isdir(d):
            hint = " (separate several folders with ':', not ',')" if "," in d else ""
            raise ManifestError(f"task.data: {d!r} is not a directory{hint}")
    if not folders:
        raise ManifestError(f"task.data={data!r} names no folder")
    return folders
