"""Golden checks of how the training objective is wired, at model level, with B >= 2 distinct
utterances and clone_batch >= 2, so that a mix-up between utterances, clones, tokens, layers or
ends of a sequence changes the numbers. Expected values are computed independently: teacher FFN
outputs are read with forward hooks on the teacher's ``mlp`` modules, one utterance at a time, and
instance-normalised and averaged here; the criterion is checked against hand-computed numbers.
"""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from emotion2vec_plugin.criterions.emotion2vec_criterion import Emotion2vecCriterion, Emotion2vecCriterionConfig
from emotion2vec_plugin.models.emotion2vec_model import Emotion2vecModel
from emotion2vec_plugin.modules.masking import compute_span_mask
from tests.helpers import tiny_model_cfg

B, CLONES, SAMPLES = 3, 3, 12000  # 3 utterances x 3 clones; 12000 samples -> T = 36 frames


def distinct_batch() -> torch.Tensor:
    g = torch.Generator().manual_seed(5)
    t = torch.arange(SAMPLES) / 16000
    rows = [torch.sin(2 * math.pi * f * t) + 0.3 * torch.randn(SAMPLES, generator=g) for f in (150.0, 310.0, 520.0)]
    return F.layer_norm(torch.stack(rows), (SAMPLES,))


def model_with_distinct_teacher(**overrides) -> Emotion2vecModel:
    """Tiny model (1 prenet + 2 main blocks, top-2 targets) whose teacher differs from its student,
    so that targets computed with the wrong network show up."""
    torch.manual_seed(0)
    cfg = tiny_model_cfg(clone_batch=CLONES, num_utterance_tokens=3, average_top_k_layers=2, **overrides)
    model = Emotion2vecModel(cfg).eval()  # eval: no dropout; forward still runs the training objective
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.teacher.module.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model


def hand_targets(model: Emotion2vecModel, feats: torch.Tensor) -> torch.Tensor:
    """Y_T [B, T, D] one utterance at a time: FFN outputs (hooked on each teacher block's ``mlp``),
    utterance tokens (the first N_u positions) dropped, instance-normalised over time, top K averaged."""
    teacher = model.teacher.module
    blocks = list(teacher.audio.context_encoder.blocks) + list(teacher.blocks)
    n_tok, k = model.num_utterance_tokens, model.cfg.average_top_k_layers
    out = []
    for b in range(feats.size(0)):
        ffn = []
        handles = [blk.mlp.register_forward_hook(lambda m, i, o: ffn.append(o.detach())) for blk in blocks]
        with torch.no_grad():
            teacher.contextualize(feats[b:b + 1], None, None)
        for h in handles:
            h.remove()
        assert len(ffn) == len(blocks)
        layers = [F.instance_norm(t[:, n_tok:].transpose(1, 2), eps=1e-5).transpose(1, 2) for t in ffn[-k:]]
        out.append(torch.stack(layers).mean(0)[0])
    return torch.stack(out)


def fixed_masks(model: Emotion2vecModel, T: int, seed: int = 7) -> torch.Tensor:
    return compute_span_mask(B * CLONES, T, model.cfg.mask_prob, model.cfg.mask_length, model.cfg.mask_prob_adjust,
                             torch.Generator().manual_seed(seed))


def test_frame_targets_are_each_utterances_top_k_ffn_average_at_its_masked_frames():
    model = model_with_distinct_teacher()
    src = distinct_batch()
    with torch.no_grad():
        feats, _ = model.local_features(src)
        T = feats.size(1)
        mask = fixed_masks(model, T)
        out = model(src, precomputed_mask=mask, id=torch.arange(B))
    y = hand_targets(model, feats)  # [B, T, D]
    # row r of the mask is clone r % CLONES of utterance r // CLONES; frames in time order within a row
    want = torch.cat([y[r // CLONES][mask[r]] for r in range(B * CLONES)])
    assert out["frame_target"].shape == want.shape == (B * CLONES * int(T * model.cfg.mask_prob), model.cfg.embed_dim)
    # fp32, batched vs one utterance at a time: rounding ~1e-6 on unit-variance targets
    torch.testing.assert_close(out["frame_target"], want, atol=1e-5, rtol=1e-5)
    # the utterances are distinct enough for a mix-up to show: targets of utterance 0 vs 1 differ by O(1)
    assert (y[0] - y[1]).abs().mean() > 0.1
    # the utterance target is the time mean of the same targets (zero up to rounding: they are
    # instance-normalised over time, docs/design.md §8), one row per clone
    torch.testing.assert_close(out["utt_target"], y.mean(1).repeat_interleave(CLONES, 0), atol=1e-5, rtol=0)


def test_raw_utterance_target_rows_are_each_utterances_ffn_time_mean():
    """model.utterance_target=raw (not zero, unlike the released instance_norm target): row r of
    utt_target is the time mean of the top-K FFN average of utterance r // clone_batch."""
    model = model_with_distinct_teacher(utterance_target="raw")
    src = distinct_batch()
    with torch.no_grad():
        feats, _ = model.local_features(src)
        out = model(src, precomputed_mask=fixed_masks(model, feats.size(1)), id=torch.arange(B))
        teacher = model.teacher.module
        blocks = list(teacher.audio.context_encoder.blocks) + list(teacher.blocks)
        want = []
        for b in range(B):
            ffn = []
            handles = [blk.mlp.register_forward_hook(lambda m, i, o: ffn.append(o)) for blk in blocks]
            teacher.contextualize(feats[b:b + 1], None, None)
            for h in handles:
                h.remove()
            want.append(torch.stack([t[0, model.num_utterance_tokens:].mean(0) for t in ffn[-2:]]).mean(0))
    want = torch.stack(want)
    assert (want[0] - want[1]).abs().max() > 0.05  # distinct rows per utterance
    torch.testing.assert_close(out["utt_target"], want.repeat_interleave(CLONES, 0), atol=1e-5, rtol=1e-5)


def test_pair_outputs_route_rows_to_their_own_utterance_and_clone():
    """With a target that is not normalised over time, the utterance target of row r must be the
    time mean of utterance r // clone_batch, and the frame target its frames under row r's mask."""
    model = model_with_distinct_teacher()
    src = distinct_batch()
    with torch.no_grad():
        feats, _ = model.local_features(src)
        T, D = feats.shape[1:]
        mask_info = model.make_masks(B, T, fixed_masks(model, T), None, feats.device)
        enc_out, frame_pred = model.student_forward(feats, mask_info)
        y = torch.randn(B, T, D, generator=torch.Generator().manual_seed(3)) + 10 * torch.arange(B).view(B, 1, 1)
        out = model.pair_outputs(enc_out, frame_pred, y, mask_info)
    for r in range(B * CLONES):
        torch.testing.assert_close(out["utt_target"][r], y[r // CLONES].mean(0))
    torch.testing.assert_close(out["frame_target"], torch.cat([y[r // CLONES][mask_info.mask[r]] for r in range(B * CLONES)]))
    torch.testing.assert_close(out["frame_pred"], torch.cat([frame_pred[r][mask_info.mask[r]] for r in range(B * CLONES)]))
    assert out["sample_size"] == int(mask_info.mask.sum())


@pytest.mark.parametrize("mode", ["token", "chunk"])
def test_utterance_prediction_reads_the_configured_tokens(mode):
    """N_u = 3 tokens: token mode reads the last one (data2vec 2.0's cls_loss), chunk their mean."""
    model = model_with_distinct_teacher(utterance_mode=mode)
    src = distinct_batch()
    with torch.no_grad():
        feats, _ = model.local_features(src)
        mask = fixed_masks(model, feats.size(1))
        torch.manual_seed(0)
        out = model(src, precomputed_mask=mask, id=torch.arange(B))
        mask_info = model.make_masks(B, feats.size(1), mask, None, feats.device)
        enc = model.contextualize(feats.repeat_interleave(CLONES, 0), None, mask_info)  # [B', 3 + T_keep, D]
    last, mean = enc[:, 2], enc[:, :3].mean(1)
    assert (last - mean).abs().max() > 0.1  # the two readings are far apart
    torch.testing.assert_close(out["utt_pred"], last if mode == "token" else mean, atol=1e-5, rtol=1e-5)


def test_model_side_masks_depend_on_seed_update_and_every_utterance_id():
    model = model_with_distinct_teacher().train()  # training masks (validation ones ignore the update)
    T = 36

    def mask(ids, update=0):
        model.num_updates = update
        return model.make_masks(len(ids), T, None, torch.tensor(ids), torch.device("cpu")).mask

    a = mask([0, 1, 2])
    assert torch.equal(a, mask([0, 1, 2]))  # a pure function of its inputs
    assert a.shape == (3 * CLONES, T) and (a.sum(1) == int(T * model.cfg.mask_prob)).all()
    assert not torch.equal(a, mask([0, 1, 3]))  # another utterance in the batch
    assert not torch.equal(a, mask([5, 6, 7]))
    assert not torch.equal(a, mask([0, 1, 2], update=1))  # another update
    # clones of one utterance get different masks
    assert not torch.equal(a[0], a[1]) and not torch.equal(a[1], a[2])


def test_span_starts_are_drawn_with_the_adjusted_probability():
    """compute_span_mask draws starts as rand(B, T) < mask_prob / mask_length * (1 + mask_prob_adjust)
    (its first draw from the generator), grows each start to mask_length frames, then trims rows with
    too many masked frames to a subset of their spans or fills rows with too few. Replaying the first
    draw by hand: every row must be a subset (trimmed) or a superset (filled) of the hand spans."""
    B_, T, prob, length, adjust = 64, 120, 0.3, 6, 1.0  # adjust 1.0 doubles the start probability
    mask = compute_span_mask(B_, T, prob, length, adjust, torch.Generator().manual_seed(11))
    starts = torch.rand(B_, T, generator=torch.Generator().manual_seed(11)).numpy() < prob / length * (1 + adjust)
    spans = np.zeros((B_, T), dtype=bool)
    for b, t in zip(*np.nonzero(starts)):
        spans[b, t:t + length] = True
    m = mask.numpy()
    target = int(T * prob)
    assert (m.sum(1) == target).all()
    for b in range(B_):
        if spans[b].sum() >= target:
            assert not (m[b] & ~spans[b]).any(), b  # trimmed: only span frames stay masked
        else:
            assert not (spans[b] & ~m[b]).any(), b  # filled: every span frame is masked
    # with adjust 1.0 most rows have more span frames than the target (mean coverage ~0.63 > 0.3)
    assert (spans.sum(1) >= target).mean() > 0.9


class FixedOutputs(torch.nn.Module):
    """Stands in for the model: returns the given output dict (the criterion's whole contract)."""

    def __init__(self, out):
        super().__init__()
        self.out = out

    def forward(self, **net_input):
        return self.out


def golden_outputs():
    D = 4  # 1/sqrt(D) = 0.5, 1/D = 0.25
    frame_target = torch.zeros(3, D)
    frame_pred = torch.tensor([[1.0, 0, 0, 0], [1, 1, 0, 0], [2, 0, 0, 0]])  # squared errors 1, 2, 4: sum 7
    utt_target = torch.tensor([[1.0, 1, 1, 1], [0, 0, 0, 1]])
    utt_pred = torch.tensor([[2.0, 2, 2, 2], [0, 0, 0, 4]])  # squared errors 4, 9: sum 13
    stats = {"target_var": torch.tensor(1.0), "pred_var": torch.tensor(0.5), "ema_decay": 0.999, "mask_frac": 0.5,
             "utt_target_norm": 0.0}
    return {"frame_pred": frame_pred, "frame_target": frame_target, "utt_pred": utt_pred, "utt_target": utt_target,
            "sample_size": 3, "stats": stats}


@pytest.mark.parametrize("reduction, frame, utt", [
    # data2vec: frame 7 * 0.5 = 3.5 (sum over frames); utterance 13 * 0.5 = 6.5 summed over rows, times n = 3
    ("data2vec", 3.5, 19.5),
    # mean: frame 7 * 0.25 = 1.75; utterance mean over 2 rows 13 / 2 * 0.25 = 1.625, times n = 3
    ("mean", 1.75, 4.875),
])
def test_criterion_golden_values(reduction, frame, utt):
    crit = Emotion2vecCriterion(Emotion2vecCriterionConfig(alpha=0.5, loss_reduction=reduction), task=None)
    sample = {"net_input": {"source": torch.zeros(2, 10)}}
    loss, n, log = crit(FixedOutputs(golden_outputs()), sample)
    assert n == 3 and log["sample_size"] == 3 and log["nsentences"] == 2
    assert float(log["loss_frame"]) == pytest.approx(frame, rel=1e-6)
    assert float(log["loss_utt"]) == pytest.approx(utt, rel=1e-6)
    # fairseq divides the returned sum by n: per masked frame, frame mean + alpha * utterance term
    assert float(loss) == pytest.approx(frame + 0.5 * utt, rel=1e-6)
    assert float(log["loss"]) == pytest.approx(float(loss), rel=1e-6)
