"""Official partitions and folds as data: ``DEST/<split>.folds/fold_K/{train,valid,test}.{tsv,emo,group}``.

The layout ``e2v-split-labels`` writes and the fine-tuning task reads
(``task.data=DEST/<split>.folds/fold_1``). Every fold file has the audio root of
``DEST/<split>.tsv`` on line 1, and its rows are rows of that manifest; ``valid`` appears only
where the corpus gives a validation set. The folder is built under a temporary name and then
put in place, so a run that stops never leaves a mix of old and new folds.
"""

import os
import shutil
from typing import Dict, List, Sequence

from .corpora.base import ROLES, LabelError
from .split_labels import write_split


Folds = List[Dict[str, List[Dict[str, str]]]]


def plan_folds(folder: str, rows: Sequence[Dict[str, str]], roles: Sequence[Sequence[str]], n_folds: int) -> Folds:
    """The rows of each fold and role, checked before anything is written.

    ``rows[i]`` has name, size, label, group (a row of the main manifest); ``roles[i][k]`` is its
    role (train/valid/test or "") in fold k+1.

    Raises:
        LabelError: a fold whose train or test part is empty.
    """
    parts: List[Dict[str, List[Dict[str, str]]]] = []
    for k in range(n_folds):
        part = {role: [row for row, r in zip(rows, roles) if r[k] == role] for role in ROLES}
        for role in ("train", "test"):
            if not part[role]:
                raise LabelError(f"fold {k + 1} of {folder} would have no {role} utterance among the "
                                 f"{len(rows)} kept; were its files all skipped, or is ROOT a part of the corpus?")
        parts.append(part)
    return parts


def write_folds(folder: str, root: str, parts: Folds) -> Dict[str, Dict[str, int]]:
    """Write the folds of :func:`plan_folds` into ``folder`` (``DEST/<split>.folds``); counts per fold and role."""
    tmp = f"{folder}.tmp{os.getpid()}"
    if os.path.lexists(tmp):
        shutil.rmtree(tmp)
    counts: Dict[str, Dict[str, int]] = {}
    for k, part in enumerate(parts, start=1):
        dest = os.path.join(tmp, f"fold_{k}")
        os.makedirs(dest)
        counts[f"fold_{k}"] = {}
        for role, fold_rows in part.items():
            if fold_rows:
                write_split(dest, role, root, fold_rows, with_groups=True)
                counts[f"fold_{k}"][role] = len(fold_rows)
    if os.path.lexists(folder):
        shutil.rmtree(folder)
    os.replace(tmp, folder)
    return counts


def remove_stale(folder: str) -> bool:
    """Remove a folds folder left by an earlier run of a corpus that now has no folds."""
    if os.path.isdir(folder):
        shutil.rmtree(folder)
        return True
    return False
