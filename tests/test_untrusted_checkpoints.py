"""Checkpoints from model hubs: weights_only loading with fairseq's config classes allowed.

A checkpoint whose pickle would write a file is refused by every entry point and writes
nothing; the released emotion2vec layout, the data2vec 2.0 layout (both with an omegaconf
``cfg``, as fairseq writes them) and our own training checkpoints load with ``weights_only``.
"""

import argparse
import os
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig, OmegaConf

from emotion2vec_plugin.checkpoint.convert import read_state_dict
from emotion2vec_plugin.checkpoint.safe_load import (ALLOWED_NAMES, CheckpointReadError, UntrustedCheckpointError,
                                                     load_checkpoint)
from emotion2vec_plugin.checkpoint.fairseq_checkpoint import read_fairseq_checkpoint
from emotion2vec_plugin.checkpoint.released_config import encoder_to_released_config
from emotion2vec_plugin.formats import export_cli as export
from emotion2vec_plugin.formats.load import load_pretrained
from emotion2vec_plugin.inference import extract_cli as extract
from emotion2vec_plugin.models.emotion2vec_model import Emotion2vecModel
from emotion2vec_plugin.modules.config import student_config_from
from tests.helpers import hydra_train, tiny_model_cfg, write_corpus
from tests.test_checkpoint_init import PRENET, student_state

# written by omegaconf 2.0.6 (the version fairseq 0.12 pins, so the one released checkpoints were
# pickled with): {"cfg": OmegaConf.create(<released emotion2vec base cfg>), "model": {"w": arange(4)}}
OMEGACONF_206 = Path(__file__).parent / "data" / "released_cfg_omegaconf_2.0.6.pt"


class WritesAFile:
    """Unpickling this runs ``open(marker, 'w').write('ran')``."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


def to_data2vec_layout(state: dict, prenet_depth: int) -> dict:
    """data2vec 2.0 audio base: one flat stack blocks.0..N-1, no utterance tokens, the teacher under _ema."""
    out = {}
    for k, v in state.items():
        if k.startswith(PRENET):
            i, rest = k[len(PRENET):].split(".", 1)
            out[f"blocks.{i}.{rest}"] = v
        elif k.startswith("blocks."):
            i, rest = k[len("blocks."):].split(".", 1)
            out[f"blocks.{int(i) + prenet_depth}.{rest}"] = v
        elif not k.endswith("extra_tokens"):
            out[k] = v
    out["_ema"] = {"blocks.0.norm1.weight": torch.ones(3)}
    return out


def released_cfg() -> DictConfig:
    """A released emotion2vec / data2vec_multi cfg as fairseq stores it (an omegaconf DictConfig)."""
    enc = student_config_from(tiny_model_cfg())
    return OmegaConf.create({
        "common": {"seed": 1}, "optimization": {"max_update": 100000, "lr": [7.5e-5]},
        "task": {"_name": "audio_pretraining", "normalize": True, "sample_rate": 16000},
        "model": {"_name": "data2vec_multi", **encoder_to_released_config(enc, {})},
    })


@pytest.fixture
def malicious(tmp_path):
    """A released-layout checkpoint (loads otherwise) whose pickle writes ``marker`` when loaded."""
    marker = tmp_path / "code_ran"
    path = tmp_path / "hub_download.pt"
    torch.save({"cfg": released_cfg(), "model": student_state(seed=1), "extra": WritesAFile(marker)}, path)
    return path, marker


def test_the_malicious_checkpoint_really_runs_code_when_fully_unpickled(malicious):
    path, marker = malicious
    torch.load(path, weights_only=False)  # the negative control: the payload is real
    assert marker.read_text() == "ran"


def _entry_points(path: Path, tmp_path: Path):
    """Every way a user hands this package a checkpoint file."""
    corpus = write_corpus(tmp_path / "corpus", splits=(("train", 2),))
    funasr = tmp_path / "funasr"
    funasr.mkdir()
    (funasr / "config.yaml").write_text("model: Emotion2vec\nmodel_conf: {}\n")
    (funasr / "model.pt").write_bytes(path.read_bytes())
    return {
        "read_state_dict": lambda: read_state_dict(str(path)),
        "model.init_from": lambda: Emotion2vecModel(tiny_model_cfg(init_from=str(path))),
        "read_fairseq_checkpoint": lambda: read_fairseq_checkpoint(str(path)),
        "load_pretrained(file)": lambda: load_pretrained(str(path)),
        "load_pretrained(funasr model.pt)": lambda: load_pretrained(str(funasr)),
        "e2v-export": lambda: export.cli_main([str(path), "--out", str(tmp_path / "out")]),
        "e2v-extract": lambda: extract.cli_main([str(path), str(corpus / "train.tsv"), "--out", str(tmp_path / "f"),
                                                 "--quiet"]),
    }


def test_every_entry_point_refuses_it_and_runs_nothing(malicious, tmp_path, capsys):
    path, marker = malicious
    for name, load in _entry_points(path, tmp_path).items():
        with pytest.raises((UntrustedCheckpointError, SystemExit)) as info:
            load()
        message = capsys.readouterr().err if info.type is not UntrustedCheckpointError else str(info.value)
        if info.type is SystemExit:
            assert info.value.code == 2, name
        expected = "funasr/model.pt" if "funasr" in name else "hub_download.pt"
        assert expected in message and "builtins.exec" in message, (name, message)
        assert "--trust-checkpoint" in message, name  # says how to load it anyway
        assert not marker.exists(), f"{name} ran the checkpoint's code"
    # the fairseq-hydra-train path (model.init_from in a real run) is in tests/test_bad_input.py


def test_legacy_format_payload_is_refused_too(tmp_path):
    marker = tmp_path / "code_ran"
    path = tmp_path / "legacy.pt"
    torch.save({"model": {"w": torch.zeros(2)}, "x": WritesAFile(marker)}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(UntrustedCheckpointError, match=r"legacy\.pt: refused .*exec"):
        load_checkpoint(str(path))
    assert not marker.exists()


def test_a_harmless_class_outside_the_allow_list_is_refused_by_name(tmp_path):
    path = tmp_path / "old_fairseq.pt"
    torch.save({"args": argparse.Namespace(arch="wav2vec2"), "model": {"w": torch.zeros(1)}}, path)
    with pytest.raises(UntrustedCheckpointError, match=r"old_fairseq\.pt: refused to load: its pickle refers to "
                                                       r"argparse\.Namespace"):
        load_checkpoint(str(path))


def test_trust_checkpoint_loads_it_with_a_warning_and_runs_it(malicious, caplog):
    path, marker = malicious
    state = read_state_dict(str(path), trust=True)
    assert "blocks.0.mlp.fc1.weight" in state
    assert marker.exists()  # what the flag is for: the user vouched for the file
    assert "runs any code the file holds" in caplog.text


def test_released_and_data2vec_layouts_load_weights_only(tmp_path):
    source = student_state(seed=5)
    released = tmp_path / "emotion2vec_base.pt"
    torch.save({"cfg": released_cfg(), "model": source}, released)
    d2v = tmp_path / "data2vec2_base.pt"
    torch.save({"cfg": released_cfg(), "model": to_data2vec_layout(source, prenet_depth=1)}, d2v)
    for path in (released, d2v):
        # the cfg really pickles omegaconf classes, and only allowed ones
        found = set(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
        assert "omegaconf.dictconfig.DictConfig" in found and found <= ALLOWED_NAMES
        ckpt = load_checkpoint(str(path))
        assert isinstance(ckpt["cfg"], DictConfig) and ckpt["cfg"].model._name == "data2vec_multi"
        model = Emotion2vecModel(tiny_model_cfg(init_from=str(path)))
        assert torch.equal(model.state_dict()["blocks.0.mlp.fc1.weight"], source["blocks.0.mlp.fc1.weight"])
    encoder, settings = load_pretrained(str(released))  # released layout, for feature extraction
    assert torch.equal(encoder.state_dict()["blocks.1.attn.qkv.weight"], source["blocks.1.attn.qkv.weight"])


def test_a_cfg_pickled_by_omegaconf_2_0_6_loads_weights_only():
    ckpt = load_checkpoint(str(OMEGACONF_206))
    assert isinstance(ckpt["cfg"], DictConfig)
    assert ckpt["cfg"].model._name == "data2vec_multi" and ckpt["cfg"].model.modalities.audio.prenet_depth == 4
    assert torch.equal(ckpt["model"]["w"], torch.arange(4.0))


@pytest.mark.slow
def test_our_training_checkpoint_loads_weights_only(tmp_path):
    data = write_corpus(tmp_path / "data", splits=(("train", 8), ("valid", 2)))
    hydra_train(tmp_path / "run", data, "optimization.max_update=3", "checkpoint.save_interval_updates=0")
    ckpt = tmp_path / "run" / "checkpoints" / "checkpoint_last.pt"
    # fairseq 0.12 stores cfg as plain containers: nothing beyond torch's own allow-list
    assert torch.serialization.get_unsafe_globals_in_checkpoint(str(ckpt)) == []
    state = load_checkpoint(str(ckpt))
    model = Emotion2vecModel(tiny_model_cfg(init_from=str(ckpt)))
    for key in ("blocks.0.mlp.fc1.weight", "_ema.blocks.0.mlp.fc1.weight"):
        assert torch.equal(model.state_dict()[key], state["model"][key]), key
    out = export.main(argparse.Namespace(checkpoint=str(ckpt), out=str(tmp_path / "export"), format="plugin",
                                         random_init=None, trust_checkpoint=False))
    encoder, _ = load_pretrained(out)
    assert torch.equal(encoder.state_dict()["blocks.0.mlp.fc1.weight"], state["model"]["blocks.0.mlp.fc1.weight"])


def test_file_problems_name_the_file_and_the_fix(tmp_path):
    good = tmp_path / "good.pt"
    torch.save({"model": student_state(seed=1)}, good)
    data = good.read_bytes()
    cases = {
        "missing.pt": (None, "no such file"),
        "folder": ("dir", "is a directory, expected a checkpoint file"),
        "empty.pt": (b"", r"is empty \(0 bytes\)"),
        "random.pt": (os.urandom(4096), "is not a PyTorch checkpoint"),
        "truncated.pt": (data[: len(data) // 2], r"is truncated .*fetch the file again"),
        "text.pt": (b"<html>404 not found</html>", r"is not a PyTorch checkpoint \(it starts with b'<html>4"),
    }
    for name, (content, pattern) in cases.items():
        path = tmp_path / name
        if content == "dir":
            path.mkdir()
        elif content is not None:
            path.write_bytes(content)
        with pytest.raises(CheckpointReadError, match=rf"{name}: {pattern}"):
            load_checkpoint(str(path))
