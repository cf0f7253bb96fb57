"""Raw-audio pretraining dataset: reads a manifest, crops, normalises, optionally precomputes masks.

Bad data met during training (an unreadable or vanished file, wrong rate or channels, NaN/inf
samples, a clip too short for the CNN) does not stop the run: the utterance is left out of its
batch, a warning names ``manifest:line`` and the reason, and the batch carries the count as
``bad_files``, which the criterion logs.

A batch whose files are all bad is not dropped (fairseq would use it as its "dummy batch" and
die, and under DDP every rank must run a forward): it becomes a placeholder of silence flagged
``all_bad``, which the task runs with a zero loss and counts in ``bad_files``; an update made
only of such batches is skipped.

Batches are cropped to the shortest utterance in the batch (capped at ``max_sample_size``) as in
data2vec 2.0's pretraining, so the model sees no padding. All randomness (crop offsets,
dataset-side masks) is drawn from generators seeded by (seed, epoch, utterance ids): a batch is
the same whether the run was interrupted or not, and whichever loader worker builds it. Loader
workers hold their own copy of the dataset, made when fairseq builds the epoch's iterator, so
the training dataset tells fairseq not to reuse the iterator across epochs
(``can_reuse_epoch_itr_across_epochs``): every epoch gets fresh workers that see its epoch.
Evaluation datasets (``vary_with_epoch=False``) crop and mask the same way at every validation.
Utterance ids are global across corpora (``id_offset``), so utterances of different corpora
never share a seed.
"""

import logging
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from fairseq.data import FairseqDataset

from ..modules.clip_rules import clip_problem, frames_for_samples
from ..modules.masking import compute_span_mask
from .manifest import AudioReadError, Manifest, read_mono
from .worker_memory import release_free_heap

logger = logging.getLogger(__name__)

TRIM_EVERY = 50  # batches between two malloc_trim calls in a loader worker (batch_built)


class Emotion2vecAudioDataset(FairseqDataset):
    """Utterances of one manifest.

    Args:
        manifest: parsed manifest.
        sample_rate: expected rate; files at another rate are an error (convert with e2v-manifest).
        max_sample_size: crop length cap in samples (data2vec 2.0 base: 320000 = 20 s).
        min_sample_size: utterances shorter than this are left out (and counted in the log).
        normalize: zero mean / unit variance per utterance (before cropping, as fairseq).
        seed: run seed for crop offsets and dataset-side masks.
        mask: None, or a dict of compute_span_mask settings plus ``clone_batch`` to return
            ``precomputed_mask`` [B * clone_batch, T] in each batch (needs ``conv_layers``).
        conv_layers: the model's CNN spec: frames per crop for dataset-side masks; clips giving
            fewer than 2 frames are left out.
        id_offset: added to the utterance index to give its global id (the utterances of the
            corpora before this one in ``task.data``).
        vary_with_epoch: draw new crops and masks every epoch (training); False: the same every
            time (validation, so that losses of different checkpoints compare).
    """

    def __init__(self, manifest: Manifest, sample_rate: int = 16000, max_sample_size: Optional[int] = None,
                 min_sample_size: int = 0, normalize: bool = True, seed: int = 1, mask: Optional[dict] = None,
                 conv_layers: Optional[List[Tuple[int, int, int]]] = None, id_offset: int = 0,
                 vary_with_epoch: bool = True):
        super().__init__()
        self.manifest = manifest
        self.sample_rate = sample_rate
        self.max_sample_size = max_sample_size or int(1e12)
        self.min_sample_size = min_sample_size
        self.normalize = normalize
        self.seed = seed
        self.mask = mask
        self.epoch = 1
        self.id_offset = int(id_offset)
        self.vary_with_epoch = vary_with_epoch
        if mask is not None and conv_layers is None:
            raise ValueError("dataset-side masks need conv_layers to know the number of frames per crop")
        self.conv_layers = conv_layers
        self._warned = set()
        # numpy only, no Python object per utterance: forked loader workers share these pages
        # with the trainer instead of copying them as they read (data/columns.py)
        all_sizes = np.asarray(manifest.sizes, dtype=np.int64)
        keep = np.flatnonzero(all_sizes >= min_sample_size)
        skipped = len(manifest) - len(keep)
        if skipped:
            logger.info("%s: left out %d of %d utterances shorter than min_sample_size=%d",
                        manifest.path, skipped, len(manifest), min_sample_size)
        if not len(keep):
            raise ValueError(
                f"{manifest.path}: no utterance is at least task.min_sample_size={min_sample_size} samples long "
                f"(longest: {int(all_sizes.max()) if len(all_sizes) else 0}); lower task.min_sample_size"
            )
        self.indices = keep.astype(np.int64, copy=False)
        self.sizes = all_sizes[self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def where(self, index: int) -> str:
        return self.manifest.where(int(self.indices[index]))

    def read(self, index: int) -> np.ndarray:
        """Mono float32 samples of utterance ``index`` (AudioReadError naming manifest:line)."""
        return read_mono(self.manifest.full_path(int(self.indices[index])), self.where(index), self.sample_rate)

    def problem(self, wav: np.ndarray) -> Optional[str]:
        """Why a decoded clip cannot be trained on, or None."""
        return clip_problem(wav, self.conv_layers, min_frames=2)

    def __getitem__(self, index: int) -> Dict[str, object]:
        try:
            wav = self.read(index)
            reason = self.problem(wav)
        except AudioReadError as e:
            reason = str(e)
        if reason is not None:
            if index not in self._warned:  # once per file (and per loader worker)
                self._warned.add(index)
                logger.warning("skipping %s: %s", self.where(index), reason)
            return {"id": self.id_offset + index, "source": None}
        source = torch.from_numpy(wav)
        if self.normalize:
            source = F.layer_norm(source, source.shape)
        return {"id": self.id_offset + index, "source": source}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def can_reuse_epoch_itr_across_epochs(self) -> bool:
        # a reused iterator keeps its loader workers, whose dataset copies never see set_epoch
        return not self.vary_with_epoch

    def _generator(self, ids: Sequence[int], salt: int) -> torch.Generator:
        key = (self.seed, self.epoch if self.vary_with_epoch else 0, salt) + tuple(int(i) for i in ids)
        return torch.Generator().manual_seed(hash(key) & ((1 << 63) - 1))

    def placeholder_batch(self, bad: int) -> Dict[str, object]:
        """A batch standing for one whose ``bad`` files were all left out: one utterance of
        silence, long enough for the CNN, flagged ``all_bad`` (the task zeroes its loss)."""
        size = max(self.min_sample_size, 16000)
        if self.conv_layers is not None:
            while frames_for_samples(self.conv_layers, size) < 2:
                size *= 2
        batch = self.collater([{"id": -1, "source": torch.zeros(size)}])
        batch["bad_files"] = bad
        batch["all_bad"] = True
        return batch

    def collater(self, samples: List[Dict[str, object]]) -> Dict[str, object]:
        bad = sum(s.get("source") is None for s in samples)
        samples = [s for s in samples if s.get("source") is not None]
        if not samples:
            # the warnings above already named every file
            return self.placeholder_batch(bad) if bad else {}
        ids = [int(s["id"]) for s in samples]
        size = min(min(len(s["source"]) for s in samples), self.max_sample_size)
        gen = self._generator(ids, salt=0)
        sources = []
        for s in samples:
            wav = s["source"]
            start = int(torch.randint(0, len(wav) - size + 1, (1,), generator=gen))
            sources.append(wav[start:start + size])
        net_input = {"source": torch.stack(sources), "id": torch.tensor(ids, dtype=torch.long)}
        if self.mask is not None:
            m = self.mask
            frames = frames_for_samples(self.conv_layers, size)
            net_input["precomputed_mask"] = compute_span_mask(
                len(samples) * m["clone_batch"], frames, m["mask_prob"], m["mask_length"], m["mask_prob_adjust"],
                generator=self._generator(ids, salt=1),
            )
        self.batch_built()
        return {"id": net_input["id"], "net_input": net_input, "bad_files": bad}

    def batch_built(self) -> None:
        """Every ``TRIM_EVERY`` batches built in a loader worker, give its freed heap back
        (``data/worker_memory.py``). A worker's batch tensors are moved to shared memory by its
        queue thread while the next batch is being built; the freed blocks leave holes that glibc
        keeps resident: measured 15-70 MB of private growth per worker in its first 19,000
        utterances, 1-7 MB with a trim every 50 batches."""
        self._built = getattr(self, "_built", 0) + 1
        if self._built % TRIM_EVERY == 0 and torch.utils.data.get_worker_info() is not None:
            release_free_heap()

    def num_tokens(self, index: int) -> int:
        return self.size(index)

    def size(self, index: int) -> int:
        return int(min(self.sizes[index], self.max_sample_size))

    def ordered_indices(self) -> np.ndarray:
        """Shuffled, then sorted by length (longest first) so batches crop little.
        fairseq seeds numpy with (seed, epoch) around this call."""
        order = [np.random.permutation(len(self)), np.minimum(self.sizes, self.max_sample_size)]
        return np.lexsort(order)[::-1]
