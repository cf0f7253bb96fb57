"""Which clips a CNN accepts, in numpy only (no torch): importable by the torch-free ONNX path of e2v-predict.

The CNN length arithmetic here is the Python-int twin of
:meth:`~emotion2vec_plugin.modules.feature_extractor.ConvFeatureExtractor.output_lengths`.
"""

from typing import List, Optional, Tuple

import numpy as np


def frames_for_samples(layers: List[Tuple[int, int, int]], num_samples: int) -> int:
    """Frames from ``num_samples`` samples, as ``ConvFeatureExtractor.output_lengths`` (for data loaders)."""
    n = num_samples
    for _, kernel, stride in layers:
        n = (n - kernel) // stride + 1
    return max(n, 0)


def clip_problem(wav: np.ndarray, layers: Optional[List[Tuple[int, int, int]]], min_frames: int = 1) -> Optional[str]:
    """Why a decoded clip [S] cannot go through a CNN with ``layers``, or None: it gives fewer than
    ``min_frames`` frames (not checked when ``layers`` is None), or it holds NaN/inf samples. The one
    usable-clip rule of training, e2v-predict and the training probe.

    Inference needs one frame. Training asks for 2 (``data/audio_dataset.py``): a batch is cropped
    to its shortest clip, and the teacher targets are instance-normalised over time, which
    ``F.instance_norm`` refuses for a single frame.
    """
    if layers is not None and frames_for_samples(layers, len(wav)) < min_frames:
        need = "the CNN's receptive field" if min_frames == 1 else f"the CNN needs for {min_frames} frames"
        return f"{len(wav)} samples is shorter than {need}"
    if not np.isfinite(wav).all():
        return f"{int((~np.isfinite(wav)).sum())} NaN/inf samples"
    return None
