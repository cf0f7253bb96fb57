"""Span masks with an equal number of masked frames per row (data2vec 2.0, docs/design.md §2 step 4).

Every row masks exactly ``int(T * mask_prob)`` frames, so the unmasked frames of a batch gather
into a rectangle [B, T - int(T * mask_prob), D] that the student encodes without padding.
The same function runs in the model (model-side masks) and in the data loader workers
(dataset-side masks); both draw from an explicit ``torch.Generator`` so that a mask is a pure
function of its seed.
"""

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F


def compute_span_mask(
    batch_size: int,
    num_frames: int,
    mask_prob: float,
    mask_length: int,
    mask_prob_adjust: float = 0.0,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Random span mask [B, T] (True = masked) with exactly ``int(T * mask_prob)`` True per row.

    Span starts are drawn i.i.d. with probability ``mask_prob / mask_length * (1 + mask_prob_adjust)``
    (the adjustment compensates for overlapping spans); each start masks ``mask_length`` frames.
    Rows with too many masked frames are unmasked at random positions among the masked ones,
    rows with too few get random extra frames, as data2vec 2.0's ``require_same_masks``.
    """
    target = int(num_frames * mask_prob)
    start_p = mask_prob / mask_length * (1 + mask_prob_adjust)
    starts = torch.rand(batch_size, num_frames, generator=generator) < start_p
    # frame t is masked if a span started in [t - mask_length + 1, t]: a running max over starts
    padded = F.pad(starts.float().unsqueeze(1), (mask_length - 1, 0))  # [B, 1, T + L - 1]
    spans = F.max_pool1d(padded, mask_length, stride=1).squeeze(1)  # [B, T] in {0, 1}
    # pick the `target` highest scores: span frames score in [1, 2), others in [0, 1), so a row
    # keeps a random subset of its span frames (too many) or all of them plus random others
    scores = spans + torch.rand(batch_size, num_frames, generator=generator)
    chosen = scores.topk(target, dim=1).indices
    mask = torch.zeros(batch_size, num_frames, dtype=torch.bool)
    mask.scatter_(1, chosen, True)
    return mask


@dataclass
class MaskInfo:
    """A batch mask and the indices that gather/restore the unmasked frames.

    Attributes:
        mask: [B, T] bool, True = masked.
        keep_ids: [B, T_keep] frame indices of the unmasked frames, ascending.
        num_masked: masked frames in the whole batch (a Python int, so reading it never waits for a GPU).
    """

    mask: torch.Tensor
    keep_ids: torch.Tensor
    num_masked: int

    @classmethod
    def from_mask(cls, mask: torch.Tensor) -> "MaskInfo":
        counts = mask.sum(dim=1)
        if (counts != counts[0]).any():
            raise ValueError(
                f"every row must mask the same number of frames, got {counts.tolist()}; "
                f"use compute_span_mask (require-same-masks) to build masks"
            )
        num_keep = mask.size(1) - int(counts[0])
        # stable sort puts unmasked (0) frames first, in time order
        keep_ids = torch.argsort(mask.to(torch.int8), dim=1, stable=True)[:, :num_keep]
        return cls(mask=mask, keep_ids=keep_ids, num_masked=int(counts[0]) * mask.size(0))

    def to(self, device: torch.device) -> "MaskInfo":
        return MaskInfo(self.mask.to(device), self.keep_ids.to(device), self.num_masked)

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, D] -> [B, T_keep, D], the unmasked frames."""
        return torch.gather(x, 1, self.keep_ids.unsqueeze(-1).expand(-1, -1, x.size(-1)))

    def restore(self, kept: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
        """Put ``kept`` [B, T_keep, D] back in time order into ``fill`` [B, T, D] (masked rows stay ``fill``)."""
        index = self.keep_ids.unsqueeze(-1).expand(-1, -1, kept.size(-1))
        return fill.scatter(1, index, kept)
