"""Checkpoints out: e2v-export round trips and e2v-extract (batched == one by one, resumable)."""

import argparse
import os

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from emotion2vec_plugin.data.manifest import ManifestError
from emotion2vec_plugin.checkpoint.model_record import ExportFormatError
from emotion2vec_plugin.formats import export_cli as export
from emotion2vec_plugin.formats.load import load_pretrained
from emotion2vec_plugin.inference import extract_cli as extract
from emotion2vec_plugin.models.emotion2vec_model import Emotion2vecConfig, Emotion2vecModel
from tests.helpers import hydra_train, write_corpus


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained for 4 updates by fairseq-hydra-train, and its corpus."""
    root = tmp_path_factory.mktemp("trained")
    data = write_corpus(root / "data", splits=(("train", 12), ("valid", 5)))
    hydra_train(root / "run", data, "optimization.max_update=4")
    return root / "run" / "checkpoints" / "checkpoint_last.pt", data


def trained_model(ckpt_path) -> Emotion2vecModel:
    """The training model exactly as fairseq would rebuild it from the checkpoint."""
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    fields = {k: v for k, v in dict(ckpt["cfg"]["model"]).items() if k in Emotion2vecConfig.__dataclass_fields__}
    model = Emotion2vecModel(Emotion2vecConfig(**fields))
    model.load_state_dict(ckpt["model"])
    return model.eval()


@pytest.mark.parametrize("fmt", ["plugin", "emotion2vec", "funasr"])
def test_export_round_trip_gives_identical_features(tmp_path, trained, fmt):
    ckpt, _ = trained
    where = export.main(argparse.Namespace(checkpoint=str(ckpt), out=str(tmp_path / fmt), format=fmt, random_init=None))
    model, settings = load_pretrained(where)
    assert settings.normalize is True
    assert model.audio.decoder is None
    ref = trained_model(ckpt)
    wav = torch.randn(2, 12000)
    got, want = model.extract_features(wav), ref.extract_features(wav)
    # same fp32 weights through the same code: bit-identical
    torch.testing.assert_close(got["x"], want["x"], rtol=0, atol=0)


def test_plugin_export_has_student_only(tmp_path, trained):
    ckpt, _ = trained
    out = export.main(argparse.Namespace(checkpoint=str(ckpt), out=str(tmp_path / "p"), format="plugin", random_init=None))
    keys = set(load_file(os.path.join(out, "model.safetensors")))
    assert not [k for k in keys if k.startswith("_ema") or ".decoder." in k]
    assert "modality_encoders.AUDIO.extra_tokens" in keys


def test_emotion2vec_export_is_released_layout(tmp_path, trained):
    ckpt, _ = trained
    path = export.main(argparse.Namespace(checkpoint=str(ckpt), out=str(tmp_path / "e"), format="emotion2vec", random_init=None))
    state = torch.load(path, map_location="cpu", weights_only=False)
    assert state["cfg"]["model"]["_name"] == "data2vec_multi"
    assert state["cfg"]["model"]["modalities"]["audio"]["num_extra_tokens"] == 2
    assert "modality_encoders.AUDIO.decoder.proj.weight" in state["model"]  # released checkpoints keep it
    assert not [k for k in state["model"] if k.startswith("_ema")]


def test_loading_an_export_with_a_missing_or_extra_key_names_file_and_key(tmp_path, trained):
    ckpt, _ = trained
    out = export.main(argparse.Namespace(checkpoint=str(ckpt), out=str(tmp_path / "p"), format="plugin", random_init=None))
    weights = os.path.join(out, "model.safetensors")
    state = load_file(weights)
    save_file({k: v for k, v in state.items() if k != "blocks.1.norm2.bias"}, weights)
    with pytest.raises(ExportFormatError, match=r"model\.safetensors: .*missing \['blocks\.1\.norm2\.bias'\]"):
        load_pretrained(out)
    save_file({**state, "blocks.9.norm2.bias": torch.zeros(64)}, weights)
    with pytest.raises(ExportFormatError, match=r"model\.safetensors: .*unexpected \['blocks\.9\.norm2\.bias'\]"):
        load_pretrained(out)


def run_extract(model, manifest, out, **kw):
    args = extract.get_parser().parse_args([str(model), str(manifest), "--out", str(out), "--quiet"])
    for k, v in kw.items():
        setattr(args, k, v)
    return extract.main(args)


def test_batched_extraction_equals_one_by_one(tmp_path, trained):
    ckpt, data = trained
    batched = run_extract(ckpt, data / "valid.tsv", tmp_path / "b", batch_size=5)
    single = run_extract(ckpt, data / "valid.tsv", tmp_path / "s", batch_size=1)
    assert batched["extracted"] == single["extracted"] == 5
    a, b = np.load(tmp_path / "b" / "valid.npy"), np.load(tmp_path / "s" / "valid.npy")
    assert a.shape == b.shape and a.shape[1] == 64
    # padding is exact; the residual is fp32 rounding of differently shaped matmuls
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
    lengths = [int(x) for x in open(tmp_path / "b" / "valid.lengths").read().split()]
    sizes = [int(line.split("\t")[1]) for line in open(data / "valid.tsv").read().splitlines()[1:]]
    assert lengths == [(((((((n - 10) // 5 + 1 - 3) // 2 + 1 - 3) // 2 + 1 - 3) // 2 + 1 - 3) // 2 + 1 - 2) // 2 + 1 - 2) // 2 + 1
                       for n in sizes]
    assert sum(lengths) == a.shape[0]


def test_layer_average_and_utterance_granularity(tmp_path, trained):
    ckpt, data = trained
    run_extract(ckpt, data / "valid.tsv", tmp_path / "l1", layers=[-2])
    run_extract(ckpt, data / "valid.tsv", tmp_path / "l2", layers=[-1])
    run_extract(ckpt, data / "valid.tsv", tmp_path / "avg", layers=[-2, -1])
    run_extract(ckpt, data / "valid.tsv", tmp_path / "utt", layers=[-2, -1], granularity="utterance")
    l1, l2, avg = (np.load(tmp_path / d / "valid.npy") for d in ("l1", "l2", "avg"))
    np.testing.assert_allclose(avg, (l1 + l2) / 2, atol=1e-6)
    utt = np.load(tmp_path / "utt" / "valid.npy")
    assert utt.shape == (5, 64)
    first = int(open(tmp_path / "avg" / "valid.lengths").readline())
    np.testing.assert_allclose(utt[0], avg[:first].mean(axis=0), atol=1e-5)


def test_extraction_resumes_after_interruption(tmp_path, trained):
    ckpt, data = trained
    run_extract(ckpt, data / "valid.tsv", tmp_path / "r")
    full = np.load(tmp_path / "r" / "valid.npy")
    index = open(tmp_path / "r" / "index.tsv").read().splitlines()
    os.remove(tmp_path / "r" / index[2].split("\t")[1])  # as if killed before utterance 3 was written
    again = run_extract(ckpt, data / "valid.tsv", tmp_path / "r")
    assert again["extracted"] == 1
    # the re-extracted utterance now sits alone in its batch: equal up to fp32 batch-shape rounding
    np.testing.assert_allclose(np.load(tmp_path / "r" / "valid.npy"), full, atol=1e-5, rtol=1e-5)


def test_extraction_of_a_manifest_with_a_vanished_file_fails_clearly(tmp_path, trained):
    ckpt, data = trained
    copy = write_corpus(tmp_path / "copy", splits=(("valid", 3),))
    os.remove(copy / "wav" / "valid_001.wav")
    with pytest.raises(ManifestError, match=r"valid\.tsv:3: .*valid_001\.wav does not exist"):
        run_extract(ckpt, copy / "valid.tsv", tmp_path / "x")


def test_bad_layer_index_is_rejected():
    with pytest.raises(ValueError, match=r"--layers 13: the model has blocks 1\.\.12"):
        extract.select_layers(12, [13])


def test_fbank_baseline_uses_the_same_layout(tmp_path, trained):
    _, data = trained
    result = run_extract("fbank", data / "valid.tsv", tmp_path / "fb")
    feats = np.load(tmp_path / "fb" / "valid.npy")
    lengths = [int(x) for x in open(tmp_path / "fb" / "valid.lengths").read().split()]
    sizes = [int(line.split("\t")[1]) for line in open(data / "valid.tsv").read().splitlines()[1:]]
    # Kaldi framing: 25 ms windows (400 samples) every 10 ms (160): 1 + (n - 400) // 160 frames
    assert lengths == [1 + (n - 400) // 160 for n in sizes]
    assert feats.shape == (sum(lengths), 80) and result["layers"] == []
    assert np.isfinite(feats).all()


def test_random_init_export_has_same_architecture_and_fresh_weights(tmp_path, trained):
    ckpt, _ = trained
    rand = export.main(argparse.Namespace(checkpoint=str(ckpt), out=str(tmp_path / "r"), format="plugin", random_init=0))
    model, _ = load_pretrained(rand)
    ref = trained_model(ckpt)
    own = model.state_dict()
    assert set(own) == {k for k in ref.state_dict() if not k.startswith("_ema") and ".decoder." not in k}
    assert not torch.equal(own["blocks.0.mlp.fc1.weight"], ref.state_dict()["blocks.0.mlp.fc1.weight"])
    again = export.main(argparse.Namespace(checkpoint=str(ckpt), out=str(tmp_path / "r2"), format="plugin", random_init=0))
    assert torch.equal(load_pretrained(again)[0].state_dict()["blocks.0.mlp.fc1.weight"], own["blocks.0.mlp.fc1.weight"])
