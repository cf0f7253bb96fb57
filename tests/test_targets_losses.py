"""Teacher targets and the three utterance modes against hand computations (numpy)."""

import math

import numpy as np
import pytest
import torch

from emotion2vec_plugin.modules.losses import frame_loss_sum, utterance_loss, utterance_prediction
from emotion2vec_plugin.modules.targets import average_top_k, instance_norm_over_time


def np_instance_norm(x, eps=1e-5):  # x [B, T, D], statistics over T
    mean = x.mean(axis=1, keepdims=True)
    var = x.var(axis=1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps)


def test_average_top_k_is_mean_of_instance_normalised_top_layers():
    rng = np.random.default_rng(0)
    layers = [rng.normal(loc=i, scale=1 + i, size=(2, 7, 5)).astype(np.float32) for i in range(4)]
    got = average_top_k([torch.from_numpy(x) for x in layers], k=3).numpy()
    want = np.mean([np_instance_norm(x) for x in layers[-3:]], axis=0)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="average_top_k_layers=5"):
        average_top_k([torch.from_numpy(x) for x in layers], k=5)


def test_masked_instance_norm_ignores_padding():
    x = torch.randn(1, 9, 4)
    pad = torch.zeros(1, 9, dtype=torch.bool)
    pad[:, 6:] = True
    got = instance_norm_over_time(x, pad)[:, :6]
    torch.testing.assert_close(got, instance_norm_over_time(x[:, :6]))
    assert torch.all(instance_norm_over_time(x, pad)[:, 6:] == 0)


@pytest.mark.parametrize("reduction", ["data2vec", "mean"])
def test_frame_loss_matches_hand_computation(reduction):
    torch.manual_seed(0)
    pred, target = torch.randn(6, 8), torch.randn(6, 8)
    sq = ((pred - target) ** 2).numpy()
    scale = 1 / math.sqrt(8) if reduction == "data2vec" else 1 / 8
    assert float(frame_loss_sum(pred, target, reduction)) == pytest.approx(sq.sum() * scale, rel=1e-5)
    if reduction == "mean":  # divided by the number of frames (fairseq's sample_size) it is the plain MSE
        assert float(frame_loss_sum(pred, target, reduction)) / 6 == pytest.approx(float(torch.nn.functional.mse_loss(pred, target)), rel=1e-5)


@pytest.mark.parametrize("reduction", ["data2vec", "mean"])
def test_utterance_loss_sums_or_averages_over_utterances(reduction):
    torch.manual_seed(1)
    pred, target = torch.randn(4, 8), torch.randn(4, 8)
    per_utt = ((pred - target) ** 2).sum(dim=1).numpy()
    if reduction == "data2vec":
        want = per_utt.sum() / math.sqrt(8)
    else:
        want = per_utt.mean() / 8
    assert float(utterance_loss(pred, target, reduction)) == pytest.approx(want, rel=1e-5)


def test_utterance_modes_pool_as_designed():
    torch.manual_seed(2)
    n_tok, T_keep, T, D = 3, 5, 9, 4
    encoder_out = torch.randn(2, n_tok + T_keep, D)
    frame_pred = torch.randn(2, T, D)
    # token: the encoder output of the last utterance token (the only one when N_u = 1)
    torch.testing.assert_close(utterance_prediction("token", encoder_out, n_tok), encoder_out[:, 2])
    torch.testing.assert_close(utterance_prediction("token", encoder_out[:, 2:], 1), encoder_out[:, 2])
    # chunk: the mean of the N_u token outputs
    chunk = utterance_prediction("chunk", encoder_out, n_tok)
    np.testing.assert_allclose(chunk.numpy(), encoder_out[:, :3].numpy().mean(axis=1), rtol=1e-6)
    # global: the time mean of the frame predictions
    glob = utterance_prediction("global", encoder_out[:, n_tok:], 0, frame_pred)
    np.testing.assert_allclose(glob.numpy(), frame_pred.numpy().mean(axis=1), rtol=1e-6)
    with pytest.raises(ValueError, match="utterance_mode='frame'"):
        utterance_prediction("frame", encoder_out, n_tok)
