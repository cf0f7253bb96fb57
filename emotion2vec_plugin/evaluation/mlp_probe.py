"""The emotion2vec paper's downstream probe (MLP on frozen frames), leave-one-group-out.

The probe (emotion2vec, arXiv 2312.15185, §4; the official ``iemocap_downstream`` recipe) is
deliberately weak so that it measures the frozen features, not itself::

    frames [T, D] -> Linear(D, 256) -> ReLU -> mean over the unpadded frames -> Linear(256, C)

Protocol (IEMOCAP: group = session, 5 folds; or group = speaker): for every group g, train on
all other groups, holding out ``valid_fraction`` (20%) of their utterances (stratified by label)
for early stopping on validation UA (the best state is kept; ties go to the lower validation
loss), then score the untouched group g: WA (accuracy), UA (balanced accuracy = unweighted
average recall), macro-F1 and weighted-F1 (:mod:`.metrics`), confusion matrix. Scores are
reported per fold and as mean ± std (population std, ddof=0) over folds.

Optimisers: ``rmsprop`` is the official recipe (RMSprop, momentum 0.9, ``CyclicLR`` between lr
and 2·lr with a 10-epoch half cycle, stepped once per epoch); ``adam`` is plain Adam.

By default the input features are standardised per dimension with the statistics of the
training utterances of each fold (no test or validation data leaks in), so feature sets with
very different scales (log-mel filterbanks vs network outputs) are probed on equal terms; the
normalisation is an affine map in front of the first Linear, stored in the model's buffers.
``ProbeConfig.standardize=False`` feeds the raw features, as the official recipe does. (That
recipe also uses batch size 128 and keeps the best validation WA over all epochs; here the batch
size is a setting and the selection is on UA, the headline metric, with patience.)

Speed on CPU: features are loaded once (a stacked file stays memory-mapped). Each fold
standardises its frames once into one float32 tensor (when they fit in 2 GiB; otherwise every
batch is read and standardised on its own, with the same values), and batches are unpadded: the
batch's frames one after another, pooled per utterance with ``index_add_`` (:class:`FoldFrames`,
:meth:`UtteranceProbe.forward_packed`). Against padding every batch, ``masked_fill`` and
standardising every epoch, this took an epoch of one demo fold (192 training and 48 validation
utterances, D = 192, 1 thread) from 0.244 to 0.172 CPU s. On a small or busy machine
``--threads 1`` is usually fastest.

Determinism: each fold derives its seed from ``(seed, fold index)``; model initialisation uses
``torch.manual_seed`` inside ``torch.random.fork_rng`` (the caller's torch RNG is untouched),
and the validation split and batch order use seeded NumPy generators.
"""

import logging
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from ..data.feature_store import FeatureSet, FeaturesLike, as_feature_set
from ..errors import Emotion2vecError
from ..modules.pooling import masked_mean
from .metrics import (MACRO_F1, METRICS, UA, WA, WEIGHTED_F1, compute_metrics, encode_labels, fold_summary,
                      unweighted_accuracy)
from .standardize import input_stats

logger = logging.getLogger(__name__)


class ProbeInputError(Emotion2vecError, ValueError):
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
    called) -> Linear(D, hidden) -> ReLU -> mean over unpadded frames
    (:func:`~emotion2vec_plugin.modules.pooling.masked_mean`) -> Linear(hidden, C). The padding
    must be finite (:func:`pad_batch` pads with zeros): the mask's zeros then remove it exactly.
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
        return masked_mean(h, padding_mask)

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


def fold_seed(seed: int, fold: int) -> int:
    # independent streams per (seed, fold): seed 0 fold 1 must not equal seed 1 fold 0
    return int(np.random.SeedSequence([seed, fold]).generate_state(1)[0])


def check_config(cfg: ProbeConfig) -> None:
    """ProbeInputError on settings no probe can train with (showing them)."""
    if cfg.batch_size < 1 or cfg.epochs < 1 or not 0 <= cfg.valid_fraction < 1:
        raise ProbeInputError(f"batch size {cfg.batch_size}, epochs {cfg.epochs}, valid fraction "
                              f"{cfg.valid_fraction}: expected batch size >= 1, epochs >= 1, 0 <= fraction < 1")


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
        ``macro_f1``, ``weighted_f1``, ``confusion``), ``summary`` ({metric: {mean, std}}) and ``confusion_total``
        (summed over folds; ``matrix`` rows = true, cols = predicted).
    """
    feats = as_feature_set(features)
    labels = [str(v) for v in labels]
    groups = [str(v) for v in groups]
    if len(labels) != len(feats) or len(groups) != len(feats):
        raise ProbeInputError(f"{len(labels)} labels and {len(groups)} groups for {len(feats)} utterances of "
                              f"{feats.source}; expected one label and one group per utterance")
    check_config(cfg)
    names, y = encode_labels(labels, ProbeInputError)
    group_arr = np.array(groups)
    fold_keys = sorted(set(groups))
    if len(fold_keys) < 2:
        raise ProbeInputError(f"every utterance is in group {fold_keys[0]!r}: leave-one-group-out needs >= 2 groups "
                              f"(sessions or speakers); give the groups file one fold key per utterance")
    folds = []
    for k, g in enumerate(tqdm(fold_keys, desc="probe folds", unit="fold", disable=not progress)):
        seed = fold_seed(cfg.seed, k)
        test = np.flatnonzero(group_arr == g)
        train, valid = split_validation(np.flatnonzero(group_arr != g), y, cfg.valid_fraction,
                                        np.random.default_rng(seed))
        folds.append(probe_fold(feats, y, names, g, train, valid, test, cfg, seed))
    return assemble_result(feats, y, names, folds, cfg)


def probe_fold(feats: FeatureSet, y: np.ndarray, names: Sequence[str], fold_name: str, train: np.ndarray,
               valid: np.ndarray, test: np.ndarray, cfg: ProbeConfig, seed: int) -> dict:
    """Train on utterances ``train`` (early stopping on ``valid``, see :func:`train_probe`) and score
    ``test``: one fold's JSON record (``group`` = ``fold_name``, sizes, best epoch, the
    :data:`~.metrics.METRICS` and the confusion matrix). ``y`` [N]: class index per utterance of
    ``feats``; ``names``: the class names."""
    unseen = sorted(set(names) - {names[c] for c in y[train]})
    if unseen:
        logger.warning("fold %r: classes %s have no training utterance; the probe cannot predict them",
                       fold_name, unseen)
    model, info, frames = train_probe(feats, y, train, valid, len(names), cfg, seed)
    pred = predict_logits(model, frames, test, cfg.batch_size, torch.device(cfg.device)).argmax(dim=-1).numpy()
    fold = {"group": fold_name, "n_train": len(train), "n_valid": len(valid), "n_test": len(test), **info,
            **compute_metrics(y[test], pred, names)}
    logger.info("fold %s: %d test utterances, WA %.4f UA %.4f macro_f1 %.4f weighted_f1 %.4f (best epoch %d "
                "of %d)", fold_name, len(test), fold[WA], fold[UA], fold[MACRO_F1], fold[WEIGHTED_F1],
                info["best_epoch"], info["epochs_run"])
    return fold


def assemble_result(feats: FeatureSet, y: np.ndarray, names: Sequence[str], folds: List[dict],
                    cfg: ProbeConfig) -> dict:
    """The JSON-ready result of a cross-validation from its folds (see :func:`cross_validate`)."""
    summary = fold_summary(folds, METRICS)
    total = np.sum([f["confusion"]["matrix"] for f in folds], axis=0).tolist()
    return {
        "config": asdict(cfg),
        "labels": list(names),
        "label_counts": {n: int((y == c).sum()) for c, n in enumerate(names)},
        "num_utterances": len(feats),
        "feature_dim": feats.dim,
        "folds": folds,
        "summary": summary,
        "confusion_total": {"labels": list(names), "rows": "true", "cols": "predicted", "matrix": total},
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
    summary = fold_summary(folds, METRICS)
    total = np.sum([r["confusion_total"]["matrix"] for r in runs], axis=0).tolist()
    return {**first, "folds": folds, "summary": summary, "confusion_total": {**first["confusion_total"],
                                                                               "matrix": total},
            "seeds": [r["config"]["seed"] for r in runs],
            "seed_runs": [{"seed": r["config"]["seed"], "folds": [{k: f[k] for k in ("group", *METRICS)}
                                                                  for f in r["folds"]],
                           "summary": r["summary"]} for r in runs]}

