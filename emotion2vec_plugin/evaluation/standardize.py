"""Per-dimension standardisation of features: statistics over chosen utterances, and per-group
(per-speaker) z-scoring, the usual speaker normalisation of SER probes (label-free; it uses the
test speaker's own statistics).

Both probes use these, each with its own settings, kept so that their numbers stay as they were:

* the MLP probe (``e2v-probe``): frames, statistics in one streamed float64 pass
  (``E[x²] - mean²``, so memory-mapped features are never materialised whole), a dimension with
  std < 1e-6 counts as constant (the one-pass formula leaves ~1e-8 of rounding in a constant
  dimension);
* the linear probe: utterance vectors, numpy's two-pass ``mean`` / ``std`` of the stacked rows,
  constant below 1e-8.

A constant dimension (std below ``eps``) is only centred, never blown up.
"""

from typing import Sequence, Tuple

import numpy as np

from ..data.feature_store import FeatureSet


def input_stats(feats: FeatureSet, idx: Sequence[int], eps: float = 1e-6,
                in_memory: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and std [D] (float64) over all frames of utterances ``idx``.

    ``in_memory=False``: one streamed pass (sums of x and x²); ``True``: ``np.mean`` / ``np.std``
    of the stacked frames. A std below ``eps`` is set to 1.
    """
    if in_memory:
        stacked = np.concatenate([np.asarray(feats[i], dtype=np.float64) for i in idx])
        mean, std = stacked.mean(axis=0), stacked.std(axis=0)
    else:
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
    std[std < eps] = 1.0  # a constant dimension carries no information; do not blow it up
    return mean, std


def zscore_per_group(feats: FeatureSet, groups: Sequence[str], eps: float = 1e-6, in_memory: bool = False,
                     dtype: type = np.float32) -> FeatureSet:
    """Every utterance's frames z-scored per dimension with :func:`input_stats` (``eps``,
    ``in_memory``) of all frames of its group (``groups``: one key per utterance) -> a new
    in-memory :class:`FeatureSet` of ``dtype`` arrays (computed in float64)."""
    groups = np.asarray([str(g) for g in groups])
    out = [None] * len(feats)
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        mean, std = input_stats(feats, idx, eps, in_memory)
        for i in idx:
            out[i] = ((np.asarray(feats[i], dtype=np.float64) - mean) / std).astype(dtype)
    return FeatureSet.from_arrays(out, source=f"{feats.source} (per-group normalised)", names=feats.names)
