"""Several corpora in one training epoch, drawn with per-corpus shares (``task.data_weights``).

fairseq's ``ResamplingDataset`` cannot be used as is: built with ``batch_by_size=True`` it stores
that flag under the name of the ``FairseqDataset.batch_by_size`` method the task calls, and dies
with "'bool' object is not callable". This wrapper draws ``len(dataset)`` utterances per epoch
with replacement, utterance ``i`` of corpus ``c`` with probability ``w_c / |c|`` (so corpus ``c``
gets the share ``w_c`` of the epoch whatever its size), from a generator seeded by (seed, epoch):
the same draws whether the run was interrupted or not. It logs how many utterances each corpus
gave, so the shares can be checked in the training log.
"""

import logging
from typing import List, Sequence

import numpy as np
from fairseq.data import BaseWrapperDataset, ConcatDataset

logger = logging.getLogger(__name__)


class WeightedCorpusMix(BaseWrapperDataset):
    """Resample a :class:`ConcatDataset` of corpora every epoch.

    Args:
        dataset: the corpora, concatenated (item ``i`` of the concatenation keeps its own id).
        weights: one non-negative share per corpus, summing to 1.
        seed: run seed.
        names: corpus names for the log (default: corpus 0, 1, ...).
    """

    def __init__(self, dataset: ConcatDataset, weights: Sequence[float], seed: int, names: Sequence[str] = ()):
        super().__init__(dataset)
        sizes = [len(d) for d in dataset.datasets]
        if len(weights) != len(sizes):
            raise ValueError(f"{len(weights)} weights for {len(sizes)} corpora")
        self.weights = list(weights)
        self.names = list(names) or [f"corpus {i}" for i in range(len(sizes))]
        self.bounds = np.cumsum([0] + sizes)
        probs = np.concatenate([np.full(n, w / n) for n, w in zip(sizes, weights)])
        self.probs = probs / probs.sum()
        self.seed = seed
        self.epoch = None
        self.draws = np.arange(len(dataset))
        self.set_epoch(1)

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        if epoch == self.epoch:
            return
        self.epoch = epoch
        rng = np.random.default_rng([int(self.seed) % 2**32, int(epoch), 0x6532])
        self.draws = rng.choice(len(self.dataset), size=len(self.dataset), replace=True, p=self.probs)
        counts = self.corpus_counts()
        logger.info("epoch %d draws %s utterances from %s (shares %s, weights %s)", epoch, counts, self.names,
                    [round(c / max(sum(counts), 1), 3) for c in counts], [round(w, 3) for w in self.weights])

    def corpus_counts(self) -> List[int]:
        """Utterances of each corpus in the current epoch's draws."""
        return np.histogram(self.draws, bins=self.bounds)[0].tolist()

    def __getitem__(self, index: int):
        return self.dataset[int(self.draws[index])]

    def __len__(self) -> int:
        return len(self.draws)

    @property
    def sizes(self) -> np.ndarray:
        return np.asarray(self.dataset.sizes)[self.draws]

    def num_tokens(self, index: int) -> int:
        return self.dataset.num_tokens(int(self.draws[index]))

    def size(self, index: int) -> int:
        return self.dataset.size(int(self.draws[index]))

    def ordered_indices(self) -> np.ndarray:
        """Shuffled, then longest first (as each corpus orders itself); fairseq seeds numpy
        with (seed, epoch) around this call."""
        return np.lexsort([np.random.permutation(len(self)), self.sizes])[::-1]

    @property
    def can_reuse_epoch_itr_across_epochs(self) -> bool:
        return False  # new draws every epoch: fairseq must rebuild the batches

    @property
    def supports_prefetch(self) -> bool:
        return False
