"""The emotion2vec network (student; the teacher is the same class without CNN and decoder).

Parameter names follow the released emotion2vec / data2vec 2.0 layout (docs/design.md §5)::

    modality_encoders.AUDIO.{local_encoder, project_features, relative_positional_encoder,
                             context_encoder, extra_tokens, alibi_scale, decoder}
    blocks.{0..depth-1}

Forward pieces (docs/design.md §2), each a method so the model's training forward stays short:

* :meth:`local_features`  waveform [B, S] -> CNN + projection [B, T, D] (shared with the teacher)
* :meth:`contextualize`   zero masked frames, positional conv, keep unmasked frames, prepend
  utterance tokens, prenet + main blocks with ALiBi -> [B, N_u + T_keep, D]
* :meth:`decode`          noise tokens back at masked frames, conv decoder -> [B, T, D]
* :meth:`extract_features` inference: no mask, padding-correct, optional per-layer outputs.
"""

from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import DecoderConfig, EncoderConfig, parse_conv_layers, validate_encoder_config
from .dropout import dropout
from .feature_extractor import ConvFeatureExtractor
from .layers import apply_conv_norm_gelu, conv_norm_gelu
from .masking import MaskInfo
from .transformer import PostLNBlock, PrenetEncoder, alibi_bias, alibi_slopes, attention_mask, layer_is_dropped


CONV_NORM_EPS = 1e-5  # data2vec 2.0 builds these LayerNorms with torch's default eps


class PositionalConvEncoder(nn.Sequential):
    """``depth`` x [Conv1d(D, D, k, groups) -> LayerNorm(no affine) -> GELU] on [B, T, D].

    Keys ``{1..depth}.0.{weight,bias}`` (indices 0 and depth+1 are the parameter-free transposes
    of the released layout). With a padding mask the padded frames are zeroed before every conv,
    so a padded utterance sees exactly the zero padding it would see alone.
    """

    def __init__(self, dim: int, width: int, groups: int, depth: int, eps: float):
        kernel = max(3, width // depth)
        super().__init__(
            nn.Identity(),
            *[conv_norm_gelu(dim, dim, kernel, groups, eps) for _ in range(depth)],
            nn.Identity(),
        )

    def forward(self, x: torch.Tensor, padding_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        keep = None if padding_mask is None else (~padding_mask).unsqueeze(-1).to(x.dtype)  # [B, T, 1]
        for layer in list(self)[1:-1]:
            if keep is not None:
                x = x * keep
            x = apply_conv_norm_gelu(layer, x)  # [B, T, D], channels-last conv (layers.py)
        return x


class ConvDecoder(nn.Module):
    """data2vec 2.0 ``Decoder1d``: conv blocks (residual where widths match) -> Linear back to D.

    Keys ``blocks.{i}.0.{weight,bias}`` and ``proj.{weight,bias}``. [B, T, D] -> [B, T, D].
    """

    def __init__(self, dim: int, decoder_dim: int, kernel: int, layers: int, groups: int, eps: float):
        super().__init__()
        self.blocks = nn.Sequential(
            *[conv_norm_gelu(dim if i == 0 else decoder_dim, decoder_dim, kernel, groups, eps) for i in range(layers)]
        )
        self.proj = nn.Linear(decoder_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            y = apply_conv_norm_gelu(block, x)  # [B, T, decoder_dim], channels-last conv (layers.py)
            x = y + x if y.shape == x.shape else y
        return self.proj(x)


class AudioFrontend(nn.Module):
    """``modality_encoders.AUDIO``: everything of the student except the 8 main blocks (the decoder
    only with ``with_decoder`` and a config that has its settings, a StudentConfig)."""

    def __init__(self, cfg: EncoderConfig, with_local_encoder: bool = True, with_decoder: bool = True):
        super().__init__()
        D, eps = cfg.embed_dim, cfg.norm_eps
        # norm_eps is data2vec 2.0's: the Transformer blocks and the prenet norm only; the CNN,
        # projection, positional-conv and decoder LayerNorms keep torch's 1e-5 there
        fixed = CONV_NORM_EPS
        layers = parse_conv_layers(cfg.conv_feature_layers)
        if with_local_encoder:
            self.local_encoder = ConvFeatureExtractor(layers, fixed)
            # index 0 is the released layout's TransposeLast (parameter-free)
            self.project_features = nn.Sequential(nn.Identity(), nn.LayerNorm(layers[-1][0], eps=fixed),
                                                  nn.Linear(layers[-1][0], D))
        else:
            self.local_encoder = None
            self.project_features = None
        self.relative_positional_encoder = PositionalConvEncoder(D, cfg.conv_pos_width, cfg.conv_pos_groups,
                                                                 cfg.conv_pos_depth, fixed)
        self.context_encoder = PrenetEncoder(
            [make_block(cfg) for _ in range(cfg.prenet_depth)], D, cfg.prenet_dropout, cfg.prenet_layerdrop, eps
        )
        if cfg.num_utterance_tokens > 0:
            # token 0 starts at zero, the others N(0, 1) (data2vec 2.0 init_extra_token_zero)
            tokens = torch.zeros(1, cfg.num_utterance_tokens, D)
            nn.init.normal_(tokens[:, 1:])
            self.extra_tokens = nn.Parameter(tokens)
        else:
            self.extra_tokens = None
        # one learned per-head ALiBi scale shared by all layers, clamped at 0 when used
        self.alibi_scale = nn.Parameter(torch.ones(1, 1, cfg.num_heads, 1, 1))
        self.register_buffer("alibi_slopes", torch.tensor(alibi_slopes(cfg.num_heads)), persistent=False)
        self.decoder = (
            ConvDecoder(D, cfg.decoder_dim, cfg.decoder_kernel, cfg.decoder_layers, cfg.decoder_groups, fixed)
            if with_decoder and isinstance(cfg, DecoderConfig) and cfg.decoder_layers > 0
            else None
        )


def make_block(cfg: EncoderConfig) -> PostLNBlock:
    return PostLNBlock(cfg.embed_dim, cfg.num_heads, cfg.mlp_ratio, cfg.encoder_dropout, cfg.attention_dropout,
                       cfg.activation_dropout, cfg.post_mlp_drop, cfg.norm_eps)


class Emotion2vecEncoder(nn.Module):
    """The student network in plain torch (also the fairseq model's base class). With an
    :class:`EncoderConfig` it has no decoder; a :class:`~.config.StudentConfig` adds it (pretraining,
    and the released layout of exports)."""

    def __init__(self, cfg: EncoderConfig, with_local_encoder: bool = True, with_decoder: bool = True):
        super().__init__()
        validate_encoder_config(cfg)
        self.encoder_cfg = cfg
        self.modality_encoders = nn.ModuleDict({"AUDIO": AudioFrontend(cfg, with_local_encoder, with_decoder)})
        self.blocks = nn.ModuleList([make_block(cfg) for _ in range(cfg.depth)])

    @property
    def audio(self) -> AudioFrontend:
        return self.modality_encoders["AUDIO"]

    @property
    def num_utterance_tokens(self) -> int:
        tokens = self.audio.extra_tokens
        return 0 if tokens is None else tokens.size(1)

    @property
    def num_layers(self) -> int:
        return len(self.audio.context_encoder.blocks) + len(self.blocks)

    def local_features(
        self, source: torch.Tensor, padding_mask: Optional[torch.Tensor] = None
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Waveform [B, S] (+ sample padding mask, True = padded) -> features [B, T, D] and the
        frame padding mask [B, T] (None when nothing is padded)."""
        audio = self.audio
        x = audio.local_encoder(source).transpose(1, 2)  # [B, C, T] -> [B, T, C]
        x = audio.project_features(x)  # [B, T, D]
        frame_mask = None
        if padding_mask is not None and padding_mask.any():
            lengths = audio.local_encoder.output_lengths((~padding_mask).sum(dim=1))
            frame_mask = torch.arange(x.size(1), device=x.device).unsqueeze(0) >= lengths.unsqueeze(1)
        return x, frame_mask

    def contextualize(
        self,
        x: torch.Tensor,
        padding_mask: Optional[torch.Tensor] = None,
        mask_info: Optional[MaskInfo] = None,
        layer_results: Optional[List[Tuple[torch.Tensor, torch.Tensor]]] = None,
    ) -> torch.Tensor:
        """Features [B, T, D] -> encoder output [B, N_u + T_keep, D] (utterance tokens first).

        Args:
            x: projected CNN features.
            padding_mask: [B, T] True = padded frame (inference only; training crops instead).
            mask_info: student masks; masked frames are zeroed before the positional conv and
                removed before the Transformer (T_keep = T - masked).
            layer_results: if a list is given, (block output, FFN output) of every block that
                ran is appended, prenet first.
        """
        audio = self.audio
        B, T, _ = x.shape
        if mask_info is not None:
            if padding_mask is not None:
                raise ValueError("masked (training) forward does not take padded batches; crop to equal length")
            x = x * (~mask_info.mask).unsqueeze(-1).to(x.dtype)
        x = x + audio.relative_positional_encoder(x, padding_mask)
        if mask_info is not None:
            x = mask_info.gather(x)
            positions = mask_info.keep_ids.to(x.device)  # [B, T_keep]
        else:
            positions = torch.arange(T, device=x.device).unsqueeze(0)  # [1, T]: same for every row
        n_tok = self.num_utterance_tokens
        bias = alibi_bias(positions, audio.alibi_slopes, audio.alibi_scale.clamp_min(0).view(-1), n_tok)
        if n_tok:
            x = torch.cat([audio.extra_tokens.to(x.dtype).expand(B, -1, -1), x], dim=1)
            if padding_mask is not None:
                padding_mask = F.pad(padding_mask, (n_tok, 0), value=False)
        attn_mask = attention_mask(bias, padding_mask, x.dtype)
        x = audio.context_encoder(x, attn_mask, layer_results)
        for blk in self.blocks:
            if layer_is_dropped(self.training, self.encoder_cfg.layerdrop):
                continue
            x, t = blk(x, attn_mask)
            if layer_results is not None:
                layer_results.append((x, t))
        return x

    def decoder_input(self, encoder_out: torch.Tensor) -> torch.Tensor:
        """The decoder's input dropout on the encoder output [B, N_u + T_keep, D] (data2vec 2.0
        ``decoder_input``, which applies it in place, so its utterance prediction reads the
        dropped-out tensor too)."""
        return dropout(encoder_out, self.encoder_cfg.decoder_input_dropout, training=self.training)

    def decode(self, x: torch.Tensor, mask_info: MaskInfo, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Decoder input (:meth:`decoder_input` of the encoder output) [B, N_u + T_keep, D] ->
        frame predictions [B, T, D] (all frames); the noise tokens at masked frames are drawn from
        ``generator`` (default: torch's RNG)."""
        cfg = self.encoder_cfg
        kept = x[:, self.num_utterance_tokens:]
        B, T = mask_info.mask.shape
        noise = kept.new_empty(B, T, kept.size(-1)).normal_(0, cfg.mask_noise_std, generator=generator)
        return self.audio.decoder(mask_info.restore(kept, noise))

    def extract_features(
        self,
        source: torch.Tensor,
        padding_mask: Optional[torch.Tensor] = None,
        remove_extra_tokens: bool = True,
    ) -> Dict[str, object]:
        """Inference forward (official ``extract_features`` signature).

        Args:
            source: [B, S] waveform, already normalised per utterance if the model was trained so.
            padding_mask: [B, S] True = padded sample.
            remove_extra_tokens: drop the utterance tokens from ``x`` and ``layer_results``.

        Returns:
            dict with ``x`` [B, T, D] (last block output), ``padding_mask`` [B, T] or None and
            ``layer_results``: the output [B, T, D] of every block (prenet first), so callers can
            average any layers. Outputs at valid frames do not depend on the padding.
        """
        x, frame_mask = self.local_features(source, padding_mask)
        results: List[Tuple[torch.Tensor, torch.Tensor]] = []
        x = self.contextualize(x, frame_mask, None, results)
        n = self.num_utterance_tokens if remove_extra_tokens else 0
        return {"x": x[:, n:], "padding_mask": frame_mask, "layer_results": [r[0][:, n:] for r in results]}


def normalize_waveform(source: torch.Tensor, padding_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per-utterance zero mean / unit variance over valid samples (``F.layer_norm(wav, wav.shape)``
    for one utterance; padded samples are excluded and set to 0). [B, S] -> [B, S]."""
    if padding_mask is None:
        return F.layer_norm(source, source.shape[-1:])
    valid = (~padding_mask).to(source.dtype)
    n = valid.sum(dim=1, keepdim=True).clamp_min(1)
    mean = (source * valid).sum(dim=1, keepdim=True) / n
    var = (((source - mean) * valid) ** 2).sum(dim=1, keepdim=True) / n
    return (source - mean) / torch.sqrt(var + 1e-5) * valid
