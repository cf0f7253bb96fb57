"""model.init_from: explicit key mapping from released emotion2vec and data2vec 2.0 layouts.

The source checkpoints are written by fairseq's own data2vec 2.0 model (devtools/reference_data2vec.py),
not by our mapping, and loading is checked by features equal to that model's own."""

import pytest
import torch

from devtools.reference_data2vec import data2vec_config, load_data2vec
from emotion2vec_plugin.checkpoint.convert import CheckpointMismatchError
from emotion2vec_plugin.models.emotion2vec_model import Emotion2vecModel
from tests.helpers import tiny_model_cfg

# fairseq's data2vec2.py calls Module.state_dict with positional arguments
pytestmark = pytest.mark.filterwarnings("ignore:Positional args are being deprecated")

PRENET = "modality_encoders.AUDIO.context_encoder.blocks."


def student_state(seed: int) -> dict:
    torch.manual_seed(seed)
    model = Emotion2vecModel(tiny_model_cfg())
    return {k: v for k, v in model.state_dict().items() if not k.startswith("_ema")}


@pytest.fixture(scope="module")
def d2v(tmp_path_factory):
    return load_data2vec(tmp_path_factory.mktemp("fairseq_data2vec"))


def fairseq_data2vec_model(d2v, seed: int, **shape):
    """fairseq's own ``Data2VecMultiModel`` (examples/data2vec, patched to import) in a tiny shape,
    every weight moved off its init, so its state dict has the layout fairseq itself writes."""
    torch.manual_seed(seed)
    model = d2v.Data2VecMultiModel(data2vec_config(d2v, tiny_model_cfg(**shape)), [d2v.Modality.AUDIO]).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return model


def test_init_from_released_emotion2vec_layout(tmp_path, d2v):
    """A released emotion2vec checkpoint is a data2vec_multi model with a prenet and extra tokens,
    student only: made here by fairseq's own model, loaded by init_from, same features."""
    source_model = fairseq_data2vec_model(d2v, seed=1)  # arch/tiny: 1 prenet + 2 blocks, 2 tokens
    source = {k: v for k, v in source_model.state_dict().items() if k != "_ema"}
    source["proj.weight"] = torch.randn(9, 64)  # emotion2vec+ classifier head: ignored on purpose
    path = tmp_path / "emotion2vec_released.pt"
    torch.save({"cfg": {"model": {"_name": "data2vec_multi"}}, "model": source}, path)
    model = Emotion2vecModel(tiny_model_cfg(init_from=str(path))).eval()
    own = model.state_dict()
    for k, v in source.items():
        if k != "proj.weight":
            assert torch.equal(own[k], v), k
    # no teacher in a released checkpoint: the teacher starts as the loaded student
    assert torch.equal(own["_ema.blocks.0.mlp.fc1.weight"], source["blocks.0.mlp.fc1.weight"])
    wav = torch.nn.functional.layer_norm(torch.randn(1, 8000), (8000,))
    with torch.no_grad():
        torch.testing.assert_close(model.extract_features(wav)["x"], source_model.extract_features(wav)["x"],
                                   atol=1e-5, rtol=1e-5)


def test_init_from_data2vec2_flat_blocks(tmp_path, d2v):
    """data2vec 2.0 audio: no prenet (prenet_depth 0), one flat stack of blocks, no extra tokens, a
    teacher under ``_ema``. Its 3 blocks become our prenet block 0 and main blocks 0..1: same features."""
    source_model = fairseq_data2vec_model(d2v, seed=2, prenet_depth=0, depth=3, num_utterance_tokens=0)
    state = source_model.state_dict()
    assert "_ema" in state and not any(PRENET in k for k in state) and "blocks.2.mlp.fc1.weight" in state
    path = tmp_path / "data2vec2.pt"
    torch.save({"model": state}, path)
    cfg = tiny_model_cfg(init_from=str(path), num_utterance_tokens=0, utterance_mode="global")
    model = Emotion2vecModel(cfg).eval()
    own = model.state_dict()
    assert torch.equal(own[PRENET + "0.attn.qkv.weight"], state["blocks.0.attn.qkv.weight"])
    assert torch.equal(own["blocks.1.mlp.fc2.bias"], state["blocks.2.mlp.fc2.bias"])
    wav = torch.nn.functional.layer_norm(torch.randn(1, 8000), (8000,))
    with torch.no_grad():
        torch.testing.assert_close(model.extract_features(wav)["x"], source_model.extract_features(wav)["x"],
                                   atol=1e-5, rtol=1e-5)
    # with utterance tokens (absent from data2vec 2.0) they are initialised fresh, the rest loaded
    torch.manual_seed(123)
    with_tokens = Emotion2vecModel(tiny_model_cfg(init_from=str(path))).state_dict()
    assert with_tokens["modality_encoders.AUDIO.extra_tokens"].shape == (1, 2, 64)
    assert torch.equal(with_tokens["blocks.0.norm1.weight"], state["blocks.1.norm1.weight"])


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
