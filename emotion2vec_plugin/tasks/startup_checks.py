"""Checks the emotion2vec tasks (tasks/base.py) run before training, and how their errors read.

Settings that would otherwise die deep inside fairseq after start-up are checked in
``setup_task`` (:func:`check_training_config`), against the whole job config:

* every learning-rate schedule's ``warmup_updates`` must be below ``optimization.max_update``
  (fairseq's cosine schedule divides by ``max_update - warmup_updates``: ZeroDivisionError at
  the last update); schedules are read at ``lr_scheduler`` and, for the ``composite`` optimizer of
  the paper recipe, at ``optimizer.groups.*.lr_scheduler``; a scheduler without warm-up
  (``pass_through``, ``tri_stage``, ...) is simply skipped;
* the crop cap ``task.max_sample_size`` must give the CNN at least 2 frames (1 frame dies in a
  norm layer, 0 in a convolution);
* ``dataset.max_tokens`` must hold one cropped utterance: below ``min(task.min_sample_size,
  task.max_sample_size)`` no utterance fits (fairseq: "The dataset is empty"); after each subset
  is loaded, :func:`check_batches_fit` compares it with the longest crop that subset actually
  has (fairseq: "Sentences lengths should not exceed max_tokens").

The task gets only ``cfg.task``; fairseq passes it as a node of the job's DictConfig, so the rest
is read through the parent (``OmegaConf.select(cfg, "..")``) rather than through ``II``
interpolations, which would have to exist for every scheduler and cannot reach the composite
optimizer's groups. A task config built on its own (tests) has no parent: then only the checks
on task fields run.

How errors reach the user: under ``fairseq-hydra-train`` hydra prints the traceback of any
``Exception`` from the job and then a hint line (``hydra/_internal/utils.py: run_and_report``).
Inside a hydra job, :func:`report_input_errors` therefore turns the input errors of the start-up
checks (:class:`TrainingInputError`), of dataset loading (manifest, audio) and of
``model.init_from`` (checkpoint) into ``SystemExit("emotion2vec: error: ...")``: hydra does not
catch it and fairseq re-raises it (unless ``common.suppress_crashes``, which logs it as
"Crashed!" and exits 0, as for any error): the log ends with that one line, exit status 1.
Outside hydra (tests,
``fairseq-train``) and with ``E2V_TRACEBACK=1`` or ``HYDRA_FULL_ERROR=1`` the original exception
propagates, with its type and traceback.
"""

import functools
import logging
import os
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ..checkpoint.convert import CheckpointMismatchError
from ..checkpoint.safe_load import CheckpointReadError
from ..errors import Emotion2vecError, describe
from ..data.manifest import AudioReadError, Manifest, ManifestError, first_missing_files, sample_indices
from ..modules.config import parse_conv_layers
from ..modules.clip_rules import frames_for_samples

logger = logging.getLogger(__name__)



class TrainingInputError(Emotion2vecError, ValueError):
    """A setting that cannot train; the message names the settings, their values and the fix."""


# errors that mean "this input or setting is unusable", reported as one line under hydra
INPUT_ERRORS = (TrainingInputError, ManifestError, AudioReadError, CheckpointReadError, CheckpointMismatchError,
                OSError, UnicodeError)


def full_config(task_cfg: Any) -> Optional[Any]:
    """The job config holding ``task_cfg`` (fairseq passes ``cfg.task``), or None when it stands alone."""
    if not OmegaConf.is_config(task_cfg):
        return None
    try:
        return OmegaConf.select(task_cfg, "..")
    except OmegaConfBaseException:
        return None


def schedules(root: Any) -> List[Tuple[str, Dict[str, Any]]]:
    """(config path, settings) of every learning-rate schedule: ``lr_scheduler`` and the composite
    optimizer's ``optimizer.groups.<name>.lr_scheduler``."""
    found = []
    top = OmegaConf.select(root, "lr_scheduler", default=None)
    if OmegaConf.is_dict(top):
        found.append(("lr_scheduler", OmegaConf.to_container(top, resolve=True)))
    groups = OmegaConf.select(root, "optimizer.groups", default=None)
    if OmegaConf.is_dict(groups):
        for name in groups:
            sched = OmegaConf.select(groups, f"{name}.lr_scheduler", default=None)
            if OmegaConf.is_dict(sched):
                found.append((f"optimizer.groups.{name}.lr_scheduler", OmegaConf.to_container(sched, resolve=True)))
    return found


def check_schedule(max_update: int, scheds: Sequence[Tuple[str, Dict[str, Any]]]) -> None:
    """Warm-up must end before ``max_update``; fairseq's cosine needs ``max_update`` or a period."""
    for where, sched in scheds:
        name = sched.get("_name")
        warmup = sched.get("warmup_updates")
        if max_update > 0 and isinstance(warmup, int) and warmup > 0 and warmup >= max_update:
            raise TrainingInputError(
                f"{where}.warmup_updates={warmup} is not below optimization.max_update={max_update}: training would "
                f"end inside the warm-up{' and the cosine schedule divides by max_update - warmup_updates' if name == 'cosine' else ''}; "
                f"lower {where}.warmup_updates below {max_update} (the paper: 5% of max_update = {max_update // 20}; "
                f"0 = no warm-up) or raise optimization.max_update")
        if name == "cosine" and max_update <= 0 and not (sched.get("lr_period_updates") or 0) > 0:
            raise TrainingInputError(
                f"{where}: the cosine schedule needs optimization.max_update > 0 (got {max_update}) or "
                f"{where}.lr_period_updates > 0; set optimization.max_update")


def min_samples_for_frames(conv_layers: Sequence[Tuple[int, int, int]], frames: int) -> int:
    """Fewest input samples for which the CNN yields ``frames`` frames (inverse of frames_for_samples)."""
    need = frames
    for _, kernel, stride in reversed(list(conv_layers)):
        need = (need - 1) * stride + kernel
    return need


def check_crops(conv_feature_layers: str, max_sample_size: Optional[int], min_sample_size: int) -> None:
    """The crop cap must give the CNN at least 2 frames (a batch is cropped to at most that)."""
    layers = parse_conv_layers(conv_feature_layers)
    need = min_samples_for_frames(layers, 2)
    if max_sample_size is not None and max_sample_size > 0 and frames_for_samples(layers, max_sample_size) < 2:
        raise TrainingInputError(
            f"task.max_sample_size={max_sample_size} samples gives the CNN (model.conv_feature_layers) "
            f"{frames_for_samples(layers, max_sample_size)} frame(s), expected at least 2: every batch is cropped to at "
            f"most this length; raise task.max_sample_size to at least {need} (data2vec 2.0: 320000 = 20 s)")
    if min_sample_size < need:
        logger.warning("task.min_sample_size=%d is below the %d samples the CNN needs for 2 frames: shorter "
                       "utterances are skipped with a warning when read", min_sample_size, need)


def check_batch_budget(max_tokens: Optional[int], min_sample_size: int, max_sample_size: Optional[int]) -> None:
    """``dataset.max_tokens`` (samples per batch) below every possible crop: no batch can be built."""
    if max_tokens is None or max_tokens <= 0:
        return
    shortest_crop = min(min_sample_size, max_sample_size) if max_sample_size else min_sample_size
    if max_tokens < shortest_crop:
        raise TrainingInputError(
            f"dataset.max_tokens={max_tokens} samples is below task.min_sample_size={min_sample_size}"
            f"{f' / task.max_sample_size={max_sample_size}' if max_sample_size else ''}: no utterance fits in a batch "
            f"(fairseq would stop with 'The dataset is empty'); raise dataset.max_tokens to at least "
            f"{max_sample_size or shortest_crop} (the crop cap) or lower the sample sizes")


def run_startup_checks(task_cfg: Any) -> None:
    """:func:`check_training_config`, reported as one line under hydra (:func:`report_input_errors`)."""
    with report_input_errors():
        check_training_config(task_cfg)


def check_training_config(task_cfg: Any) -> None:
    """Run the start-up checks of the module docstring; raises :class:`TrainingInputError`. The crop
    check needs the CNN spec: fine-tuning without model.conv_feature_layers runs it in build_model."""
    if task_cfg.conv_feature_layers is not None:
        check_crops(task_cfg.conv_feature_layers, task_cfg.max_sample_size, task_cfg.min_sample_size)
    root = full_config(task_cfg)
    if root is None:
        return
    check_schedule(int(OmegaConf.select(root, "optimization.max_update", default=0) or 0), schedules(root))
    check_batch_budget(OmegaConf.select(root, "dataset.max_tokens", default=None), task_cfg.min_sample_size,
                       task_cfg.max_sample_size)


def check_batches_fit(task_cfg: Any, split: str, dataset: Any) -> None:
    """After loading ``split``: its longest crop must fit ``dataset.max_tokens`` (``max_tokens_valid``
    for other subsets than the training one)."""
    root = full_config(task_cfg)
    sizes = getattr(dataset, "sizes", None)
    if root is None or sizes is None or len(sizes) == 0:
        return
    train = split == OmegaConf.select(root, "dataset.train_subset", default="train")
    key = "dataset.max_tokens" if train else "dataset.max_tokens_valid"
    max_tokens = OmegaConf.select(root, key, default=None)
    if not train and max_tokens == OmegaConf.select(root, "dataset.max_tokens", default=None):
        key = "dataset.max_tokens_valid (= dataset.max_tokens)"
    if max_tokens is None or max_tokens <= 0:
        return
    crops = np.minimum(np.asarray(sizes), task_cfg.max_sample_size or np.iinfo(np.int64).max)
    longest = int(np.argmax(crops))
    if crops[longest] > max_tokens:
        where = f" ({dataset.where(longest)})" if hasattr(dataset, "where") else ""
        raise TrainingInputError(
            f"{key}={max_tokens} samples cannot hold one utterance of subset {split!r}: "
            f"{int((crops > max_tokens).sum())} utterance(s) are longer after the crop cap "
            f"task.max_sample_size={task_cfg.max_sample_size}, the longest {int(crops[longest])} samples{where}; "
            f"raise {key.split(' ')[0]} to at least {int(crops[longest])} or lower task.max_sample_size")


def check_audio_files(manifest: Manifest, rebuild: str, sample: Optional[int] = None, seed: int = 0) -> None:
    """``task.check_files``: the first missing audio files of ``manifest`` as one ManifestError;
    ``rebuild`` names what rebuilds the manifest (e.g. "the manifest with e2v-manifest").

    With ``sample`` set and more files listed, only a seeded sample of ``sample`` files is
    checked (one ``isfile`` each: seconds locally for millions of files, hours on a network
    filesystem), and the log says so and how to check all of them in parallel."""
    indices = sample_indices(len(manifest), sample, seed)
    missing = first_missing_files(manifest, indices=indices)
    if missing:
        checked = f" of a sample of {len(indices)}" if len(indices) < len(manifest) else ""
        raise ManifestError(f"{manifest.path}: audio files are missing (first {len(missing)}{checked} shown):\n  "
                            + "\n  ".join(missing) + f"\nfix the root on line 1 or rebuild {rebuild}")
    if len(indices) < len(manifest):
        logger.info("%s: checked %d of %d listed files (a sample drawn with seed %d; task.check_files_sample); "
                    "check all of them with e2v-validate-manifest --workers N %s", manifest.path, len(indices),
                    len(manifest), seed, manifest.path)


def one_line_errors() -> bool:
    """Whether input errors end the job as one line: inside a hydra job, unless a traceback is asked for."""
    if os.environ.get("E2V_TRACEBACK") or os.environ.get("HYDRA_FULL_ERROR"):
        return False
    return HydraConfig.initialized()


@contextmanager
def report_input_errors() -> Iterator[None]:
    """Inside a hydra job, end it on an input error (bad setting, manifest, audio, checkpoint, path)
    with ``SystemExit("emotion2vec: error: ...")``; elsewhere let the error propagate."""
    try:
        yield
    except INPUT_ERRORS as e:
        if not one_line_errors():
            raise
        raise SystemExit(f"emotion2vec: error: {describe(e)}") from None


def checked_load_dataset(load_dataset):
    """Decorator for ``load_dataset``: input errors as one line, then :func:`check_batches_fit`."""

    @functools.wraps(load_dataset)
    def wrapper(self, split: str, *args, **kwargs):
        with report_input_errors():
            result = load_dataset(self, split, *args, **kwargs)
            if split in self.datasets:
                check_batches_fit(self.cfg, split, self.datasets[split])
        return result

    return wrapper
