"""What the two emotion2vec fairseq tasks share: audio settings, start-up checks, training guards.

Not a registered task. ``emotion2vec_pretraining`` (``emotion2vec_pretraining.py``) and
``emotion2vec_classification`` (``emotion2vec_classification.py``) subclass
:class:`Emotion2vecTaskBase`, and their configs subclass :class:`Emotion2vecTaskConfig`. Each task
declares its own ``data`` (unlabelled manifests vs. labelled splits) and ``min_sample_size`` (the
defaults differ: pretraining skips utterances under 2 s as data2vec 2.0 does, fine-tuning keeps
every utterance).

The base gives both tasks:

* ``setup_task``: repair of a truncated ``checkpoint_last.pt`` on rank 0 before fairseq resumes
  from it, the start-up checks of ``startup_checks.py``, and the garbage collector frozen before
  each fork of loader workers (``data/worker_memory.py``);
* ``build_model``: a bad ``model.init_from`` checkpoint reported as one line under hydra;
* ``train_step`` / ``valid_step`` / ``optimizer_step``: the guards against non-finite losses
  and batches of bad files (every rank skips the same updates, see :meth:`train_step`).
"""

import logging
import sys
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

import torch
import torch.distributed as dist
from fairseq.dataclass import FairseqDataclass
from fairseq.tasks import FairseqTask
from omegaconf import II

from ..checkpoint.repair import repair_last_checkpoint
from ..data.worker_memory import freeze_gc_before_fork, release_free_heap
from .startup_checks import report_input_errors, run_startup_checks

logger = logging.getLogger(__name__)


@dataclass
class Emotion2vecTaskConfig(FairseqDataclass):
    sample_rate: int = field(default=16000, metadata={"help": "audio sample rate in Hz; other rates are an error"})
    normalize: bool = field(
        default=True,
        metadata={"help": "zero mean / unit variance per utterance (released model: true; fine-tuning must use the "
                          "pretrained model's setting)"},
    )
    max_sample_size: Optional[int] = field(
        default=320000,
        metadata={"help": "crop cap in samples (320000 = 20 s): longer utterances are cropped at a random offset; "
                          "fine-tuning crops its training subset only and evaluates whole utterances"},
    )
    check_files: bool = field(default=True, metadata={"help": "check at start that the listed files exist"})
    check_files_sample: int = field(
        default=10000,
        metadata={"help": "with task.check_files, a manifest listing more files than this has only a seeded sample "
                          "of this many checked at start (the log says how to check all with e2v-validate-manifest "
                          "--workers N); 0: check every file"},
    )
    # null when fine-tuning takes the encoder shape from model.init_from: set by build_model then
    conv_feature_layers: Optional[str] = II("model.conv_feature_layers")
    seed: int = II("common.seed")
    train_subset: str = II("dataset.train_subset")
    # where fairseq resumes from: a truncated checkpoint_last.pt there is repaired at start
    save_dir: str = II("checkpoint.save_dir")
    restore_file: str = II("checkpoint.restore_file")


class Emotion2vecTaskBase(FairseqTask):
    """Setup, model building and the training guards of both emotion2vec tasks (module docstring)."""

    cfg: Emotion2vecTaskConfig

    @classmethod
    def setup_task(cls, cfg: Emotion2vecTaskConfig, **kwargs) -> "Emotion2vecTaskBase":
        # runs after distributed init and before fairseq loads checkpoint_last.pt; rank 0 loads it
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        save_dir = cfg.get("save_dir")  # fairseq passes a DictConfig
        if rank == 0 and save_dir and cfg.get("restore_file") == "checkpoint_last.pt":
            repair_last_checkpoint(save_dir)
        run_startup_checks(cfg)  # settings that would die deep inside fairseq (startup_checks.py)
        freeze_gc_before_fork()  # loader workers keep sharing the trainer's heap (data/worker_memory.py)
        return cls(cfg)

    def build_model(self, cfg, from_checkpoint=False):
        with report_input_errors():  # a bad model.init_from checkpoint is one line (startup_checks.py)
            return super().build_model(cfg, from_checkpoint)

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
        """Evaluation loss; the pretraining model draws masks and decoder noise from generators
        seeded by the utterance ids in eval mode, so a checkpoint gets the same validation loss
        every time."""
        model.eval()
        with torch.no_grad():
            loss, sample_size, logging_output = criterion(model, sample)
        if sample.get("all_bad"):
            return loss * 0.0, 0, zeroed_logging_output(logging_output, bad_files=sample.get("bad_files", 0))
        return loss, sample_size, logging_output

    def optimizer_step(self, optimizer, model, update_num):
        """Step, unless a worker saw a non-finite loss in this update, or no worker had a single
        real utterance (agreed by all-reduce, so every rank skips together). The model is left
        untouched (in pretraining, hence so is the teacher)."""
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

    def get_batch_iterator(self, dataset, *args, **kwargs):
        """fairseq's iterator; then the temporaries of ordering and batching millions of
        utterances (freed, but kept resident by glibc) go back to the system before the loader
        workers are forked from this process (``data/worker_memory.py``)."""
        itr = super().get_batch_iterator(dataset, *args, **kwargs)
        release_free_heap()
        return itr

    @property
    def source_dictionary(self):
        return None

    @property
    def target_dictionary(self):
        return None

    def max_positions(self) -> int:
        # lengths are capped by cropping, not by filtering (fairseq needs an int here)
        return sys.maxsize


def zeroed_logging_output(logging_output: Dict[str, Any], **counts: int) -> Dict[str, Any]:
    """The criterion's logging output with every value zeroed, but of the same kind (tensor or
    number), plus ``counts``. fairseq all-reduces the summed stats of all ranks as one dict whose
    tensors and numbers travel separately: a rank that turned a tensor into an int would send a
    buffer of another size and gloo/NCCL would abort."""
    zeroed = {k: torch.zeros_like(v) if torch.is_tensor(v) else 0 for k, v in logging_output.items()}
    return {**zeroed, **counts}
