"""emotion2vec losses (paper eqs. 3-11, docs/design.md §3) on plain tensors.

Both terms are a squared error summed over the D feature dimensions and multiplied by a
per-element scale; what differs between the two reductions is the scale and how rows add up:

* ``data2vec`` (reproduces fairseq data2vec 2.0 / the released training): scale 1/sqrt(D);
  the frame term is the mean over masked frames of the per-frame sum, the utterance term the
  **sum** over utterances x clones of the per-utterance sum. At initialisation the utterance term
  is then ~35x the frame term for the base batch (docs/design.md §3), which is what "alpha = 1" meant there.
* ``mean`` (the paper's plain mean squared errors): scale 1/D and the utterance term is a mean
  over utterances; both terms are then ordinary MSEs.

fairseq divides the summed loss by ``sample_size`` (= masked frames), so the criterion returns
``frame_sum + alpha * utterance_term * sample_size``.
"""

import math
from typing import Optional

import torch

REDUCTIONS = ("data2vec", "mean")
UTTERANCE_MODES = ("token", "chunk", "global")


def element_scale(dim: int, reduction: str) -> float:
    if reduction == "data2vec":
        return 1.0 / math.sqrt(dim)
    if reduction == "mean":
        return 1.0 / dim
    raise ValueError(f"loss_reduction={reduction!r}; expected one of {REDUCTIONS}")


def row_squared_error(pred: torch.Tensor, target: torch.Tensor, reduction: str) -> torch.Tensor:
    """[N, D] x [N, D] -> [N]: scale * sum_d (pred - target)^2, in fp32."""
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    err = (pred.float() - target.float()).pow(2).sum(dim=-1)
    return err * element_scale(pred.size(-1), reduction)


def frame_loss_sum(pred: torch.Tensor, target: torch.Tensor, reduction: str) -> torch.Tensor:
    """Sum over masked frames [N_masked, D] of the per-frame error (divide by N_masked for the mean)."""
    return row_squared_error(pred, target, reduction).sum()


def utterance_loss(pred: torch.Tensor, target: torch.Tensor, reduction: str) -> torch.Tensor:
    """Utterance term over [B', D] rows: summed (``data2vec``) or averaged (``mean``) over rows."""
    per_row = row_squared_error(pred, target, reduction)
    return per_row.sum() if reduction == "data2vec" else per_row.mean()


def utterance_prediction(mode: str, encoder_out: torch.Tensor, num_tokens: int,
                         frame_pred: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Ū_S, the student's utterance vector [B', D].

    Args:
        mode: ``token``: the encoder output of the last utterance token (with one token this is
            the paper's token embedding; with several it is data2vec 2.0's ``cls_loss``, the other
            tokens acting as extra registers); ``chunk``: the mean of all utterance-token outputs;
            ``global``: the time mean of the student's frame predictions ``frame_pred``.
        encoder_out: [B', N_u + T_keep, D] student encoder output.
        num_tokens: N_u.
        frame_pred: [B', T, D] decoder output (for ``global``).
    """
    if mode == "token":
        return encoder_out[:, num_tokens - 1]
    if mode == "chunk":
        return encoder_out[:, :num_tokens].mean(dim=1)
    if mode == "global":
        return frame_pred.mean(dim=1)
    raise ValueError(f"utterance_mode={mode!r}; expected one of {UTTERANCE_MODES}")


def feature_std(x: torch.Tensor) -> torch.Tensor:
    """Mean over dimensions of the per-dimension std over rows ([N, D] -> scalar); the collapse
    statistic data2vec 2.0 logs as target_var / pred_var."""
    x = x.reshape(-1, x.size(-1)).float()
    if x.size(0) < 2:
        return x.new_zeros(())
    return torch.sqrt(x.var(dim=0) + 1e-6).mean()
