"""Our training step as it was before the speed work (commit 139be9c^), frozen as the reference.

The CNN as channels-last ``conv2d`` layers, the positional convs and the decoder as their
``conv_norm_gelu`` Sequentials on transposed [B, D, T] tensors, the frame targets as
``y.repeat_interleave(clone_batch)[mask]``, every dropout through ``F.dropout`` and the attention
dropout inside SDPA (``kernels.cpu_dropout.torch_dropout``). :func:`reference_path` swaps these in
for the duration of a block. Used by ``tests/test_speed_equivalence.py`` (the fast path equals
this up to fp32 rounding) and ``recipes/benchmark/train_step_vs_data2vec.py --baseline`` (times it).
"""

from contextlib import contextmanager

import torch

from emotion2vec_plugin.kernels.cpu_dropout import torch_dropout
from emotion2vec_plugin.models.emotion2vec_model import Emotion2vecModel
from emotion2vec_plugin.modules.encoder import ConvDecoder, PositionalConvEncoder
from emotion2vec_plugin.modules.feature_extractor import ConvFeatureExtractor


def reference_cnn(self: ConvFeatureExtractor, source: torch.Tensor) -> torch.Tensor:
    """The CNN before the speed work: oneDNN convolutions in channels-last memory."""
    x = source[:, None, None, :].contiguous(memory_format=torch.channels_last)  # [B, 1, 1, S]
    for layer in self.conv_layers:
        conv, dropout, norm, act = layer[0], layer[1], layer[2][1], layer[3]
        x = torch.nn.functional.conv2d(x, conv.weight.unsqueeze(2), stride=(1, conv.stride[0]))  # [B, C, 1, T]
        x = act(norm(dropout(x).permute(0, 2, 3, 1))).permute(0, 3, 1, 2)
    return x.squeeze(2)  # [B, C, T]


def layout_cnn(self: ConvFeatureExtractor, source: torch.Tensor) -> torch.Tensor:
    """The CNN as its state-dict layout modules: Conv1d -> Dropout -> LayerNorm (transposed) -> GELU."""
    x = source.unsqueeze(1)  # [B, 1, S]
    for layer in self.conv_layers:
        x = layer(x)
    return x  # [B, C, T]


def reference_positional(self: PositionalConvEncoder, x: torch.Tensor, padding_mask=None) -> torch.Tensor:
    x = x.transpose(1, 2)
    keep = None if padding_mask is None else (~padding_mask).unsqueeze(1).to(x.dtype)
    for layer in list(self)[1:-1]:
        if keep is not None:
            x = x * keep
        x = layer(x)  # Conv1d -> ChannelLayerNorm (transposes) -> GELU
    return x.transpose(1, 2)


def reference_decoder(self: ConvDecoder, x: torch.Tensor, flip: bool = False) -> torch.Tensor:
    x = x.transpose(1, 2)
    for block in self.blocks:
        if flip:  # negative control: the first conv's kernel reversed in time
            conv = block[0]
            y = torch.nn.functional.conv1d(x, conv.weight.flip(-1), conv.bias, padding=conv.padding, groups=conv.groups)
            y = block[2](block[1](y))
            flip = False
        else:
            y = block(x)
        x = y + x if y.shape == x.shape else y
    return self.proj(x.transpose(1, 2))


@contextmanager
def reference_path(flip_decoder: bool = False):
    """Swap in the reference computation for the duration (class-level, restored afterwards)."""
    saved = (ConvFeatureExtractor.forward, PositionalConvEncoder.forward, ConvDecoder.forward,
             Emotion2vecModel.pair_outputs)
    original_pair = Emotion2vecModel.pair_outputs

    def pair_outputs(self, encoder_out, frame_pred, y, mask_info, utt_y=None):
        out = original_pair(self, encoder_out, frame_pred, y, mask_info, utt_y)
        out["frame_target"] = y.repeat_interleave(self.cfg.clone_batch, dim=0)[mask_info.mask]
        return out

    ConvFeatureExtractor.forward = reference_cnn
    PositionalConvEncoder.forward = reference_positional
    ConvDecoder.forward = lambda self, x: reference_decoder(self, x, flip_decoder)
    Emotion2vecModel.pair_outputs = pair_outputs
    try:
        with torch_dropout():  # F.dropout, and SDPA's own attention dropout
            yield
    finally:
        (ConvFeatureExtractor.forward, PositionalConvEncoder.forward, ConvDecoder.forward,
         Emotion2vecModel.pair_outputs) = saved
