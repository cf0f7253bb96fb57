"""Probing on a corpus's official folds: ``e2v-probe FEATS DEST/<split>.emo --folds DEST/<split>.folds``.

The folds are data, written by ``e2v-labels`` (and ``e2v-split-labels``) in the layout the
fine-tuning task reads::

    DEST/<split>.tsv, DEST/<split>.emo                 the main split (the features are extracted from it)
    DEST/<split>.folds/fold_K/{train,valid,test}.tsv   K = 1..N; valid only where the corpus gives one
    DEST/<split>.folds/fold_K/{train,valid,test}.emo   one label per row

Every fold manifest has the main split's audio root on line 1, and its rows
(``relpath<TAB>num_samples``) are rows of ``DEST/<split>.tsv``; :func:`read_folds` maps them to
utterance indices of the main split (and so of the features) by relpath, and checks that each
fold row carries the main split's label.

:func:`probe_official_folds` then runs, per fold, the MLP probe of :mod:`.mlp_probe`: train on the
fold's train rows, select the epoch on its valid rows (official validation set) or, where the
corpus gives none, on ``valid_fraction`` of the train rows held out stratified by label (the
selection the leave-one-group-out probe makes), and score the fold's test rows.
:func:`linear_official_folds` does the same with the linear probe (no selection: it fits the
train rows). Both report per fold and mean ± std the metrics of :mod:`.metrics`.
"""

import logging
import os
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
from tqdm import tqdm

from ..data.feature_store import FeatureSet
from ..data.labelled_split import read_labelled_split
from ..data.manifest import Manifest
from ..errors import Emotion2vecError
from .linear_probe import fit_predict
from .metrics import METRICS, compute_metrics, encode_labels, fold_summary
from .mlp_probe import (ProbeConfig, ProbeInputError, assemble_result, check_config, fold_seed, probe_fold,
                        split_validation)

logger = logging.getLogger(__name__)

FOLD_NAME = re.compile(r"^fold_([1-9][0-9]*)$")
SCHEME = "official folds"


class FoldsError(Emotion2vecError, ValueError):
    """A folds folder that does not fit its main split; names the file (and line) and the fix."""


@dataclass
class OfficialFold:
    """One fold as utterance indices [n] (int64) of the main split, in the fold files' row order.

    ``valid`` is None where the corpus gives no validation set."""

    name: str
    train: np.ndarray
    valid: Optional[np.ndarray]
    test: np.ndarray


def fold_names(folds_dir: str) -> List[str]:
    """``fold_1`` .. ``fold_N`` of ``folds_dir``, checked to be numbered without gaps."""
    if not os.path.isdir(folds_dir):
        state = "is a file" if os.path.exists(folds_dir) else "does not exist"
        raise FoldsError(f"{folds_dir}: {state}; expected the folds folder DEST/<split>.folds holding fold_1, fold_2, "
                         f"... (each with train and test .tsv/.emo, written by e2v-labels)")
    entries = sorted(os.listdir(folds_dir))
    numbers = sorted(int(m.group(1)) for m in map(FOLD_NAME.match, entries)
                     if m and os.path.isdir(os.path.join(folds_dir, m.group(0))))
    if not numbers:
        raise FoldsError(f"{folds_dir}: holds no fold_K folder (found {entries[:5] or 'nothing'}); expected "
                         f"fold_1/{{train,test}}.{{tsv,emo}} (valid optional), as e2v-labels writes them; without "
                         f"official folds leave out --folds and give --groups for leave-one-group-out")
    gaps = sorted(set(range(1, numbers[-1] + 1)) - set(numbers))
    if gaps:
        raise FoldsError(f"{folds_dir}: fold_{gaps[0]} is missing but fold_{numbers[-1]} exists; folds are numbered "
                         f"1..N without gaps: restore it, or rewrite the folds with e2v-labels")
    return [f"fold_{k}" for k in numbers]


def row_index(main: Manifest) -> Dict[str, int]:
    """relpath -> utterance index of the main split; a relpath listed twice is an error naming both lines."""
    index: Dict[str, int] = {}
    for i, name in enumerate(main.names):
        if name in index:
            raise FoldsError(f"{main.where(i)}: {name!r} is listed again (first at {main.where(index[name])}); fold "
                             f"rows are matched to the main split by relpath, so each must occur once: rewrite the "
                             f"split with e2v-labels")
        index[name] = i
    return index


def read_folds(folds_dir: str, main: Manifest, labels: Sequence[str], labels_path: str) -> List[OfficialFold]:
    """Every fold of ``folds_dir`` as indices of the main split ``main`` (whose labels are ``labels``,
    read from ``labels_path``).

    Raises:
        FoldsError: no fold_K, a gap in the numbering, a fold without train or test, a fold
            manifest with another audio root, a row that is not in the main split, a label that
            differs from the main split's, a row in both train and test.
        LabelledDataError, ManifestError: a fold's .tsv and .emo of different lengths, a bad manifest.
    """
    index = row_index(main)
    folds = []
    for name in fold_names(folds_dir):
        fold_dir = os.path.join(folds_dir, name)
        parts: Dict[str, Optional[np.ndarray]] = {}
        for subset in ("train", "valid", "test"):
            tsv = os.path.join(fold_dir, f"{subset}.tsv")
            if not os.path.isfile(tsv):
                if subset == "valid":
                    parts[subset] = None
                    continue
                raise FoldsError(f"{tsv}: missing; every fold needs train.tsv/.emo and test.tsv/.emo (valid is "
                                 f"optional): rewrite the folds with e2v-labels")
            split = read_labelled_split(fold_dir, subset, check_root=False)  # .tsv/.emo lengths checked there
            m = split.manifest
            if os.path.normpath(m.root) != os.path.normpath(main.root):
                raise FoldsError(f"{tsv}:1: audio root {m.root!r} but {main.path}:1 has {main.root!r}; a fold's rows "
                                 f"are rows of the main split, under the same root: write both with one e2v-labels run")
            if len(m) == 0:
                raise FoldsError(f"{tsv}: lists no utterances; a fold needs at least one {subset} utterance")
            rows = np.empty(len(m), dtype=np.int64)
            for j, relpath in enumerate(m.names):
                i = index.get(relpath)
                if i is None:
                    raise FoldsError(f"{m.where(j)}: {relpath!r} is not a row of {main.path}; fold rows must be rows "
                                     f"of the main split the features were extracted from: write the split and its "
                                     f"folds with one e2v-labels run (and re-extract if the split changed)")
                if split.labels[j] != labels[i]:
                    raise FoldsError(f"{split.label_path}:{j + 1}: label {split.labels[j]!r} for {relpath!r}, but "
                                     f"{labels_path}:{i + 1} says {labels[i]!r}; the fold labels and the main split's "
                                     f"must agree: write them with one e2v-labels run")
                rows[j] = i
            parts[subset] = rows
        shared = np.intersect1d(parts["train"], parts["test"])
        if len(shared):
            raise FoldsError(f"{os.path.join(fold_dir, 'test.tsv')}: {len(shared)} row(s) are also in train.tsv, e.g. "
                             f"{main.names[shared[0]]!r}; a test row must not be trained on: rewrite the folds")
        folds.append(OfficialFold(name, parts["train"], parts["valid"], parts["test"]))
    logger.info("%s: %d folds (%s validation sets)", folds_dir, len(folds),
                "with" if all(f.valid is not None for f in folds) else
                "without" if all(f.valid is None for f in folds) else "some with")
    return folds


def covered(folds: Sequence[OfficialFold]) -> int:
    """Utterances of the main split that occur in some fold."""
    rows = [r for f in folds for r in (f.train, f.valid, f.test) if r is not None]
    return int(len(np.unique(np.concatenate(rows))))


def probe_official_folds(feats: FeatureSet, labels: Sequence[str], folds: Sequence[OfficialFold], cfg: ProbeConfig,
                         progress: bool = False) -> dict:
    """The MLP probe on each official fold (see the module docstring).

    Args:
        feats: N utterances of the main split; labels: their N class names.
        folds: from :func:`read_folds`.

    Returns:
        :func:`~.mlp_probe.cross_validate`'s dict (``group`` of a fold = its folder name), plus
        ``scheme`` ("official folds"), ``fold_utterances`` and per fold ``valid_set``
        ("official" or "held out of train").
    """
    if len(labels) != len(feats):
        raise ProbeInputError(f"{len(labels)} labels for {len(feats)} utterances of {feats.source}; expected one "
                              f"label per utterance of the main split")
    check_config(cfg)
    names, y = encode_labels([str(v) for v in labels], ProbeInputError)
    records = []
    for k, fold in enumerate(tqdm(folds, desc="probe folds", unit="fold", disable=not progress)):
        seed = fold_seed(cfg.seed, k)
        if fold.valid is None:  # no official validation set: hold out part of train, as leave-one-group-out does
            train, valid = split_validation(fold.train, y, cfg.valid_fraction, np.random.default_rng(seed))
        else:
            train, valid = fold.train, fold.valid
        record = probe_fold(feats, y, names, fold.name, train, valid, fold.test, cfg, seed)
        record["valid_set"] = "official" if fold.valid is not None else "held out of train"
        records.append(record)
    result = assemble_result(feats, y, names, records, cfg)
    result.update(scheme=SCHEME, fold_utterances=covered(folds))
    return result


def linear_official_folds(x: np.ndarray, labels: Sequence[str], folds: Sequence[OfficialFold], C: float = 1.0,
                          max_iter: int = 1000) -> dict:
    """The linear probe (:func:`~.linear_probe.fit_predict`) on each official fold: fit the train rows of
    utterance vectors ``x`` [N, D], score the test rows (a valid set is not needed: nothing is selected).

    Returns ``{"labels", "scheme", "folds": [{"group", "n_train", "n_valid", "n_test", METRICS..., "confusion"}],
    "summary": {metric: {mean, std}}, "fold_utterances"}``."""
    names, y = encode_labels([str(v) for v in labels], ProbeInputError)
    records = []
    for fold in folds:
        if len(np.unique(y[fold.train])) < 2:
            raise ProbeInputError(f"{fold.name}: the train rows hold a single class; a probe needs >= 2")
        pred = fit_predict(x[fold.train], y[fold.train], x[fold.test], C, max_iter)
        records.append({"group": fold.name, "n_train": len(fold.train),
                        "n_valid": 0 if fold.valid is None else len(fold.valid), "n_test": len(fold.test),
                        **compute_metrics(y[fold.test], pred, names)})
    return {"labels": names, "scheme": SCHEME, "folds": records, "summary": fold_summary(records, METRICS),
            "fold_utterances": covered(folds)}
