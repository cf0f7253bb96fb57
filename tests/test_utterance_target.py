"""The utterance target (docs/design.md §8) and two alignments with data2vec 2.0: where the utterance
prediction reads the decoder's input dropout, and which LayerNorms ``norm_eps`` changes."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from emotion2vec_plugin.models.emotion2vec_model import Emotion2vecModel
from emotion2vec_plugin.modules.layers import ChannelLayerNorm
from emotion2vec_plugin.modules.targets import average_top_k, utterance_target
from tests.helpers import tiny_model_cfg


def ffn_outputs(B=3, T=40, D=16, layers=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    # each utterance and layer has its own offset: what the frames share is the utterance information
    return [torch.randn(B, T, D, generator=g) + 3 * torch.randn(B, 1, D, generator=g) for _ in range(layers)]


def test_released_utterance_target_is_zero_and_the_informative_ones_are_not():
    ffn = ffn_outputs()
    y = average_top_k(ffn, 2)
    released = utterance_target("instance_norm", ffn, 2, y)
    # instance norm over time removes every channel's time mean: the released target is 0 up to rounding
    assert released.shape == (3, 16) and float(released.abs().max()) < 1e-5
    ln = utterance_target("layer_norm", ffn, 2, y)
    by_hand = sum(((t - t.mean(-1, keepdim=True)) / torch.sqrt(t.var(-1, unbiased=False, keepdim=True) + 1e-5)).mean(1)
                  for t in ffn[-2:]) / 2
    torch.testing.assert_close(ln, by_hand, rtol=0, atol=1e-5)
    assert float(ln.norm(dim=-1).min()) > 1.0 and float(ln.norm(dim=-1).max()) <= 16 ** 0.5 + 1e-4  # <= sqrt(D)
    raw = utterance_target("raw", ffn, 2, y)
    torch.testing.assert_close(raw, (ffn[-1].mean(1) + ffn[-2].mean(1)) / 2)
    # utterances differ in what they share, so their targets differ
    assert float((ln[0] - ln[1]).norm()) > 1.0
    with pytest.raises(ValueError, match="utterance_target='spectral'"):
        utterance_target("spectral", ffn, 2, y)


@pytest.mark.parametrize("kind", ["instance_norm", "layer_norm", "raw"])
def test_model_builds_each_utterance_target_from_its_own_teacher_layers(kind):
    model = Emotion2vecModel(tiny_model_cfg(utterance_target=kind, clone_batch=2)).eval()
    src = torch.randn(2, 12000, generator=torch.Generator().manual_seed(1))
    out = model(src, id=torch.tensor([0, 1]))
    with torch.no_grad():
        feats, _ = model.local_features(src)
        results = []
        model.teacher.module.contextualize(feats, None, None, results)
        n, k = model.num_utterance_tokens, model.cfg.average_top_k_layers
        top = [t[:, n:] for _, t in results][-k:]
    if kind == "instance_norm":
        expected = average_top_k(top, k).mean(1)
    elif kind == "layer_norm":
        expected = torch.stack([F.layer_norm(t, t.shape[-1:]).mean(1) for t in top]).mean(0)
    else:
        expected = torch.stack(top).mean(0).mean(1)
    torch.testing.assert_close(out["utt_target"], expected.repeat_interleave(2, 0), rtol=1e-5, atol=1e-5)
    assert float(out["stats"]["utt_target_norm"]) == pytest.approx(float(expected.norm(dim=-1).mean()), rel=1e-4)
    if kind == "instance_norm":
        assert float(out["stats"]["utt_target_norm"]) < 1e-4 * 64 ** 0.5
    else:
        assert float(out["stats"]["utt_target_norm"]) > 0.1


@pytest.mark.parametrize("after", [True, False])
def test_utterance_prediction_reads_the_decoder_input_dropout_like_data2vec(after):
    """data2vec 2.0 drops out the encoder output in place before its cls_pred reads the token;
    with dropout 0.5 about half the elements of the read token are then exactly zero."""
    model = Emotion2vecModel(tiny_model_cfg(utterance_mode="token", decoder_input_dropout=0.5, encoder_dropout=0.0,
                                            utterance_after_decoder_dropout=after)).train()
    model.set_num_updates(1)
    out = model(torch.randn(4, 12000), id=torch.tensor([0, 1, 2, 3]))
    zero_frac = float((out["utt_pred"] == 0).float().mean())
    if after:
        assert 0.35 < zero_frac < 0.65
    else:
        assert zero_frac == 0.0
    model.eval()  # no dropout in eval: both read the same token
    assert float((model(torch.randn(4, 12000), id=torch.tensor([0, 1, 2, 3]))["utt_pred"] == 0).float().mean()) == 0.0


def test_norm_eps_changes_only_the_transformer_norms_as_in_data2vec():
    model = Emotion2vecModel(tiny_model_cfg(norm_eps=1e-3))
    audio = model.audio
    block_norms = [m for blk in [*model.blocks, *audio.context_encoder.blocks] for m in (blk.norm1, blk.norm2)]
    assert block_norms and all(m.eps == 1e-3 for m in block_norms) and audio.context_encoder.norm.eps == 1e-3
    fixed = [m for part in (audio.local_encoder, audio.project_features, audio.relative_positional_encoder, audio.decoder)
             for m in part.modules() if isinstance(m, (nn.LayerNorm, ChannelLayerNorm))]
    assert len(fixed) >= 7 + 1 + 2 + 2 and all(m.eps == 1e-5 for m in fixed)
    assert all(m.eps == 1e-5 for m in model.teacher.module.audio.relative_positional_encoder.modules()
               if isinstance(m, ChannelLayerNorm))
