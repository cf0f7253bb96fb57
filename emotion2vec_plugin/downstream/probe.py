"""``e2v-probe``: the emotion2vec paper's downstream probe, leave-one-group-out.

The probe (emotion2vec, arXiv 2312.15185, §4; the official ``iemocap_downstream`` recipe) is
deliberately weak so that it measures the frozen features, not itself::

    frames [T, D] -> Linear(D, 256) -> ReLU -> mean over the unpadded frames -> Linear(256, C)

Protocol (IEMOCAP: group = session, 5 folds; or group = speaker): for every group g, train on
all other groups, holding out ``valid_fraction`` (20%) of their utterances (stratified by label)
for early stopping on validation UA (the best state is kept; ties go to the lower validation
loss), then score the untouched group g: WA (accuracy), UA (balanced accuracy = unweighted
average recall), WF1 (support-weighted F1), confusion matrix. Scores are reported per fold and
as mean ± std (population std, ddof=0) over folds.

Optimisers: ``rmsprop`` is the official recipe (RMSprop, momentum 0.9, ``CyclicLR`` between lr
and 2·lr with a 10-epoch half cycle, stepped once per epoch); ``adam`` is plain Adam.

By default the input features are standardised per dimension with the statistics of the
training utterances of each fold (no test or validation data leaks in), so feature sets with
very different scales (log-mel filterbanks vs network outputs) are probed on equal terms; the
normalisation is an affine map in front of the first Linear, stored in the model's buffers.
``--no-standardize`` feeds the raw features, as the official recipe does.
``--normalize-per-group`` first z-scores every dimension with the mean / std of all frames of
the utterance's own group (speaker or session; the usual speaker normalisation of SER probes,
label-free, and it uses the test speaker's own statistics). (That recipe also
uses batch size 128 and keeps the best validation WA over all epochs; here the batch size is a
flag and the selection is on UA, the headline metric, with patience.)

Speed on CPU: features are loaded once (a stacked file stays memory-mapped). Each fold
standardises its frames once into one float32 tensor (when they fit in 2 GiB; otherwise every
batch is read and standardised on its own, with the same values), and batches are unpadded: the
batch's frames one after another, pooled per utterance with ``index_add_`` (:class:`FoldFrames`,
:meth:`UtteranceProbe.forward_packed`). Against padding every batch, ``masked_fill`` and
standardising every epoch, this took an epoch of one demo fold (192 training and 48 validation
utterances, D = 192, 1 thread) from 0.244 to 0.172 CPU s. On a small or busy machine
``--threads 1`` is usually fastest.

``--probe linear`` is the fast linear probe of :mod:`.linear_probe` (time-mean pooled
utterance vectors, per-group z-scoring of those vectors with ``--normalize-per-group``,
StandardScaler + LogisticRegression; leave-one-group-out, or stratified ``--folds``-fold without
``--groups``): the probe run during pretraining (``task.probe_data``), offline.

Determinism: each fold derives its seed from ``(seed, fold index)``; model initialisation uses
``torch.manual_seed`` inside ``torch.random.fork_rng`` (the caller's torch RNG is untouched),
and the validation split and batch order use seeded NumPy generators.
"""

import argparse
import json
import logging
import os
import sys
import warnings
from dataclasses import asdict, dataclass, replace
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from ..cli import COMMON_INPUT_ERRORS, describe, fail
from ..data.manifest import TextFileError, read_utf8
from .features import FeatureFormatError, FeatureSet, FeaturesLike, as_feature_set, load_features

logger = logging.getLogger(__name__)

METRICS = ("WA", "UA", "WF1")


class ProbeInputError(ValueError):
    """Labels, groups or settings that do not fit the features; says which files, the counts, the fix."""


@dataclass
class ProbeConfig:
    """Probe and training settings (hidden 256, lr 5e-4, RMSprop + cyclic LR and 100 epochs as in
    the official IEMOCAP recipe; batch size 32 and patience 10 are ours)."""

    hidden: int = 256
    epochs: int = 100
    patience: int = 10  # epochs without a validation improvement before stopping; <= 0: never stop early
    lr: float = 5e-4
    batch_size: int = 32
    optimizer: str = "rmsprop"  # "rmsprop" (cyclic LR, official recipe) or "adam"
    valid_fraction: float = 0.2
    standardize: bool = True
    seed: int = 0
    device: str = "cpu"


class UtteranceProbe(nn.Module):
    """Frame features -> utterance logits: the emotion2vec downstream model.

    Shapes:
        x: [B, T, D] float frames; padding_mask: [B, T] bool, True = padded (fairseq
        convention), or None when no utterance is padded.
        returns logits [B, C].

    Computation: ``(x - input_mean) / input_std`` (identity unless :meth:`set_input_stats` is
    called) -> Linear(D, hidden) -> ReLU -> mean over unpadded frames -> Linear(hidden, C).
    Padded frames are excluded with ``masked_fill`` (not multiplication), so whatever the
    padding holds cannot leak into the mean.
    """

    def __init__(self, dim: int, num_classes: int, hidden: int = 256):
        super().__init__()
        self.register_buffer("input_mean", torch.zeros(dim))
        self.register_buffer("input_std", torch.ones(dim))
        self.pre_net = nn.Linear(dim, hidden)
        self.post_net = nn.Linear(hidden, num_classes)

    def set_input_stats(self, mean: np.ndarray, std: np.ndarray) -> None:
        """Standardise inputs with per-dimension ``mean`` [D] and ``std`` [D]."""
        self.input_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.input_std.copy_(torch.as_tensor(std, dtype=torch.float32))

    def pool(self, x: torch.Tensor, padding_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """[B, T, D] (+ mask [B, T]) -> pooled hidden [B, hidden]."""
        h = F.relu(self.pre_net((x - self.input_mean) / self.input_std))  # [B, T, H]
        if padding_mask is None:
            return h.mean(dim=1)
        h = h.masked_fill(padding_mask.unsqueeze(-1), 0.0)
        frames = (~padding_mask).sum(dim=1, keepdim=True).clamp_min(1).to(h.dtype)  # [B, 1]
        return h.sum(dim=1) / frames

    def forward(self, x: torch.Tensor, padding_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.post_net(self.pool(x, padding_mask))

    def forward_packed(self, x: torch.Tensor, segment: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """The same logits from unpadded frames: ``x`` [F, D] holds the frames of B utterances one
        after another, already standardised with ``input_mean`` / ``input_std`` (what
        :class:`FoldFrames` returns); ``segment`` [F] int64 is each frame's utterance (0..B-1) and
        ``counts`` [B] float its utterance's frame count. Returns logits [B, C]."""
        h = F.relu(self.pre_net(x))  # [F, H]
        pooled = h.new_zeros(counts.shape[0], h.shape[1]).index_add_(0, segment, h)  # [B, H] sums
        return self.post_net(pooled / counts.unsqueeze(1))


def pad_batch(arrays: Sequence[np.ndarray]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Pad utterances [T_i, D] (any float dtype) to x [B, T_max, D] float32 (zeros where padded)
    and padding_mask [B, T_max] bool (True = padded)."""
    lengths = [a.shape[0] for a in arrays]
    x = np.zeros((len(arrays), max(lengths), arrays[0].shape[1]), dtype=np.float32)
    for i, a in enumerate(arrays):
        x[i, : lengths[i]] = a  # casts float16/float64/memory-mapped rows in one copy
    mask = torch.arange(x.shape[1]).unsqueeze(0) >= torch.tensor(lengths).unsqueeze(1)
    return torch.from_numpy(x), mask


def encode_labels(labels: Sequence[str], error: type = ValueError):
    """Class names in sorted order and each label's index [N] (int64); ``error`` (the caller's
    error type) when fewer than 2 classes are present."""
    names = sorted(set(labels))
    if len(names) < 2:
        raise error(f"all {len(labels)} utterances have the label {names[0]!r}; a probe needs >= 2 classes")
    index = {name: i for i, name in enumerate(names)}
    return names, np.array([index[v] for v in labels], dtype=np.int64)


def unweighted_accuracy(y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    """UA: mean recall over the classes present in ``y_true`` (sklearn's balanced accuracy)."""
    with warnings.catch_warnings():
        # a small validation/test group may lack a class the model still predicts: expected, not news
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        return float(balanced_accuracy_score(y_true, y_pred))


def compute_metrics(y_true: Sequence[int], y_pred: Sequence[int], label_names: Sequence[str]) -> Dict[str, object]:
    """WA, UA, WF1 and the confusion matrix (rows = true, cols = predicted, in ``label_names`` order)."""
    return {
        "WA": float(accuracy_score(y_true, y_pred)),
        "UA": unweighted_accuracy(y_true, y_pred),
        "WF1": float(f1_score(y_true, y_pred, average="weighted", zero_division=0)),
        "confusion": {"labels": list(label_names), "rows": "true", "cols": "predicted",
                      "matrix": confusion_matrix(y_true, y_pred, labels=list(range(len(label_names)))).tolist()},
    }


def input_stats(feats: FeatureSet, idx: Sequence[int]) -> Tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and std [D] over all frames of utterances ``idx`` (float64 accumulation,
    streamed so that memory-mapped features are never materialised whole)."""
    total = np.zeros(feats.dim)
    squares = np.zeros(feats.dim)
    frames = 0
    for i in idx:
        a = np.asarray(feats[i], dtype=np.float64)
        total += a.sum(axis=0)
        squares += np.square(a).sum(axis=0)
        frames += a.shape[0]
    mean = total / frames
    std = np.sqrt(np.maximum(squares / frames - mean ** 2, 0.0))
    std[std < 1e-6] = 1.0  # a constant dimension carries no information; do not blow it up
    return mean, std


class FoldFrames:
    """The frames of every utterance of ``feats``, standardised with one fold's training statistics
    (``mean``, ``std`` [D], the probe's input buffers), served as unpadded batches.

    ``batch(utts)`` -> ``x`` [F_b, D] float32 (the utterances' frames one after another, in the
    order of ``utts``), ``segment`` [F_b] int64 (the row in ``utts`` of each frame) and ``counts``
    [B] float32 (frames per utterance): the inputs of :meth:`UtteranceProbe.forward_packed`.

    When all frames fit in ``cache_bytes`` (float32) they are standardised once into one tensor and
    a batch is an ``index_select`` of its rows; otherwise every batch is read (from the memory map)
    and standardised on its own. Both compute ``(x - mean) / std`` in float32, so the values are
    the same either way, and the same as the padded :meth:`UtteranceProbe.forward`'s inputs.
    """

    def __init__(self, feats: FeatureSet, mean: np.ndarray, std: np.ndarray, cache_bytes: int = 2 << 30):
        self.feats = feats
        self.mean = torch.as_tensor(mean, dtype=torch.float32)
        self.std = torch.as_tensor(std, dtype=torch.float32)
        self.cache: Optional[torch.Tensor] = None
        if int(feats.lengths.sum()) * feats.dim * 4 <= cache_bytes:
            self.cache = self._standardised(list(range(len(feats))))  # utterance i: rows feats.offsets[i]:...

    def _standardised(self, utts: Sequence[int]) -> torch.Tensor:
        x = np.concatenate([np.asarray(self.feats[i], dtype=np.float32) for i in utts])  # one copy, any dtype
        return torch.from_numpy(x).sub_(self.mean).div_(self.std)

    def batch(self, utts: Sequence[int]) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        utts = np.asarray(utts, dtype=np.int64)
        lengths = self.feats.lengths[utts]
        segment = np.repeat(np.arange(len(utts)), lengths)
        if self.cache is None:
            x = self._standardised(utts)
        else:  # row r of the batch: its utterance's first cached row + its offset within the utterance
            first = np.repeat(self.feats.offsets[utts] - (np.cumsum(lengths) - lengths), lengths)
            x = self.cache.index_select(0, torch.from_numpy(first + np.arange(len(segment))))
        return x, torch.from_numpy(segment), torch.from_numpy(lengths.astype(np.float32))


@torch.no_grad()
def predict_logits(model: UtteranceProbe, frames: FoldFrames, idx: Sequence[int], batch_size: int,
                   device: torch.device) -> torch.Tensor:
    """Logits [len(idx), C] in the order of ``idx`` (utterances are pooled separately, so the
    batching does not change them beyond float summation order)."""
    idx = np.asarray(idx, dtype=np.int64)
    out = torch.empty(len(idx), model.post_net.out_features)
    model.eval()
    for s in range(0, len(idx), batch_size):
        x, segment, counts = frames.batch(idx[s:s + batch_size])
        out[s:s + batch_size] = model.forward_packed(x.to(device), segment.to(device), counts.to(device)).float().cpu()
    return out


def split_validation(idx: np.ndarray, y: np.ndarray, fraction: float,
                     rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """Split utterances ``idx`` into (train, valid), ``round(fraction * n)`` of them to valid,
    stratified by label: each class's members get evenly spaced keys in [0, 1) with a random
    phase, and the smallest keys go to validation."""
    idx = np.asarray(idx, dtype=np.int64)
    if fraction <= 0 or len(idx) < 2:
        return np.sort(idx), np.zeros(0, dtype=np.int64)
    keys = np.empty(len(idx))
    for c in np.unique(y[idx]):
        members = rng.permutation(np.flatnonzero(y[idx] == c))
        keys[members] = (np.arange(len(members)) + rng.random()) / len(members)
    order = np.lexsort((rng.random(len(idx)), keys))  # random tie-break between classes
    n_valid = min(len(idx) - 1, max(1, int(round(fraction * len(idx)))))
    return np.sort(idx[order[n_valid:]]), np.sort(idx[order[:n_valid]])


def shuffled_batches(idx: np.ndarray, batch_size: int, rng: np.random.Generator) -> List[np.ndarray]:
    """One epoch of training batches over ``idx``: a random permutation cut into batches (batches
    are unpadded, so grouping similar lengths would save nothing)."""
    order = rng.permutation(idx)
    return [order[s:s + batch_size] for s in range(0, len(order), batch_size)]


def _make_optimizer(model: nn.Module, cfg: ProbeConfig):
    if cfg.optimizer == "rmsprop":
        # the official emotion2vec IEMOCAP recipe: RMSprop(momentum=0.9) with
        # CyclicLR(base_lr=5e-4, max_lr=1e-3, step_size_up=10) stepped once per epoch
        opt = torch.optim.RMSprop(model.parameters(), lr=cfg.lr, momentum=0.9)
        return opt, torch.optim.lr_scheduler.CyclicLR(opt, base_lr=cfg.lr, max_lr=2 * cfg.lr, step_size_up=10)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg.lr), None
    raise ProbeInputError(f"optimizer {cfg.optimizer!r} is not known; expected 'rmsprop' or 'adam'")


def train_probe(feats: FeatureSet, y: np.ndarray, train: np.ndarray, valid: np.ndarray, num_classes: int,
                cfg: ProbeConfig, seed: int) -> Tuple[UtteranceProbe, Dict[str, object], FoldFrames]:
    """Train a probe on utterances ``train`` (labels ``y`` [N] int), early-stopping on the UA of
    ``valid``; returns the best model (by validation UA, then loss), a summary of the run and the
    fold's standardised frames (every utterance's, for scoring the test group with
    :func:`predict_logits`). Without validation utterances the last epoch's model is returned."""
    device = torch.device(cfg.device)
    rng = np.random.default_rng(seed)
    with torch.random.fork_rng(devices=[]):  # seeded init without disturbing the caller's RNG
        torch.manual_seed(seed)
        model = UtteranceProbe(feats.dim, num_classes, cfg.hidden)
    if cfg.standardize:
        model.set_input_stats(*input_stats(feats, train))
    frames = FoldFrames(feats, model.input_mean.numpy(), model.input_std.numpy())
    model.to(device)
    opt, sched = _make_optimizer(model, cfg)
    targets = torch.from_numpy(y).long()
    best = {"epoch": 0, "UA": -1.0, "loss": float("inf")}
    best_state = None
    waited = 0
    epoch = 0
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        train_loss = 0.0
        for batch in shuffled_batches(train, cfg.batch_size, rng):
            x, segment, counts = frames.batch(batch)
            logits = model.forward_packed(x.to(device), segment.to(device), counts.to(device))
            loss = F.cross_entropy(logits, targets[torch.from_numpy(batch)].to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            train_loss += loss.item() * len(batch)
        if sched is not None:
            sched.step()
        if len(valid) == 0:
            continue
        logits = predict_logits(model, frames, valid, cfg.batch_size, device)
        ua = unweighted_accuracy(y[valid], logits.argmax(dim=-1).numpy())
        valid_loss = F.cross_entropy(logits, targets[torch.from_numpy(valid)]).item()
        logger.debug("epoch %d: train loss %.4f, valid UA %.4f, valid loss %.4f", epoch,
                     train_loss / len(train), ua, valid_loss)
        # small validation sets saturate UA quickly; the loss then picks the more confident state
        if ua > best["UA"] or (ua == best["UA"] and valid_loss < best["loss"]):
            best = {"epoch": epoch, "UA": ua, "loss": valid_loss}
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            waited = 0
        else:
            waited += 1
            if 0 < cfg.patience <= waited:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    else:
        best["epoch"] = epoch
    return model, {"best_epoch": best["epoch"], "epochs_run": epoch,
                   "valid_UA": best["UA"] if best_state is not None else None}, frames


def normalize_per_group(feats: FeatureSet, groups: Sequence[str]) -> FeatureSet:
    """Frames z-scored per dimension with the statistics of all frames of their group -> a new
    in-memory :class:`FeatureSet` (float32). A dimension constant within a group is only centred."""
    groups = np.asarray([str(g) for g in groups])
    out: List[Optional[np.ndarray]] = [None] * len(feats)
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        mean, std = input_stats(feats, idx)
        for i in idx:
            out[i] = ((np.asarray(feats[i], dtype=np.float64) - mean) / std).astype(np.float32)
    return FeatureSet.from_arrays(out, source=f"{feats.source} (per-group normalised)", names=feats.names)


def _fold_seed(seed: int, fold: int) -> int:
    # independent streams per (seed, fold): seed 0 fold 1 must not equal seed 1 fold 0
    return int(np.random.SeedSequence([seed, fold]).generate_state(1)[0])


def cross_validate(features: FeaturesLike, labels: Sequence[str], groups: Sequence[str], cfg: ProbeConfig,
                   progress: bool = False) -> dict:
    """Leave-one-group-out probe.

    Args:
        features: a :class:`FeatureSet` or a list of N arrays [T_i, D].
        labels: N class names (e.g. neu/hap/ang/sad); classes are indexed in sorted order.
        groups: N fold keys (session or speaker); each distinct key is one test fold.
        cfg: training settings.
        progress: show a tqdm bar over the folds.

    Returns:
        A JSON-ready dict: ``config``, ``labels`` (class names), ``label_counts``,
        ``num_utterances``, ``feature_dim``, ``folds`` (per fold: ``group``, ``n_train``,
        ``n_valid``, ``n_test``, ``best_epoch``, ``epochs_run``, ``valid_UA``, ``WA``, ``UA``,
        ``WF1``, ``confusion``), ``summary`` ({metric: {mean, std}}) and ``confusion_total``
        (summed over folds; ``matrix`` rows = true, cols = predicted).
    """
    feats = as_feature_set(features)
    labels = [str(v) for v in labels]
    groups = [str(v) for v in groups]
    if len(labels) != len(feats) or len(groups) != len(feats):
        raise ProbeInputError(f"{len(labels)} labels and {len(groups)} groups for {len(feats)} utterances of "
                              f"{feats.source}; expected one label and one group per utterance")
    if cfg.batch_size < 1 or cfg.epochs < 1 or not 0 <= cfg.valid_fraction < 1:
        raise ProbeInputError(f"batch size {cfg.batch_size}, epochs {cfg.epochs}, valid fraction "
                              f"{cfg.valid_fraction}: expected batch size >= 1, epochs >= 1, 0 <= fraction < 1")
    names, y = encode_labels(labels, ProbeInputError)
    group_arr = np.array(groups)
    fold_keys = sorted(set(groups))
    if len(fold_keys) < 2:
        raise ProbeInputError(f"every utterance is in group {fold_keys[0]!r}: leave-one-group-out needs >= 2 groups "
                              f"(sessions or speakers); give the groups file one fold key per utterance")
    folds = []
    for k, g in enumerate(tqdm(fold_keys, desc="probe folds", unit="fold", disable=not progress)):
        seed = _fold_seed(cfg.seed, k)
        test = np.flatnonzero(group_arr == g)
        train, valid = split_validation(np.flatnonzero(group_arr != g), y, cfg.valid_fraction,
                                        np.random.default_rng(seed))
        unseen = sorted(set(names) - {names[c] for c in y[train]})
        if unseen:
            logger.warning("fold %r: classes %s have no training utterance; the probe cannot predict them", g, unseen)
        model, info, frames = train_probe(feats, y, train, valid, len(names), cfg, seed)
        pred = predict_logits(model, frames, test, cfg.batch_size, torch.device(cfg.device)).argmax(dim=-1).numpy()
        fold = {"group": g, "n_train": len(train), "n_valid": len(valid), "n_test": len(test), **info,
                **compute_metrics(y[test], pred, names)}
        logger.info("fold %s: %d test utterances, WA %.4f UA %.4f WF1 %.4f (best epoch %d of %d)", g, len(test),
                    fold["WA"], fold["UA"], fold["WF1"], info["best_epoch"], info["epochs_run"])
        folds.append(fold)
    summary = {m: {"mean": float(np.mean([f[m] for f in folds])), "std": float(np.std([f[m] for f in folds]))}
               for m in METRICS}
    total = np.sum([f["confusion"]["matrix"] for f in folds], axis=0).tolist()
    return {
        "config": asdict(cfg),
        "labels": names,
        "label_counts": {n: int((y == c).sum()) for c, n in enumerate(names)},
        "num_utterances": len(feats),
        "feature_dim": feats.dim,
        "folds": folds,
        "summary": summary,
        "confusion_total": {"labels": names, "rows": "true", "cols": "predicted", "matrix": total},
    }


def merge_seed_runs(runs: Sequence[dict]) -> dict:
    """Results of :func:`cross_validate` with several seeds (same folds) -> one result whose fold
    metrics are the means over seeds (confusion matrices summed), ``summary`` the mean ± std over
    folds of those, and ``seed_runs`` each seed's ``{seed, folds, summary}``."""
    first = runs[0]
    folds = []
    for k, fold in enumerate(first["folds"]):
        same = [r["folds"][k] for r in runs]
        if any(f["group"] != fold["group"] for f in same):
            raise ProbeInputError("seed runs disagree on their folds; they must come from the same inputs")
        matrix = np.sum([f["confusion"]["matrix"] for f in same], axis=0).tolist()
        folds.append({**{key: fold[key] for key in ("group", "n_train", "n_valid", "n_test")},
                      **{m: float(np.mean([f[m] for f in same])) for m in METRICS},
                      "best_epoch": float(np.mean([f["best_epoch"] for f in same])),
                      "confusion": {**fold["confusion"], "matrix": matrix}})
    summary = {m: {"mean": float(np.mean([f[m] for f in folds])), "std": float(np.std([f[m] for f in folds]))}
               for m in METRICS}
    total = np.sum([r["confusion_total"]["matrix"] for r in runs], axis=0).tolist()
    return {**first, "folds": folds, "summary": summary, "confusion_total": {**first["confusion_total"],
                                                                               "matrix": total},
            "seeds": [r["config"]["seed"] for r in runs],
            "seed_runs": [{"seed": r["config"]["seed"], "folds": [{k: f[k] for k in ("group", *METRICS)}
                                                                  for f in r["folds"]],
                           "summary": r["summary"]} for r in runs]}


def read_column_file(path: str, what: str) -> List[str]:
    """One value per line (the whole stripped line, so labels may contain spaces), or
    ``utt_id<TAB>value`` lines (the official emotion2vec ``train.emo`` layout; the value is the
    second column). Trailing blank lines are ignored; a blank line inside, more than two tab
    columns, or a layout that changes within the file is an error naming the line."""
    one = what[:-1]  # "labels" -> "label"
    if not os.path.isfile(path):
        state = "is a directory" if os.path.isdir(path) else "does not exist"
        raise ProbeInputError(f"{what} file {path} {state} (expected one {one} per line)")
    try:
        lines = read_utf8(path, f"{what} file (one {one} per line)").split("\n")
    except TextFileError as e:
        raise ProbeInputError(str(e)) from None
    while lines and not lines[-1].strip():
        lines.pop()
    values, columns = [], None
    for lineno, line in enumerate(lines, start=1):
        fields = [v.strip() for v in line.rstrip("\r").split("\t")]
        if not all(fields) or len(fields) > 2:
            raise ProbeInputError(f"{path}:{lineno}: expected one {one} (or 'utt_id<TAB>{one}'), got {line!r}; "
                                  f"every utterance needs exactly one line, in manifest order")
        if columns is None:
            columns = len(fields)
        elif len(fields) != columns:
            raise ProbeInputError(f"{path}:{lineno}: {len(fields)} tab-separated columns but line 1 has {columns}; "
                                  f"use one layout for the whole file")
        values.append(fields[-1])
    return values


def plot_embeddings(embeddings: np.ndarray, labels: Sequence[str], path: str, seed: int = 0) -> None:
    """2-D t-SNE of utterance embeddings [N, D] coloured by label (cf. the paper's Fig. 3), as PNG.

    Embeddings are standardised per dimension first so that no single large-scale dimension
    dominates the distances.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # Agg without touching pyplot's global backend
    from matplotlib.figure import Figure
    from sklearn.manifold import TSNE

    emb = np.asarray(embeddings, dtype=np.float64)
    if len(emb) < 4:
        raise ProbeInputError(f"t-SNE plot {path}: needs at least 4 utterances, got {len(emb)}")
    emb = (emb - emb.mean(axis=0)) / np.maximum(emb.std(axis=0), 1e-6)
    perplexity = min(30.0, (len(emb) - 1) / 3.0)  # TSNE requires perplexity < n_samples
    xy = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(emb)
    fig = Figure(figsize=(5.5, 4.8))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    labels = np.asarray(labels)
    for c, name in enumerate(sorted(set(labels.tolist()))):
        sel = labels == name
        ax.scatter(xy[sel, 0], xy[sel, 1], s=10, alpha=0.8, color=f"C{c % 10}", label=name)
    ax.set_title(f"t-SNE of utterance embeddings (mean-pooled features, N={len(emb)})", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=8, markerscale=1.5)
    fig.tight_layout()
    _savefig(fig, path)


def plot_confusion(confusion: Dict[str, object], path: str, title: str = "confusion, all folds") -> None:
    """Heat map of a confusion matrix (``{"labels", "matrix"}``, rows = true, cols = predicted):
    colour = row-normalised recall, text = recall % and count."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    counts = np.asarray(confusion["matrix"], dtype=np.int64)
    names = list(confusion["labels"])
    recall = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = 1.2 + 0.7 * len(names)
    fig = Figure(figsize=(size + 1.2, size))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(recall, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, f"{100 * recall[i, j]:.0f}%\n{counts[i, j]}", ha="center", va="center", fontsize=7,
                    color="white" if recall[i, j] > 0.6 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    _savefig(fig, path)


def _savefig(fig, path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)


def format_table(result: dict) -> str:
    """The per-fold scores and mean ± std as a compact text table (percent)."""
    width = max(12, *(len(f["group"]) for f in result["folds"]))
    lines = [f"{'fold':<{width}} {'n':>5} {'WA':>6} {'UA':>6} {'WF1':>6} {'epoch':>5}"]
    for f in result["folds"]:
        lines.append(f"{f['group']:<{width}} {f['n_test']:>5} {100 * f['WA']:6.2f} {100 * f['UA']:6.2f} "
                     f"{100 * f['WF1']:6.2f} {f['best_epoch']:>5}")
    s = result["summary"]
    lines.append(f"{'mean ± std':<{width}} {result['num_utterances']:>5} "
                 + "  ".join(f"{m} {100 * s[m]['mean']:.2f} ± {100 * s[m]['std']:.2f}" for m in METRICS))
    return "\n".join(lines)


def get_parser() -> argparse.ArgumentParser:
    d = ProbeConfig()
    p = argparse.ArgumentParser(
        prog="e2v-probe",
        description="Leave-one-group-out emotion probe on frozen features (emotion2vec paper protocol): "
                    "Linear(D,256)-ReLU-masked mean-Linear(256,C), early stopping on validation UA; "
                    "reports WA, UA, WF1 per fold and mean ± std.")
    p.add_argument("features", help="stacked prefix (PREFIX.npy [frames, D] + PREFIX.lengths) or a features "
                                    "directory with index.tsv (e2v-extract output)")
    p.add_argument("labels", help="one label per line (e.g. neu/hap/ang/sad) in manifest order; "
                                  "'utt_id<TAB>label' lines (official train.emo) are accepted too")
    p.add_argument("--groups", default=None,
                   help="one fold key per line (session or speaker), manifest order; each group is one test fold "
                        "(required by the mlp probe; without it the linear probe runs stratified k-fold)")
    p.add_argument("--probe", choices=["mlp", "linear"], default="mlp",
                   help="mlp: the paper's probe (default); linear: time-mean pooling + logistic regression, the "
                        "probe run during pretraining (task.probe_data), equal numbers on the same checkpoint")
    p.add_argument("--normalize-per-group", action="store_true",
                   help="z-score features per group (speaker normalisation) before the probe: frames with their "
                        "group's frame statistics (mlp), utterance vectors with their group's (linear)")
    p.add_argument("--folds", type=int, default=5, help="linear probe without --groups: stratified k-fold k")
    p.add_argument("--out", default=None, help="write the results JSON here")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--patience", type=int, default=d.patience,
                   help="stop after this many epochs without a better validation UA (<= 0: never)")
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--optimizer", choices=["rmsprop", "adam"], default=d.optimizer,
                   help="rmsprop: RMSprop + cyclic LR (official emotion2vec IEMOCAP recipe); adam: plain Adam")
    p.add_argument("--hidden", type=int, default=d.hidden, help="probe hidden size (paper: 256)")
    p.add_argument("--valid-fraction", type=float, default=d.valid_fraction,
                   help="share of the training folds' utterances held out for early stopping")
    p.add_argument("--no-standardize", dest="standardize", action="store_false",
                   help="feed raw features (official recipe) instead of per-dimension standardised ones")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="mlp probe: run with each of these seeds (overrides --seed); per-fold scores are then the "
                        "mean over seeds (each seed's folds are kept under 'seed_runs'), so paired comparisons of "
                        "feature sets over the same folds are less noisy")
    p.add_argument("--device", default=d.device, help="torch device, e.g. cpu or cuda")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads (0: torch's default); 1 is fastest for small feature sets or a busy machine")
    p.add_argument("--plot", default=None, metavar="PNG",
                   help="t-SNE plot of the utterance embeddings (mean-pooled input features) by label")
    p.add_argument("--confusion-plot", default=None, metavar="PNG",
                   help="confusion-matrix heat map, summed over folds")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(args: argparse.Namespace) -> dict:
    """Load the inputs once, check they agree, cross-validate, write the JSON and plots."""
    if getattr(args, "threads", 0) > 0:
        torch.set_num_threads(args.threads)
    labels = read_column_file(args.labels, "labels")
    if args.groups is None:
        if getattr(args, "probe", "mlp") == "mlp" or args.normalize_per_group:
            raise ProbeInputError("--groups is required by the mlp probe and by --normalize-per-group (one session "
                                  "or speaker per line); the linear probe runs k-fold without it")
        groups = None
    else:
        groups = read_column_file(args.groups, "groups")
    if groups is not None and len(labels) != len(groups):
        raise ProbeInputError(f"{args.labels} has {len(labels)} labels but {args.groups} has {len(groups)} groups; "
                              f"both must have one line per utterance of the same manifest")
    feats = load_features(args.features, expected_utterances=len(labels))
    for what, values, path in (("labels", labels, args.labels), ("groups", groups, args.groups)):
        if values is not None and len(values) != len(feats):
            raise ProbeInputError(
                f"{path} has {len(values)} {what} but {args.features} holds {len(feats)} utterances "
                f"({feats.describe()}); expected one line per utterance, in the order of the manifest the features "
                f"were extracted from: regenerate {what} from that manifest, or re-extract the features")
    logger.info("features: %s; %s groups, labels %s", feats.describe(), len(set(groups)) if groups else "no",
                sorted(set(labels)))
    if getattr(args, "probe", "mlp") == "linear":
        return _linear_main(args, feats, labels, groups)
    if args.normalize_per_group:
        feats = normalize_per_group(feats, groups)
    cfg = ProbeConfig(hidden=args.hidden, epochs=args.epochs, patience=args.patience, lr=args.lr,
                      batch_size=args.batch_size, optimizer=args.optimizer, valid_fraction=args.valid_fraction,
                      standardize=args.standardize, seed=args.seed, device=args.device)
    seeds = args.seeds or [args.seed]
    runs = [cross_validate(feats, labels, groups, replace(cfg, seed=s), progress=not args.quiet) for s in seeds]
    result = runs[0] if len(runs) == 1 else merge_seed_runs(runs)
    result["probe"] = "mlp"
    result["normalize_per_group"] = bool(args.normalize_per_group)
    result["inputs"] = _inputs(args)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
        logger.info("wrote %s", args.out)
    if args.plot:
        plot_embeddings(feats.utterance_means(), labels, args.plot, args.seed)
        logger.info("wrote %s", args.plot)
    if args.confusion_plot:
        plot_confusion(result["confusion_total"], args.confusion_plot,
                       title=f"confusion, {len(result['folds'])} folds summed (rows: true)")
        logger.info("wrote %s", args.confusion_plot)
    return result


def _inputs(args) -> Dict[str, Optional[str]]:
    return {"features": os.path.abspath(args.features), "labels": os.path.abspath(args.labels),
            "groups": os.path.abspath(args.groups) if args.groups else None}


def _linear_main(args, feats: FeatureSet, labels: List[str], groups: Optional[List[str]]) -> dict:
    """``--probe linear``: the in-training probe's numbers, offline."""
    from .linear_probe import LinearProbeError, linear_probe_cv

    try:
        result = linear_probe_cv(feats.utterance_means(), labels, groups, args.folds, args.seed,
                                 args.normalize_per_group)
    except LinearProbeError as e:
        raise ProbeInputError(str(e)) from None
    result.update(probe="linear", normalize_per_group=bool(args.normalize_per_group), num_utterances=len(feats),
                  feature_dim=feats.dim, inputs=_inputs(args))
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
        logger.info("wrote %s", args.out)
    return result


def format_linear_table(result: dict) -> str:
    """Per-fold UA/WA and mean ± std of a linear-probe result (percent)."""
    width = max(12, *(len(f["group"]) for f in result["folds"]))
    lines = [f"{'fold':<{width}} {'n':>5} {'WA':>6} {'UA':>6}"]
    for f in result["folds"]:
        lines.append(f"{f['group']:<{width}} {f['n_test']:>5} {100 * f['WA']:6.2f} {100 * f['UA']:6.2f}")
    s = result["summary"]
    lines.append(f"{'mean ± std':<{width}} {result['num_utterances']:>5} "
                 + "  ".join(f"{m} {100 * s[m]['mean']:.2f} ± {100 * s[m]['std']:.2f}" for m in ("WA", "UA")))
    return "\n".join(lines)


def cli_main(argv: Optional[List[str]] = None) -> None:
    # force: importing fairseq (through the package __init__) already ran basicConfig(level=DEBUG)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", force=True)
    args = get_parser().parse_args(argv)
    try:
        with logging_redirect_tqdm():  # per-fold log lines above the progress bar, not through it
            result = main(args)
    except (ProbeInputError, FeatureFormatError, *COMMON_INPUT_ERRORS) as e:  # one line, exit 2 (cli.py)
        raise fail("e2v-probe", describe(e)) from None
    print(format_linear_table(result) if result.get("probe") == "linear" else format_table(result))
    sys.stdout.flush()


if __name__ == "__main__":
    cli_main()
