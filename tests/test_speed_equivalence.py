"""The training-speed changes keep the numbers: one training step (loss, every gradient, the teacher
targets) and padded inference equal a frozen reference computation up to fp32 rounding.

The reference is the computation before the speed work (commit 139be9c^), frozen in
``devtools/speed_reference.py``: the CNN
as channels-last ``conv2d`` layers, the positional convs and the decoder as their ``conv_norm_gelu``
Sequentials on transposed [B, D, T] tensors, the frame targets as
``y.repeat_interleave(clone_batch)[mask]``, every dropout through ``F.dropout`` and the attention
dropout inside SDPA (``kernels.cpu_dropout.torch_dropout``); the CNN is also checked against its
state-dict layout modules (Conv1d). ``recipes/benchmark/train_step_vs_data2vec.py --baseline``
times this reference. The fast path runs the CNN as GEMMs over unfolded windows, the grouped convs
channels-last, indexes the targets, and draws the dropout masks with the C kernel of
``kernels/cpu_dropout.py`` (attention written out in training so that its dropout goes there too).
Dropouts stay on (released rates) with the same seed on both sides, so the test also shows
that the fast path draws the same random numbers in the same order (loss difference 0).

``model.compile=true`` against eager is tested when ``E2V_TEST_COMPILE=1`` (inductor compiles for
minutes on this 2-core CPU: 5.4 min wall measured under load, too long for the suite).
"""

import os
from typing import Dict, Tuple

import pytest
import torch

from devtools.speed_reference import layout_cnn, reference_cnn, reference_path
from emotion2vec_plugin.criterions.emotion2vec_criterion import Emotion2vecCriterion, Emotion2vecCriterionConfig
from emotion2vec_plugin.models.emotion2vec_model import Emotion2vecConfig, Emotion2vecModel

# the emotion2vec structure at a narrow width (as tests/test_reference_data2vec.py), released dropouts
NARROW = dict(
    conv_feature_layers="[(128, 10, 5)] + [(128, 3, 2)] * 4 + [(128, 2, 2)] * 2",
    embed_dim=192, num_heads=12, mlp_ratio=4.0, prenet_depth=2, depth=4, conv_pos_depth=5, conv_pos_width=95,
    conv_pos_groups=16, num_utterance_tokens=10, decoder_dim=96, decoder_kernel=7, decoder_layers=4,
    decoder_groups=16, average_top_k_layers=4, clone_batch=3, seed=3, layerdrop=0.0, prenet_layerdrop=0.0,
)
B, SAMPLES = 2, 16000

# Tolerances, next to what they guard (measured on CPU fp32; the paths differ only in summation
# order): loss relative difference 0 (rounding cancels in the sum), gradients max |diff| / max |grad|
# per tensor 3.2e-6 (worst: the first CNN conv), frame targets 3.5e-6 and predictions 1.0e-6 of their
# max. The negative controls: a decoder conv kernel flipped in time gives loss 7e-3, gradients 1.2,
# predictions 0.8; another dropout seed gives loss 9e-3, gradients 0.6.
LOSS_RTOL = 1e-5
GRAD_RTOL = 1e-4
TARGET_RTOL = 5e-5
FEATURE_RTOL = 5e-5


def build(**overrides) -> Emotion2vecModel:
    torch.manual_seed(0)
    model = Emotion2vecModel(Emotion2vecConfig(**{**NARROW, **overrides})).train()
    with torch.no_grad():  # move LayerNorm affines off 1/0 so that nothing hides behind them
        g = torch.Generator().manual_seed(1)
        for name, p in model.named_parameters():
            if "norm" in name or "project_features.1" in name or ("conv_layers" in name and p.dim() == 1):
                p.add_(torch.randn(p.shape, generator=g) * 0.2)
    model.teacher.copy_from(dict(model.named_parameters()))
    return model


def batch() -> Dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    wav = torch.randn(B, SAMPLES, generator=g) * torch.linspace(0.2, 1.0, SAMPLES)
    return {"source": torch.nn.functional.layer_norm(wav, (SAMPLES,)), "id": torch.arange(B)}


def one_step(model: Emotion2vecModel, seed: int = 5) -> Tuple[float, Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
    """Loss, gradients and outputs of one step (model-side masks, dropouts drawn from ``seed``)."""
    crit = Emotion2vecCriterion(Emotion2vecCriterionConfig(alpha=1.0, loss_reduction="data2vec"), task=None)
    model.zero_grad(set_to_none=True)
    model.set_num_updates(1)
    torch.manual_seed(seed)
    captured = {}
    original = model.pair_outputs

    def capture(*a, **k):
        out = original(*a, **k)
        captured.update(frame_target=out["frame_target"].detach(), utt_target=out["utt_target"].detach(),
                        frame_pred=out["frame_pred"].detach())
        return out

    model.pair_outputs = capture
    try:
        loss, n, _ = crit(model, {"net_input": batch()})
    finally:
        del model.pair_outputs
    (loss / n).backward()
    grads = {k: p.grad.detach().clone() for k, p in model.named_parameters()}
    return float(loss.detach()), grads, captured


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30))


def compare(fast, ref) -> Dict[str, float]:
    (l_f, g_f, o_f), (l_r, g_r, o_r) = fast, ref
    assert set(g_f) == set(g_r)
    grads = {k: rel(g_f[k], g_r[k]) for k in g_r}
    return {"loss": abs(l_f / l_r - 1), "grad": max(grads.values()), "grad_worst": max(grads, key=grads.get),
            "frame_target": rel(o_f["frame_target"], o_r["frame_target"]),
            "frame_pred": rel(o_f["frame_pred"], o_r["frame_pred"]),
            "utt_target_abs": float((o_f["utt_target"] - o_r["utt_target"]).abs().max())}


@pytest.fixture(scope="module")
def fast_step():
    """The model and its fast-path step, shared by the tests below (built and run once)."""
    model = build()
    return model, one_step(model)


def test_training_step_equals_reference_path(fast_step):
    model, fast = fast_step
    with reference_path():
        ref = one_step(model)
    r = compare(fast, ref)
    assert r["loss"] < LOSS_RTOL and r["grad"] < GRAD_RTOL, r
    assert r["frame_target"] < TARGET_RTOL and r["frame_pred"] < TARGET_RTOL, r
    # every parameter got a gradient on both paths, and the step is not trivially zero
    assert all(float(g.abs().max()) > 0 for k, g in fast[1].items() if "qkv.bias" not in k)
    # the frame targets are the teacher rows of each clone's utterance: same count as masked frames
    T = int(model.audio.local_encoder.output_lengths(torch.tensor([SAMPLES])))
    assert fast[2]["frame_target"].shape == (B * NARROW["clone_batch"] * int(T * model.cfg.mask_prob), 192)
    # same dropout draws: a different seed on the fast path alone differs by far more than rounding
    other = compare(one_step(model, seed=6), ref)
    assert other["loss"] > 100 * LOSS_RTOL and other["grad"] > 100 * GRAD_RTOL, other


def test_a_wrong_decoder_is_caught(fast_step):
    model, fast = fast_step
    with reference_path(flip_decoder=True):
        ref = one_step(model)
    r = compare(fast, ref)
    assert r["frame_pred"] > 100 * TARGET_RTOL and r["grad"] > 100 * GRAD_RTOL and r["loss"] > 100 * LOSS_RTOL, r
    assert r["frame_target"] < TARGET_RTOL, r  # the teacher has no decoder


def test_cnn_equals_its_layout_modules():
    model = build()
    src = batch()["source"]
    with torch.no_grad():
        fast = model.audio.local_encoder(src)
        assert rel(fast, layout_cnn(model.audio.local_encoder, src)) < FEATURE_RTOL
        assert rel(fast, reference_cnn(model.audio.local_encoder, src)) < FEATURE_RTOL
    assert fast.shape == (B, 128, 49)


def test_padded_inference_equals_reference_path():
    model = build().eval()
    src = batch()["source"]
    lengths = torch.tensor([SAMPLES, 11000])
    pad = torch.arange(SAMPLES).unsqueeze(0) >= lengths.unsqueeze(1)
    src = src.masked_fill(pad, 0.0)
    with torch.no_grad():
        fast = model.extract_features(src, pad)
        with reference_path():
            ref = model.extract_features(src, pad)
    assert fast["padding_mask"] is not None and torch.equal(fast["padding_mask"], ref["padding_mask"])
    for a, b in zip(fast["layer_results"], ref["layer_results"]):
        assert rel(a, b) < FEATURE_RTOL, rel(a, b)
    # padding-exactness survives: the short utterance alone gives its padded-batch features
    with torch.no_grad():
        alone = model.extract_features(src[1:, :11000])["x"][0]
    T = alone.size(0)
    assert rel(fast["x"][1, :T], alone) < FEATURE_RTOL


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("E2V_TEST_COMPILE") != "1",
                    reason="inductor compiles for minutes on CPU; set E2V_TEST_COMPILE=1 to run")
def test_compiled_step_equals_eager():
    no_dropout = dict(encoder_dropout=0.0, attention_dropout=0.0, post_mlp_drop=0.0, prenet_dropout=0.0,
                      decoder_input_dropout=0.0)
    eager = build(**no_dropout)
    compiled = build(**no_dropout, compile=True)
    compiled.load_state_dict(eager.state_dict())
    r = compare(one_step(compiled), one_step(eager))
    assert r["loss"] < LOSS_RTOL and r["grad"] < GRAD_RTOL and r["frame_target"] < TARGET_RTOL, r
    # a new length runs without error on the dynamic-shape graphs
    compiled.extract_features(batch()["source"][:, :12000])
