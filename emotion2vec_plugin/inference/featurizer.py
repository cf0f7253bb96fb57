"""Waveforms to features: the one path of ``e2v-extract``, ``e2v-predict`` and the training probe.

    wavs [S_i] --plan_batches--> length-sorted batches
          --prepare_batch--> zero-padded source [B, S] + exact padding mask, each waveform
                             normalised over its own valid samples (as one by one)
          --block_outputs--> every block's output [B, T, D] (utterance tokens removed) and the
                             frame padding mask [B, T] (None when nothing is padded)
          --average_blocks / pooled_blocks / masked_mean--> chosen blocks averaged, and/or the
                             time mean over each utterance's valid frames

Padding is exact end to end, so a batched utterance gets its one-by-one features up to fp32
rounding of differently shaped matrix products (tested). Which clips are usable at all is
:func:`~emotion2vec_plugin.modules.clip_rules.clip_problem` (at least one CNN frame, no NaN).
"""

from typing import List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch

from ..data.padding import crop_and_pad
from ..modules.classifier import Emotion2vecClassifierNet
from ..modules.encoder import Emotion2vecEncoder, normalize_waveform
from ..modules.pooling import masked_mean

# Kaldi log-mel framing (25 ms windows every 10 ms at 16 kHz) written as a CNN spec, so that
# clip_problem and frames_for_samples count filterbank frames too: 1 + (S - 400) // 160
FBANK_FRAMING = [(80, 400, 160)]


class Batch(NamedTuple):
    """A padded batch: ``source`` [B, S] (on the model's device and dtype), ``padding_mask`` [B, S]
    (True = padded; None when no waveform is padded) and ``lengths`` [B] (samples, CPU)."""

    source: torch.Tensor
    padding_mask: Optional[torch.Tensor]
    lengths: torch.Tensor


def prepare_batch(model: torch.nn.Module, wavs: Sequence[np.ndarray], normalize: bool) -> Batch:
    """Zero-pad 1-D waveforms into a batch for ``model``; ``normalize``: zero mean / unit variance
    of each waveform over its valid samples (``F.layer_norm(wav, wav.shape)`` one by one)."""
    param = next(model.parameters())
    source, pad = crop_and_pad([torch.from_numpy(np.asarray(w, dtype=np.float32)) for w in wavs], None, None)
    lengths = torch.tensor([len(w) for w in wavs])
    if normalize:
        source = normalize_waveform(source, pad)
    source, pad = source.to(device=param.device, dtype=param.dtype), pad.to(param.device)
    return Batch(source, pad if bool(pad.any()) else None, lengths)


def autocast(model: torch.nn.Module, dtype: torch.dtype):
    """Mixed precision for ``dtype`` (bf16 / fp16) on the model's device; fp32: off."""
    return torch.autocast(next(model.parameters()).device.type, dtype=dtype, enabled=dtype != torch.float32)


def block_outputs(model: Emotion2vecEncoder, batch: Batch, context: Optional[Emotion2vecEncoder] = None,
                  dtype: torch.dtype = torch.float32) -> Tuple[List[torch.Tensor], Optional[torch.Tensor]]:
    """Every block's output [B, T, D] (prenet first, utterance tokens removed) and the frame
    padding mask [B, T] (None when nothing is padded).

    ``context``: another encoder whose blocks run on ``model``'s CNN features in fp32 (the
    pretraining model's EMA teacher, as when it makes targets); default: ``model``'s own.
    """
    with autocast(model, dtype):
        if context is None:
            out = model.extract_features(batch.source, batch.padding_mask)
            return out["layer_results"], out["padding_mask"]
        x, frame_mask = model.local_features(batch.source, batch.padding_mask)
        results: List = []
        context.contextualize(x.float(), frame_mask, None, results)
        n = context.num_utterance_tokens
        return [r[0][:, n:] for r in results], frame_mask


def average_blocks(layers: Sequence[torch.Tensor], indices: Sequence[int]) -> torch.Tensor:
    """The mean of blocks ``indices`` (0-based) of :func:`block_outputs`: [B, T, D] fp32."""
    return torch.stack([layers[i] for i in indices]).float().mean(dim=0)


def pooled_blocks(layers: Sequence[torch.Tensor], frame_mask: Optional[torch.Tensor]) -> torch.Tensor:
    """Every block's time mean over the valid frames: [B, L, D] fp32 (the time mean and a block
    average commute, so averages of these equal pooled block averages)."""
    return torch.stack([masked_mean(h.float(), frame_mask) for h in layers], dim=1)


@torch.inference_mode()
def extract_batch(model: Emotion2vecEncoder, wavs: Sequence[np.ndarray], layers: Sequence[int],
                  normalize: bool, granularity: str = "frame", dtype: torch.dtype = torch.float32) -> List[np.ndarray]:
    """Features of a list of 1-D waveforms: [T_i, D] (frame) or [D] (utterance) each, fp32 numpy.

    ``layers`` are 0-based block indices whose outputs are averaged.
    """
    batch = prepare_batch(model, wavs, normalize)
    outputs, frame_mask = block_outputs(model, batch, dtype=dtype)
    feats = average_blocks(outputs, layers)  # [B, T, D]
    if granularity == "utterance":
        return list(masked_mean(feats, frame_mask).cpu().numpy())
    frames = model.audio.local_encoder.output_lengths(batch.lengths).tolist()
    return [feats[i, :T].cpu().numpy() for i, T in enumerate(frames)]


@torch.inference_mode()
def predict_batch(model: torch.nn.Module, wavs: Sequence[np.ndarray], normalize: bool,
                  dtype: torch.dtype = torch.float32) -> np.ndarray:
    """Class probabilities [B, C] (classifier) or mean-pooled last-block embeddings [B, D] (encoder)
    of 1-D waveforms, padded with exact masks."""
    batch = prepare_batch(model, wavs, normalize)
    if isinstance(model, Emotion2vecClassifierNet):
        with autocast(model, dtype):
            return torch.softmax(model(batch.source, batch.padding_mask).float(), dim=-1).cpu().numpy()
    outputs, frame_mask = block_outputs(model, batch, dtype=dtype)
    return masked_mean(outputs[-1].float(), frame_mask).cpu().numpy()


def fbank_features(wavs: Sequence[np.ndarray], granularity: str = "frame", num_mel_bins: int = 80) -> List[np.ndarray]:
    """Log-mel filterbanks [T, num_mel_bins] (100 frames/s) of 16 kHz waveforms (or their time mean);
    T = frames_for_samples(FBANK_FRAMING, S)."""
    import torchaudio.compliance.kaldi as kaldi

    out = []
    for w in wavs:
        feats = kaldi.fbank(torch.from_numpy(np.asarray(w, dtype=np.float32)).unsqueeze(0) * 32768,
                            num_mel_bins=num_mel_bins, sample_frequency=16000, dither=0.0)
        out.append((feats.mean(dim=0) if granularity == "utterance" else feats).numpy())
    return out
