"""Post-LN Transformer blocks with ALiBi attention (data2vec 2.0's AltBlock, post-LN variant).

Attention runs through ``torch.nn.functional.scaled_dot_product_attention`` with the ALiBi
bias and the key padding mask folded into one additive float mask, so PyTorch can pick its
memory-efficient kernel on GPU (flash attention does not take an additive bias). In CPU training
with attention dropout the written-out path runs instead, with :func:`.dropout.dropout` (torch's
draws, made faster): SDPA's CPU math kernel would draw its dropout mask element by element.
"""

import math
from typing import List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..kernels.cpu_dropout import fast_path
from .dropout import Dropout, dropout


def alibi_slopes(num_heads: int) -> List[float]:
    """Press et al.'s geometric ALiBi slopes.

    For a power of two n the slopes are start**(i+1) with start = 2**(-8/n); otherwise the first
    2**floor(log2 n) slopes use that formula and the rest are every other slope of the 2x set
    (for 12 heads: the 8-head slopes, then slopes 0, 2, 4, 6 of the 16-head set).
    """

    def power_of_two(n: int) -> List[float]:
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]

    if math.log2(num_heads).is_integer():
        return power_of_two(num_heads)
    closest = 2 ** math.floor(math.log2(num_heads))
    return power_of_two(closest) + alibi_slopes(2 * closest)[0::2][: num_heads - closest]


def alibi_bias(
    positions: torch.Tensor, slopes: torch.Tensor, scale: torch.Tensor, num_prefix: int
) -> torch.Tensor:
    """ALiBi bias for the frames at ``positions``, zero-padded for ``num_prefix`` utterance tokens.

    Args:
        positions: [B, N] frame index (in the unmasked sequence) of each kept frame.
        slopes: [H] per-head slopes.
        scale: [H] learned per-head scale (already clamped at 0).
        num_prefix: utterance tokens prepended to the sequence; they get zero bias.

    Returns:
        [B, H, num_prefix + N, num_prefix + N] float32 with bias = -|p_i - p_j| * slope_h * scale_h.
    """
    pos = positions.float()
    dist = (pos.unsqueeze(2) - pos.unsqueeze(1)).abs()  # [B, N, N]
    per_head = (slopes.float() * scale.float()).view(1, -1, 1, 1)  # [1, H, 1, 1]
    bias = -dist.unsqueeze(1) * per_head  # [B, H, N, N]
    if num_prefix > 0:
        bias = F.pad(bias, (num_prefix, 0, num_prefix, 0))
    return bias


def attention_mask(
    bias: Optional[torch.Tensor], padding_mask: Optional[torch.Tensor], dtype: torch.dtype
) -> Optional[torch.Tensor]:
    """Fold the ALiBi bias [B, H, N, N] and key padding [B, N] (True = padded) into one additive mask."""
    if padding_mask is None or not padding_mask.any():
        return None if bias is None else bias.to(dtype)
    pad = torch.zeros(padding_mask.shape, dtype=torch.float32, device=padding_mask.device)
    pad = pad.masked_fill(padding_mask, float("-inf"))[:, None, None, :]  # [B, 1, 1, N]
    mask = pad if bias is None else bias + pad
    return mask.to(dtype)


class AltAttention(nn.Module):
    """Multi-head self-attention; keys ``qkv`` (fused, with bias) and ``proj``.

    ``impl`` picks the kernel: ``sdpa`` (``F.scaled_dot_product_attention``, default: on GPU its
    memory-efficient kernel takes the additive bias and never stores the [B, H, N, N] attention
    probabilities) or ``eager`` (``softmax(q k^T / sqrt(d) + mask) v`` written out, softmax in fp32,
    as data2vec 2.0), the reference the benchmark and tests compare against. Same math either way.
    CPU training with attention dropout takes the written-out path whatever ``impl`` says, when
    ``kernels/cpu_dropout.py``'s :func:`fast_path` holds: the same draws as SDPA's dropout, 9x faster
    to make.
    """

    impl = "sdpa"

    def __init__(self, dim: int, num_heads: int, attn_drop: float, proj_drop: float):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = Dropout(proj_drop)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        B, N, C = x.shape
        # [B, N, 3C] -> [3, B, H, N, C/H]
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        if mask is not None and mask.dtype != q.dtype:
            mask = mask.to(q.dtype)
        drop = self.attn_drop if self.training else 0.0
        if self.impl == "sdpa" and not (drop > 0 and fast_path(x)):
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop)  # [B, H, N, C/H]
        else:
            attn = (q * q.size(-1) ** -0.5) @ k.transpose(-2, -1)  # [B, H, N, N]
            if mask is not None:
                attn = attn + mask
            attn = dropout(attn.softmax(dim=-1, dtype=torch.float32).to(q.dtype), drop, training=self.training)
            out = attn @ v
        out = out.transpose(1, 2).reshape(B, N, C)
        return self.proj_drop(self.proj(out))


class Mlp(nn.Module):
    """fc1 -> GELU -> dropout -> fc2 (keys ``fc1``, ``fc2``)."""

    def __init__(self, dim: int, hidden: int, drop: float):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.drop = Dropout(drop)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(self.act(self.fc1(x))))


class PostLNBlock(nn.Module):
    """``x = norm1(x + attn(x)); t = mlp(x); x = norm2(x + dropout(t))``.

    Returns the block output and ``t``, the FFN output before the residual, which the teacher
    exposes as a layer target (data2vec 2.0 ``ffn_targets``).
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, encoder_dropout: float,
                 attention_dropout: float, activation_dropout: float, post_mlp_drop: float,
                 eps: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = AltAttention(dim, num_heads, attention_dropout, encoder_dropout)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), activation_dropout)
        self.post_mlp_dropout = Dropout(post_mlp_drop)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        x = self.norm1(x + self.attn(x, mask))
        t = self.mlp(x)
        x = self.norm2(x + self.post_mlp_dropout(t))
        return x, t


def layer_is_dropped(training: bool, layerdrop: float) -> bool:
    """LayerDrop decision drawn from torch's RNG (fairseq reseeds it every update, so resumed
    runs drop the same layers as uninterrupted ones; numpy's global RNG is not reseeded)."""
    return training and layerdrop > 0 and float(torch.rand(())) < layerdrop


class PrenetEncoder(nn.Module):
    """The 'prenet' (``modality_encoders.AUDIO.context_encoder``): LayerNorm -> dropout -> blocks."""

    def __init__(self, blocks: List[PostLNBlock], dim: int, dropout: float, layerdrop: float, eps: float):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.dropout = Dropout(dropout)
        self.layerdrop = layerdrop

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor],
                layer_results: Optional[list] = None) -> torch.Tensor:
        x = self.dropout(self.norm(x))
        for blk in self.blocks:
            if layer_is_dropped(self.training, self.layerdrop):
                continue
            x, t = blk(x, mask)
            if layer_results is not None:
                layer_results.append((x, t))
        return x
