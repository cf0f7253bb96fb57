"""Labelled splits as ``e2v-labels`` writes them, read and checked (no fairseq needed).

A split ``NAME`` of a label folder is three files in the same utterance order::

    NAME.tsv    fairseq manifest (root on line 1, then relpath<TAB>num_samples)
    NAME.emo    one label per line (or utt_id<TAB>label, the official emotion2vec layout)
    NAME.group  optional, one fold key per line (speaker/session)

The label set is taken from the training split and fixed in a stable order (sorted, or the
order the user gives), so that class ``i`` means the same thing in the checkpoint, the label
file written next to it, the exported model and FunASR's ``tokens.txt``.
"""

import os
from collections import Counter
from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np

from ..errors import Emotion2vecError
from .label_files import read_column_file
from .manifest import Manifest, read_manifest


class LabelledDataError(Emotion2vecError, ValueError):
    """Labels that cannot be trained on; the message names the file (and line) and the fix."""


@dataclass
class LabelledSplit:
    """One split: its manifest, one label string per manifest utterance and the .emo path."""

    manifest: Manifest
    labels: List[str]
    label_path: str


def read_labelled_split(folder: str, split: str, check_root: bool = True) -> LabelledSplit:
    """Read ``folder/split.tsv`` and ``folder/split.emo`` and check that they line up.

    Raises:
        ManifestError: a bad manifest (from :func:`read_manifest`).
        LabelledDataError: a missing ``.emo`` or a different number of labels than utterances.
    """
    manifest = read_manifest(os.path.join(folder, f"{split}.tsv"), check_root=check_root)
    label_path = os.path.join(folder, f"{split}.emo")
    if not os.path.isfile(label_path):
        raise LabelledDataError(f"{label_path} does not exist: fine-tuning needs one label per utterance of "
                                f"{manifest.path}, in the same order (write both with e2v-labels)")
    labels = read_column_file(label_path, "labels")
    if len(labels) != len(manifest):
        # the first utterance without a label (or the first surplus label) is where they part
        n = min(len(labels), len(manifest))
        where = (f"{manifest.where(n)} has no label" if len(manifest) > n
                 else f"{label_path}:{n + 1} has no utterance")
        raise LabelledDataError(
            f"{label_path} has {len(labels)} labels but {manifest.path} lists {len(manifest)} utterances "
            f"({where}); the two files must have one line per utterance in the same order: rewrite them "
            f"together with e2v-labels")
    return LabelledSplit(manifest, labels, label_path)


def label_set(train: LabelledSplit, explicit: Optional[Sequence[str]] = None) -> List[str]:
    """The class names in a stable order: sorted training labels, or ``explicit`` (then every
    training label must be in it and every listed class must have a training utterance)."""
    counts = Counter(train.labels)
    if explicit is None:
        return sorted(counts)
    names = [str(n).strip() for n in explicit]
    if len(set(names)) != len(names) or not all(names):
        raise LabelledDataError(f"task.labels={list(explicit)} has duplicate or empty names")
    unknown = [lab for lab in counts if lab not in names]
    if unknown:
        first = train.labels.index(unknown[0]) + 1
        raise LabelledDataError(f"{train.label_path}:{first}: label {unknown[0]!r} is not in task.labels={names}; "
                                f"add it there or leave task.labels unset to take the classes from the training split")
    empty = [n for n in names if counts[n] == 0]
    if empty:
        raise LabelledDataError(f"{train.label_path}: class(es) {empty} of task.labels have no training utterance; "
                                f"a class the model never sees cannot be learned: remove them from task.labels")
    return names


def label_ids(split: LabelledSplit, names: Sequence[str], train_path: str) -> np.ndarray:
    """Class index per utterance [N]; a label the training split never had is an error naming its line."""
    index = {n: i for i, n in enumerate(names)}
    out = np.empty(len(split.labels), dtype=np.int64)
    for i, lab in enumerate(split.labels):
        if lab not in index:
            raise LabelledDataError(
                f"{split.label_path}:{i + 1}: label {lab!r} never occurs in the training labels {train_path} "
                f"(classes: {list(names)}); the classifier cannot predict it: relabel or drop these utterances, "
                f"or add training examples of {lab!r}")
        out[i] = index[lab]
    return out
