"""model.init_from: explicit key mapping from released emotion2vec and data2vec 2.0 layouts."""

import re

import pytest
import torch

from emotion2vec_plugin.checkpoint.convert import CheckpointMismatchError
from emotion2vec_plugin.models.emotion2vec_model import Emotion2vecModel
from tests.helpers import tiny_model_cfg

PRENET = "modality_encoders.AUDIO.context_encoder.blocks."


def student_state(seed: int) -> dict:
    torch.manual_seed(seed)
    model = Emotion2vecModel(tiny_model_cfg())
    return {k: v for k, v in model.state_dict().items() if not k.startswith("_ema")}


def to_data2vec_layout(state: dict, prenet_depth: int) -> dict:
    """data2vec 2.0 audio base: one flat stack blocks.0..N-1, no utterance tokens, EMA under _ema."""
    out = {}
    for k, v in state.items():
        m = re.match(rf"^{re.escape(PRENET)}(\d+)\.(.*)$", k)
        if m:
            out[f"blocks.{m.group(1)}.{m.group(2)}"] = v
        elif k.startswith("blocks."):
            i, rest = k[len("blocks."):].split(".", 1)
            out[f"blocks.{int(i) + prenet_depth}.{rest}"] = v
        elif not k.endswith("extra_tokens"):
            out[k] = v
    out["_ema"] = {"blocks.0.norm1.weight": torch.ones(3)}
    return out


def test_init_from_released_emotion2vec_layout(tmp_path):
    source = student_state(seed=1)
    source["proj.weight"] = torch.randn(9, 64)  # emotion2vec+ classifier head: ignored on purpose
    path = tmp_path / "emotion2vec_released.pt"
    torch.save({"cfg": {"model": {"_name": "data2vec_multi"}}, "model": source}, path)
    model = Emotion2vecModel(tiny_model_cfg(init_from=str(path)))
    own = model.state_dict()
    for k, v in source.items():
        if k != "proj.weight":
            assert torch.equal(own[k], v), k
    # no teacher in a released checkpoint: the teacher starts as the loaded student
    assert torch.equal(own["_ema.blocks.0.mlp.fc1.weight"], source["blocks.0.mlp.fc1.weight"])


def test_init_from_data2vec2_flat_blocks(tmp_path):
    source = student_state(seed=2)
    path = tmp_path / "data2vec2.pt"
    torch.save({"model": to_data2vec_layout(source, prenet_depth=1)}, path)
    torch.manual_seed(123)
    model = Emotion2vecModel(tiny_model_cfg(init_from=str(path)))
    own = model.state_dict()
    for k, v in source.items():
        if k.endswith("extra_tokens"):
            assert not torch.equal(own[k], v)  # absent from data2vec 2.0: initialised fresh
        else:
            assert torch.equal(own[k], v), k
    # flat blocks 0 and 1..2 of data2vec became prenet block 0 and main blocks 0..1: same forward
    model.eval()
    ref = Emotion2vecModel(tiny_model_cfg()).eval()
    ref.load_state_dict({**ref.state_dict(), **source, "modality_encoders.AUDIO.extra_tokens": own["modality_encoders.AUDIO.extra_tokens"]})
    wav = torch.randn(1, 8000)
    torch.testing.assert_close(model.extract_features(wav)["x"], ref.extract_features(wav)["x"])


def test_init_from_fails_loudly_on_unknown_or_missing_weights(tmp_path):
    source = student_state(seed=3)
    bad = dict(source, **{"modality_encoders.AUDIO.mystery.weight": torch.zeros(1)})
    torch.save({"model": bad}, tmp_path / "extra.pt")
    with pytest.raises(CheckpointMismatchError, match=r"extra\.pt.*unexpected \['modality_encoders\.AUDIO\.mystery\.weight'\]"):
        Emotion2vecModel(tiny_model_cfg(init_from=str(tmp_path / "extra.pt")))
    missing = {k: v for k, v in source.items() if not k.startswith("blocks.1.")}
    torch.save({"model": missing}, tmp_path / "missing.pt")
    with pytest.raises(CheckpointMismatchError, match=r"missing \['blocks\.1\.attn\.proj\.bias'"):
        Emotion2vecModel(tiny_model_cfg(init_from=str(tmp_path / "missing.pt")))
    wrong_shape = dict(source, **{"blocks.0.mlp.fc1.weight": torch.zeros(3, 3)})
    torch.save({"model": wrong_shape}, tmp_path / "shape.pt")
    with pytest.raises(CheckpointMismatchError, match=r"blocks\.0\.mlp\.fc1\.weight: checkpoint \(3, 3\)"):
        Emotion2vecModel(tiny_model_cfg(init_from=str(tmp_path / "shape.pt")))


def test_init_from_our_checkpoint_keeps_its_teacher(tmp_path):
    torch.manual_seed(4)
    model = Emotion2vecModel(tiny_model_cfg()).train()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)  # student != teacher
    torch.save({"model": model.state_dict()}, tmp_path / "ours.pt")
    loaded = Emotion2vecModel(tiny_model_cfg(init_from=str(tmp_path / "ours.pt")))
    for k, v in model.state_dict().items():
        if k != "_ema_step":
            assert torch.equal(loaded.state_dict()[k], v), k
