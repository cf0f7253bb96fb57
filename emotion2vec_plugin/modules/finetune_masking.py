"""SpecAugment-style masks for fine-tuning (wav2vec 2.0 / data2vec 2.0 fine-tuning convention).

During fine-tuning, spans of frames (time masks) and spans of feature channels (channel masks)
are zeroed before the positional convolution; unlike pretraining nothing is removed, so the
sequence keeps its length and the pooled output still covers every valid frame. data2vec 2.0
fine-tuning zeroes masked frames the same way (``encoder_zero_mask``). Spans come from
:func:`~emotion2vec_plugin.modules.masking.compute_span_mask`, per utterance over its own
valid frames only, from an explicit generator so that masks are reproducible under resume.
"""

from typing import Optional, Sequence

import torch

from .masking import compute_span_mask


def time_masks(lengths: Sequence[int], num_frames: int, mask_prob: float, mask_length: int,
               generator: Optional[torch.Generator] = None) -> Optional[torch.Tensor]:
    """[B, T] bool (True = masked): ``int(T_b * mask_prob)`` frames in spans of ``mask_length``
    inside the first T_b (valid) frames of row b; rows too short for one span stay unmasked.
    None if ``mask_prob`` is 0."""
    if mask_prob <= 0:
        return None
    mask = torch.zeros(len(lengths), num_frames, dtype=torch.bool)
    for b, n in enumerate(int(v) for v in lengths):
        if n >= 2 * mask_length and int(n * mask_prob) > 0:
            mask[b, :n] = compute_span_mask(1, n, mask_prob, mask_length, generator=generator)[0]
    return mask


def channel_masks(batch_size: int, dim: int, mask_prob: float, mask_length: int,
                  generator: Optional[torch.Generator] = None) -> Optional[torch.Tensor]:
    """[B, D] bool (True = channel zeroed for the whole utterance), ``int(D * mask_prob)`` channels
    in spans of ``mask_length`` per row. None if ``mask_prob`` is 0."""
    if mask_prob <= 0:
        return None
    return compute_span_mask(batch_size, dim, mask_prob, min(mask_length, dim), generator=generator)


def apply_masks(x: torch.Tensor, time_mask: Optional[torch.Tensor] = None,
                channel_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Zero masked frames (time_mask [B, T]) and channels (channel_mask [B, D]) of x [B, T, D]."""
    if time_mask is not None:
        x = x * (~time_mask.to(x.device)).unsqueeze(-1).to(x.dtype)
    if channel_mask is not None:
        x = x * (~channel_mask.to(x.device)).unsqueeze(1).to(x.dtype)
    return x
