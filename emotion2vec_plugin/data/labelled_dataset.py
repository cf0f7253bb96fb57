"""Labelled utterances for fine-tuning: a split of ``e2v-labels`` output as batches with targets.

Reading and checking the split files and the label set: ``data/labelled_split.py``.

Audio reading, normalisation and the bad-file policy are those of pretraining
(:class:`~emotion2vec_plugin.data.audio_dataset.Emotion2vecAudioDataset`): an unreadable file, a
wrong rate, NaN samples or a clip too short for the CNN is left out of its batch with a warning
naming ``manifest:line``. Unlike pretraining, batches are padded, not cropped to the shortest
utterance: training crops each utterance to at most ``max_sample_size`` samples at a seeded
random offset; evaluation keeps whole utterances. ``padding_mask`` [B, S] (True = padded) is
exact, so the model can pool over exactly the valid frames.
"""

import logging
from typing import Dict, List, Optional

import numpy as np
import torch

from .audio_dataset import Emotion2vecAudioDataset
from .manifest import Manifest
from .padding import crop_and_pad

logger = logging.getLogger(__name__)


class Emotion2vecLabelledDataset(Emotion2vecAudioDataset):
    """Utterances of one labelled split with their class index.

    Args:
        manifest: the split's manifest.
        targets: class index per manifest utterance [len(manifest)].
        crop: training mode: crop to ``max_sample_size`` at a random (seeded) offset; otherwise
            whole utterances (``max_sample_size`` is then ignored).
        **kwargs: :class:`Emotion2vecAudioDataset` settings (sample_rate, min_sample_size,
            normalize, seed, conv_layers).

    A batch is ``{"id": [B], "net_input": {"source": [B, S], "padding_mask": [B, S], "id": [B]},
    "target": [B], "bad_files": int}``.
    """

    def __init__(self, manifest: Manifest, targets: np.ndarray, crop: bool = True,
                 max_sample_size: Optional[int] = None, **kwargs):
        super().__init__(manifest, max_sample_size=max_sample_size if crop else None, **kwargs)
        if len(targets) != len(manifest):
            raise ValueError(f"{manifest.path}: {len(targets)} targets for {len(manifest)} utterances")
        self.targets = np.asarray(targets, dtype=np.int64)[self.indices]
        self.crop = crop

    def __getitem__(self, index: int) -> Dict[str, object]:
        item = super().__getitem__(index)
        item["target"] = int(self.targets[index])
        return item

    def collater(self, samples: List[Dict[str, object]]) -> Dict[str, object]:
        bad = sum(s.get("source") is None for s in samples)
        samples = [s for s in samples if s.get("source") is not None]
        if not samples:  # the warnings already named every file; the task runs this with a zero loss
            return self.placeholder_batch(bad) if bad else {}
        ids = [int(s["id"]) for s in samples]
        gen = self._generator(ids, salt=0) if self.crop else None
        source, padding_mask = crop_and_pad([s["source"] for s in samples],
                                            self.max_sample_size if self.crop else None, gen)
        id_tensor = torch.tensor(ids, dtype=torch.long)
        self.batch_built()
        return {
            "id": id_tensor,
            "net_input": {"source": source, "padding_mask": padding_mask, "id": id_tensor},
            "target": torch.tensor([int(s.get("target", 0)) for s in samples], dtype=torch.long),
            "bad_files": bad,
        }

    def class_counts(self, num_classes: int) -> np.ndarray:
        """Utterances per class [C] after length filtering."""
        return np.bincount(self.targets, minlength=num_classes)
