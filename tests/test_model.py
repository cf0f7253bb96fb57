"""Model-level properties: size and key layout of the base config, masking, padding, config checks, losses."""

import re

import pytest
import torch

from emotion2vec_plugin.criterions.emotion2vec_criterion import Emotion2vecCriterion, Emotion2vecCriterionConfig
from emotion2vec_plugin.models.emotion2vec_model import Emotion2vecModel
from emotion2vec_plugin.modules.config import EncoderConfig, StudentConfig
from emotion2vec_plugin.modules.encoder import Emotion2vecEncoder, normalize_waveform
from emotion2vec_plugin.modules.masking import MaskInfo, compute_span_mask
from emotion2vec_plugin.modules.transformer import alibi_slopes
from tests.helpers import tiny_model_cfg

# docs/design.md §5: the released emotion2vec state-dict layout
RELEASED_KEY_PATTERNS = [
    r"modality_encoders\.AUDIO\.extra_tokens",
    r"modality_encoders\.AUDIO\.alibi_scale",
    r"modality_encoders\.AUDIO\.local_encoder\.conv_layers\.[0-6]\.0\.weight",
    r"modality_encoders\.AUDIO\.local_encoder\.conv_layers\.[0-6]\.2\.1\.(weight|bias)",
    r"modality_encoders\.AUDIO\.project_features\.[12]\.(weight|bias)",
    r"modality_encoders\.AUDIO\.relative_positional_encoder\.[1-5]\.0\.(weight|bias)",
    r"modality_encoders\.AUDIO\.context_encoder\.blocks\.[0-3]\.(norm1|attn\.qkv|attn\.proj|norm2|mlp\.fc1|mlp\.fc2)\.(weight|bias)",
    r"modality_encoders\.AUDIO\.context_encoder\.norm\.(weight|bias)",
    r"modality_encoders\.AUDIO\.decoder\.blocks\.[0-3]\.0\.(weight|bias)",
    r"modality_encoders\.AUDIO\.decoder\.proj\.(weight|bias)",
    r"blocks\.[0-7]\.(norm1|attn\.qkv|attn\.proj|norm2|mlp\.fc1|mlp\.fc2)\.(weight|bias)",
]


@pytest.fixture(scope="module")
def base_encoder():
    return Emotion2vecEncoder(StudentConfig())


def test_base_config_has_released_parameter_count(base_encoder):
    assert sum(p.numel() for p in base_encoder.parameters()) == 93_790_988


def test_base_state_dict_keys_and_shapes_follow_released_layout(base_encoder):
    sd = base_encoder.state_dict()
    unmatched = [k for k in sd if not any(re.fullmatch(p, k) for p in RELEASED_KEY_PATTERNS)]
    assert unmatched == []
    # every pattern is used, with the expected count: 1+1+7+14+4+10+48+2+8+2+96
    assert len(sd) == 193
    assert sd["modality_encoders.AUDIO.extra_tokens"].shape == (1, 10, 768)
    assert sd["modality_encoders.AUDIO.alibi_scale"].shape == (1, 1, 12, 1, 1)
    assert sd["modality_encoders.AUDIO.relative_positional_encoder.1.0.weight"].shape == (768, 48, 19)
    assert sd["modality_encoders.AUDIO.decoder.blocks.0.0.weight"].shape == (384, 48, 7)
    assert sd["modality_encoders.AUDIO.decoder.proj.weight"].shape == (768, 384)


def test_fairseq_model_state_dict_is_student_plus_teacher():
    model = Emotion2vecModel(tiny_model_cfg())
    sd = model.state_dict()
    student = [k for k in sd if not k.startswith("_ema")]
    teacher = [k for k in sd if k.startswith("_ema.")]
    assert set(student) == set(Emotion2vecEncoder(model.encoder_cfg).state_dict())
    # the teacher has no CNN, projection or decoder (docs/design.md §2), everything else of the student
    assert {k[len("_ema."):] for k in teacher} == {
        k for k in student if not re.search(r"local_encoder|project_features|decoder", k)
    }
    assert "_ema_step" in sd


def test_alibi_slopes_for_12_heads():
    s8 = [2 ** (-(i + 1)) for i in range(8)]  # 8 heads: start 2^-1, ratio 2^-1
    s16 = [2 ** (-(i + 1) / 2) for i in range(16)]  # 16 heads: start 2^-0.5
    assert alibi_slopes(12) == pytest.approx(s8 + s16[0::2][:4])


def test_span_mask_has_exact_count_and_spans():
    gen = torch.Generator().manual_seed(0)
    mask = compute_span_mask(64, 200, 0.5, 5, 0.05, gen)
    assert mask.shape == (64, 200)
    assert (mask.sum(dim=1) == 100).all()
    # spans: most masked frames have a masked neighbour (i.i.d. masking would give ~50%)
    neighbour = mask[:, 1:] & mask[:, :-1]
    assert neighbour.sum() / mask[:, 1:].sum() > 0.7
    info = MaskInfo.from_mask(mask)
    assert info.keep_ids.shape == (64, 100)
    assert (info.keep_ids.diff(dim=1) > 0).all()  # kept frames stay in time order
    x = torch.randn(64, 200, 3)
    restored = info.restore(info.gather(x), torch.zeros_like(x))
    torch.testing.assert_close(restored, x * (~mask).unsqueeze(-1))


def test_extract_features_alone_equals_inside_padded_batch():
    torch.manual_seed(0)
    enc = Emotion2vecEncoder(EncoderConfig(**{k: v for k, v in vars(tiny_model_cfg()).items()
                                              if k in EncoderConfig.__dataclass_fields__})).eval()
    lengths = [16000, 9001, 12345]
    wavs = [torch.randn(n) for n in lengths]
    batch = torch.zeros(3, max(lengths))
    pad = torch.ones(3, max(lengths), dtype=torch.bool)
    for i, w in enumerate(wavs):
        batch[i, : len(w)] = w
        pad[i, : len(w)] = False
    batch = normalize_waveform(batch, pad)
    out = enc.extract_features(batch, pad)
    frames = enc.audio.local_encoder.output_lengths(torch.tensor(lengths))
    for i, w in enumerate(wavs):
        alone = enc.extract_features(normalize_waveform(w[None]))
        T = int(frames[i])
        assert alone["x"].shape[1] == T
        assert out["padding_mask"][i, :T].sum() == 0 and out["padding_mask"][i, T:].all()
        # fp32 reductions over different batch shapes: 1e-5 is well above the ~1e-6 rounding seen
        torch.testing.assert_close(out["x"][i, :T], alone["x"][0], atol=1e-5, rtol=1e-5)
        for a, b in zip(out["layer_results"], alone["layer_results"]):
            torch.testing.assert_close(a[i, :T], b[0], atol=1e-5, rtol=1e-5)


def test_cnn_output_length_arithmetic():
    enc = Emotion2vecEncoder(EncoderConfig(depth=1, prenet_depth=0))
    fe = enc.audio.local_encoder
    assert fe.receptive_field == 400
    # 1 s at 16 kHz: floor((16000 - 400) / 320) + 1 = 49 frames (50 frames per second)
    assert int(fe.output_lengths(torch.tensor([16000]))) == 49
    assert fe(torch.randn(1, 16000)).shape == (1, 512, 49)


def test_training_forward_shapes_and_mask_fraction():
    cfg = tiny_model_cfg(clone_batch=3)
    model = Emotion2vecModel(cfg).train()
    B, S = 2, 16000
    out = model(torch.randn(B, S), id=torch.tensor([4, 7]))
    T = int(model.audio.local_encoder.output_lengths(torch.tensor([S])))
    masked_per_row = int(T * cfg.mask_prob)
    assert out["sample_size"] == B * 3 * masked_per_row
    assert out["frame_pred"].shape == out["frame_target"].shape == (B * 3 * masked_per_row, cfg.embed_dim)
    assert out["utt_pred"].shape == out["utt_target"].shape == (B * 3, cfg.embed_dim)
    # the utterance target of every clone is the time mean of the same teacher targets
    torch.testing.assert_close(out["utt_target"][0], out["utt_target"][2])


def test_frame_loss_sees_only_masked_frames():
    """Perturbing the decoder's output at unmasked frames leaves the loss unchanged."""
    model = Emotion2vecModel(tiny_model_cfg(utterance_mode="chunk")).eval()
    feats, _ = model.local_features(torch.randn(1, 16000))
    mask_info = model.make_masks(1, feats.size(1), None, torch.tensor([0]), feats.device)
    enc_out, frame_pred = model.student_forward(feats, mask_info)
    y = model.teacher_targets(feats)
    a = model.pair_outputs(enc_out, frame_pred, y, mask_info)
    poked = frame_pred + 100.0 * (~mask_info.mask).unsqueeze(-1)
    b = model.pair_outputs(enc_out, poked, y, mask_info)
    torch.testing.assert_close(a["frame_pred"], b["frame_pred"])
    c = model.pair_outputs(enc_out, frame_pred + 1.0 * mask_info.mask.unsqueeze(-1), y, mask_info)
    assert not torch.allclose(a["frame_pred"], c["frame_pred"])


def test_criterion_total_is_frame_plus_alpha_utterance():
    model = Emotion2vecModel(tiny_model_cfg()).train()
    crit = Emotion2vecCriterion(Emotion2vecCriterionConfig(alpha=0.5, loss_reduction="mean"), task=None)
    sample = {"net_input": {"source": torch.randn(2, 12000), "id": torch.tensor([0, 1])}}
    torch.manual_seed(0)
    loss, n, log = crit(model, sample)
    frame = float(log["loss_frame"]) / n
    utt = float(log["loss_utt"]) / n
    assert loss.item() / n == pytest.approx(frame + 0.5 * utt, rel=1e-5)
    torch.manual_seed(0)
    out = model(**sample["net_input"])
    # 'mean' reduction: the frame term is the plain MSE over masked frames and dimensions
    assert frame == pytest.approx(torch.nn.functional.mse_loss(out["frame_pred"], out["frame_target"]).item(), rel=1e-4)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"average_top_k_layers": 3}, r"average_top_k_layers=3 must be in \[1, 2\]: .* never averages the prenet_depth=1 prenet"),
        ({"ema_decay": 1.5}, r"ema_decay=1.5 must be in \[0, 1\]"),
        ({"ema_end_decay": -0.1}, r"ema_end_decay=-0.1"),
        ({"utterance_mode": "frame"}, r"utterance_mode='frame'"),
        ({"utterance_mode": "chunk", "num_utterance_tokens": 1}, r"num_utterance_tokens=1"),
        ({"utterance_mode": "token", "num_utterance_tokens": 0}, r"needs model.num_utterance_tokens >= 1"),
        ({"embed_dim": 66}, r"embed_dim=66 must be divisible by num_heads=4"),
        ({"conv_feature_layers": "[(64, 10)]"}, r"not a \(dim, kernel, stride\)"),
        ({"mask_prob": 1.0}, r"mask_prob=1.0"),
    ],
)
def test_bad_config_fails_at_build_time(overrides, message):
    with pytest.raises(ValueError, match=message):
        Emotion2vecModel(tiny_model_cfg(**overrides))


def test_global_mode_without_tokens_trains():
    model = Emotion2vecModel(tiny_model_cfg(utterance_mode="global", num_utterance_tokens=0)).train()
    assert model.audio.extra_tokens is None
    out = model(torch.randn(2, 12000), id=torch.tensor([0, 1]))
    (out["frame_pred"].sum() + out["utt_pred"].sum()).backward()


def test_sdpa_and_eager_attention_agree_with_bias_and_padding():
    from emotion2vec_plugin.modules.transformer import AltAttention, alibi_bias, attention_mask

    torch.manual_seed(0)
    attn = AltAttention(32, 4, attn_drop=0.0, proj_drop=0.0).eval()
    x = torch.randn(2, 9, 32)
    pad = torch.zeros(2, 9, dtype=torch.bool)
    pad[1, 6:] = True
    mask = attention_mask(alibi_bias(torch.arange(7)[None], torch.tensor(alibi_slopes(4)), torch.ones(4), 2), pad, x.dtype)
    outs = {}
    for impl in ("sdpa", "eager"):
        attn.impl = impl
        outs[impl] = attn(x, mask)
    torch.testing.assert_close(outs["sdpa"], outs["eager"], atol=1e-5, rtol=1e-5)


def test_bf16_student_keeps_fp32_teacher_and_targets():
    """What fairseq does for common.bf16: the model is cast; the teacher and targets must stay fp32."""
    torch.manual_seed(0)
    model = Emotion2vecModel(tiny_model_cfg()).to(torch.bfloat16).train()
    model.set_num_updates(1)
    out = model(torch.randn(2, 12000, dtype=torch.bfloat16), id=torch.tensor([0, 1]))
    assert out["frame_pred"].dtype == torch.bfloat16
    assert out["frame_target"].dtype == out["utt_target"].dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in model.teacher.module.parameters())
    crit = Emotion2vecCriterion(Emotion2vecCriterionConfig(), task=None)
    loss, n, _ = crit(model, {"net_input": {"source": torch.randn(2, 12000, dtype=torch.bfloat16), "id": torch.tensor([0, 1])}})
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad.float()).all() for p in model.parameters() if p.grad is not None)
