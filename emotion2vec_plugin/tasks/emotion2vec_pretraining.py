"""fairseq task ``emotion2vec_pretraining``: wav manifests -> cropped, normalised batches."""

import logging
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import torch
import torch.distributed as dist
from fairseq.data import ConcatDataset
from fairseq.dataclass import FairseqDataclass
from fairseq.tasks import FairseqTask, register_task
from omegaconf import II, MISSING

from ..checkpoint.repair import repair_last_checkpoint
from ..data.audio_dataset import Emotion2vecAudioDataset
from ..data.corpus_mix import WeightedCorpusMix
from ..data.manifest import ManifestError, first_missing_files, read_manifest
from ..modules.config import parse_conv_layers
from .startup_checks import checked_load_dataset, report_input_errors, run_startup_checks

logger = logging.getLogger(__name__)


@dataclass
class Emotion2vecPretrainingConfig(FairseqDataclass):
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
    # ---- emotion probe during pretraining (downstream/training_probe.py)
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
class Emotion2vecPretrainingTask(FairseqTask):
    cfg: Emotion2vecPretrainingConfig

    @classmethod
    def setup_task(cls, cfg: Emotion2vecPretrainingConfig, **kwargs) -> "Emotion2vecPretrainingTask":
        # runs after distributed init and before fairseq loads checkpoint_last.pt; rank 0 loads it
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        save_dir = cfg.get("save_dir")  # fairseq passes a DictConfig
        if rank == 0 and save_dir and cfg.get("restore_file") == "checkpoint_last.pt":
            repair_last_checkpoint(save_dir)
        run_startup_checks(cfg)  # settings that would die deep inside fairseq (startup_checks.py)
        return cls(cfg)

    def build_model(self, cfg, from_checkpoint=False):
        with report_input_errors():  # a bad model.init_from checkpoint is one line (startup_checks.py)
            return super().build_model(cfg, from_checkpoint)

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
            conv_layers, id_offset=id_offset, vary_with_epoch=vary_with_epoch,
        )
        logger.info("loaded %d utterances from %s", len(dataset), path)
        return dataset

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        """fairseq's train_step plus two guards:

        * a non-finite loss is replaced by a zero loss on the parameters (so DDP's gradient
          all-reduce still runs on every rank) and the update is marked for skipping;
        * a batch whose files were all bad (the dataset's ``all_bad`` placeholder) runs with a
          zero loss and only its ``bad_files`` count is logged.

        :meth:`optimizer_step` skips an update with a non-finite loss on any rank, or without a
        single real utterance on all ranks together."""
        model.train()
        model.set_num_updates(update_num)
        loss, sample_size, logging_output = criterion(model, sample)
        if sample.get("all_bad"):
            logging_output = zeroed_logging_output(logging_output, bad_files=sample.get("bad_files", 0))
            loss, sample_size = loss * 0.0, 0
        elif not torch.isfinite(loss):
            logger.warning("non-finite loss %s at update %d: this update will be skipped", loss.item(), update_num + 1)
            self._skip_update = True
            loss = sum(p.reshape(-1)[0] for p in model.parameters() if p.requires_grad) * 0.0
            # same keys as a normal step: fairseq all-reduces the summed stats as one dict per rank
            logging_output = zeroed_logging_output(logging_output, nonfinite_loss=1)
            sample_size = 0
        elif not ignore_grad:
            self._update_utterances = getattr(self, "_update_utterances", 0) + logging_output.get("nsentences", 1)
        if ignore_grad:
            loss = loss * 0
        optimizer.backward(loss)
        return loss, sample_size, logging_output

    def valid_step(self, sample, model, criterion):
        """Evaluation loss; the model draws masks and decoder noise from generators seeded by the
        utterance ids in eval mode, so a checkpoint gets the same validation loss every time."""
        model.eval()
        with torch.no_grad():
            loss, sample_size, logging_output = criterion(model, sample)
        if sample.get("all_bad"):
            return loss * 0.0, 0, zeroed_logging_output(logging_output, bad_files=sample.get("bad_files", 0))
        return loss, sample_size, logging_output

    def optimizer_step(self, optimizer, model, update_num):
        """Step, unless a worker saw a non-finite loss in this update, or no worker had a single
        real utterance (agreed by all-reduce, so every rank skips together). The student is left
        untouched, hence so is the teacher."""
        flags = torch.tensor([1.0 if getattr(self, "_skip_update", False) else 0.0,
                              float(getattr(self, "_update_utterances", 0))],
                             device=next(model.parameters()).device)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(flags)
        self._skip_update = False
        self._update_utterances = 0
        nonfinite, utterances = flags.tolist()
        if nonfinite > 0 or utterances == 0:
            reason = (f"non-finite loss on {int(nonfinite)} worker(s)" if nonfinite > 0
                      else "every file of its batches was bad")
            logger.warning("skipping update %d: %s", update_num + 1, reason)
            optimizer.zero_grad()
            return
        optimizer.step()

    @property
    def source_dictionary(self):
        return None

    @property
    def target_dictionary(self):
        return None

    # ------------------------------------------------------------------ emotion probe (task.probe_data)
    @property
    def probe(self):
        """The :class:`TrainingProbe` (built on first use), or None without ``task.probe_data``."""
        if not self.cfg.get("probe_data"):
            return None
        if getattr(self, "_probe", None) is None:
            from ..downstream.training_probe import ProbeSettings, TrainingProbe

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

    def max_positions(self) -> int:
        # lengths are capped by cropping, not by filtering (fairseq needs an int here)
        return sys.maxsize


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


def zeroed_logging_output(logging_output: Dict[str, Any], **counts: int) -> Dict[str, Any]:
    """The criterion's logging output with every value zeroed, but of the same kind (tensor or
    number), plus ``counts``. fairseq all-reduces the summed stats of all ranks as one dict whose
    tensors and numbers travel separately: a rank that turned a tensor into an int would send a
    buffer of another size and gloo/NCCL would abort."""
    zeroed = {k: torch.zeros_like(v) if torch.is_tensor(v) else 0 for k, v in logging_output.items()}
    return {**zeroed, **counts}
