"""The pretraining dataset: manifest errors, crops, normalisation, dataset-side masks."""

import re

import numpy as np
import pytest
import soundfile as sf
import torch

from emotion2vec_plugin.data.audio_dataset import Emotion2vecAudioDataset
from emotion2vec_plugin.data.manifest import AudioReadError, ManifestError, read_manifest
from emotion2vec_plugin.modules.config import parse_conv_layers

TINY_CONV = parse_conv_layers("[(64, 10, 5)] + [(64, 3, 2)] * 4 + [(64, 2, 2)] * 2")


def test_collater_crops_to_shortest_and_is_deterministic(corpus):
    ds = Emotion2vecAudioDataset(read_manifest(str(corpus / "train.tsv")), max_sample_size=20000, seed=3)
    samples = [ds[i] for i in range(4)]
    shortest = min(min(int(ds.sizes[i]) for i in range(4)), 20000)
    batch = ds.collater(samples)
    assert batch["net_input"]["source"].shape == (4, shortest)
    again = ds.collater([ds[i] for i in range(4)])
    assert torch.equal(batch["net_input"]["source"], again["net_input"]["source"])
    ds.set_epoch(2)  # a new epoch draws new crop offsets
    assert not torch.equal(batch["net_input"]["source"], ds.collater(samples)["net_input"]["source"])
    # each crop is a window of the normalised utterance (zero mean, unit variance over the whole file)
    full = samples[0]["source"]
    assert abs(float(full.mean())) < 1e-5 and abs(float(full.std(unbiased=False)) - 1) < 1e-3


def test_dataset_side_masks_have_model_shape_and_counts(corpus):
    mask_cfg = {"mask_prob": 0.5, "mask_length": 5, "mask_prob_adjust": 0.05, "clone_batch": 3}
    ds = Emotion2vecAudioDataset(read_manifest(str(corpus / "train.tsv")), mask=mask_cfg, conv_layers=TINY_CONV)
    batch = ds.collater([ds[i] for i in range(2)])
    S = batch["net_input"]["source"].shape[1]
    T = int(torch.div(torch.tensor(S) - 400, 320, rounding_mode="floor")) + 1  # same receptive field/stride as base
    mask = batch["net_input"]["precomputed_mask"]
    assert mask.shape == (2 * 3, T)
    assert (mask.sum(dim=1) == int(T * 0.5)).all()


def test_min_sample_size_filters_and_reports(corpus):
    manifest = read_manifest(str(corpus / "train.tsv"))
    ds = Emotion2vecAudioDataset(manifest, min_sample_size=16000)
    assert len(ds) == sum(n >= 16000 for n in manifest.sizes)
    with pytest.raises(ValueError, match="lower task.min_sample_size"):
        Emotion2vecAudioDataset(manifest, min_sample_size=10**9)


def test_manifest_errors_name_file_and_line(tmp_path, corpus):
    bad = tmp_path / "bad.tsv"
    bad.write_text(f"{corpus / 'wav'}\ntrain_000.wav\t100\ntrain_001.wav 200\n")
    with pytest.raises(ManifestError, match=r"bad\.tsv:3: expected 'relative/path<TAB>num_samples'"):
        read_manifest(str(bad))
    bad.write_text("/no/such/root\na.wav\t10\n")
    with pytest.raises(ManifestError, match=r"bad\.tsv:1: audio root '/no/such/root' is not a directory"):
        read_manifest(str(bad))
    bad.write_text(f"{corpus / 'wav'}\ntrain_000.wav\tmany\n")
    with pytest.raises(ManifestError, match=r"bad\.tsv:2: length 'many' is not an integer"):
        read_manifest(str(bad))


def test_bad_files_are_left_out_with_a_warning_and_counted(tmp_path, caplog):
    root = tmp_path / "wav"
    root.mkdir()
    sf.write(root / "a.wav", np.zeros(8000, np.float32), 8000)
    sf.write(root / "b.wav", np.zeros((16000, 2), np.float32), 16000)
    nan = np.random.default_rng(0).standard_normal(16000).astype(np.float32)
    nan[100] = np.nan
    sf.write(root / "c.wav", nan, 16000, subtype="FLOAT")
    sf.write(root / "d.wav", np.zeros(300, np.float32), 16000)
    (root / "e.wav").write_bytes(b"RIFF not really a wave file")
    sf.write(root / "ok.wav", np.random.default_rng(1).standard_normal(16000).astype(np.float32), 16000)
    names = ["a.wav", "b.wav", "c.wav", "d.wav", "e.wav", "ok.wav"]
    (tmp_path / "m.tsv").write_text(f"{root}\n" + "".join(f"{n}\t16000\n" for n in names))
    ds = Emotion2vecAudioDataset(read_manifest(str(tmp_path / "m.tsv")), conv_layers=TINY_CONV)
    with caplog.at_level("WARNING"):
        batch = ds.collater([ds[i] for i in range(len(names))])
    assert batch["bad_files"] == 5 and batch["net_input"]["source"].shape == (1, 16000)
    text = caplog.text
    assert re.search(r"m\.tsv:2: .*a\.wav is 8000 Hz, expected 16000", text)
    assert re.search(r"m\.tsv:3: .*b\.wav has 2 channels", text)
    assert re.search(r"m\.tsv:4: 1 NaN/inf samples", text)
    assert re.search(r"m\.tsv:5: 300 samples is shorter than the CNN needs", text)
    assert re.search(r"m\.tsv:6: cannot read .*e\.wav", text)
    with pytest.raises(AudioReadError, match=r"m\.tsv:2: .*a\.wav is 8000 Hz"):
        ds.read(0)  # the reader itself still raises; the dataset turns it into a skip


def test_task_reports_missing_files_at_start(tmp_path, corpus):
    from omegaconf import OmegaConf

    from emotion2vec_plugin.tasks.emotion2vec_pretraining import Emotion2vecPretrainingTask

    (corpus / "wav" / "train_003.wav").unlink()
    cfg = OmegaConf.create({"data": str(corpus), "sample_rate": 16000, "normalize": True, "max_sample_size": 32000,
                            "min_sample_size": 0, "check_files": True, "precompute_mask": False, "seed": 1})
    task = Emotion2vecPretrainingTask(cfg)
    with pytest.raises(ManifestError, match=r"train\.tsv:5: .*train_003\.wav does not exist"):
        task.load_dataset("train")


def test_collapse_guard_stops_with_a_clear_error():
    from emotion2vec_plugin.models.emotion2vec_model import Emotion2vecModel
    from tests.helpers import tiny_model_cfg

    model = Emotion2vecModel(tiny_model_cfg(collapse_check_after=0, min_target_var=100.0)).train()
    model.set_num_updates(1)
    with pytest.raises(RuntimeError, match=r"collapse at update 1: target std .* < model.min_target_var=100.0"):
        model(torch.randn(2, 8000), id=torch.tensor([0, 1]))
    model = Emotion2vecModel(tiny_model_cfg(collapse_check_after=10, min_target_var=100.0)).train()
    model.set_num_updates(1)
    model(torch.randn(2, 8000), id=torch.tensor([0, 1]))  # not armed yet: no error


def several_corpora_task(tmp_path, weights):
    from omegaconf import OmegaConf

    from emotion2vec_plugin.tasks.emotion2vec_pretraining import Emotion2vecPretrainingTask
    from tests.helpers import write_corpus

    a = write_corpus(tmp_path / "a", splits=(("train", 30), ("valid", 2)), seed=1)
    b = write_corpus(tmp_path / "b", splits=(("train", 10), ("valid", 2)), seed=2)
    return Emotion2vecPretrainingTask(OmegaConf.create({
        "data": f"{a}:{b}", "data_weights": weights, "train_subset": "train", "sample_rate": 16000,
        "normalize": True, "max_sample_size": 32000, "min_sample_size": 0, "check_files": True,
        "precompute_mask": False, "seed": 1, "conv_feature_layers": "[(64, 10, 5)] + [(64, 3, 2)] * 4 + [(64, 2, 2)] * 2"}))


def test_several_corpora_with_sampling_weights(tmp_path):
    t = several_corpora_task(tmp_path, None)  # plain concatenation
    t.load_dataset("train")
    ds = t.datasets["train"]
    assert len(ds) == 40
    # ids are global: corpus b's utterance 0 is id 30, so the two corpora never share a crop/mask seed
    assert [ds[i]["id"] for i in (0, 29, 30, 39)] == [0, 29, 30, 39]
    t = several_corpora_task(tmp_path, "1:3")  # corpus b gets 3/4 of each epoch although it holds 1/4
    t.load_dataset("train")
    ds = t.datasets["train"]
    ds.set_epoch(1)
    counts = ds.corpus_counts()
    assert sum(counts) == 40 and 0.6 < counts[1] / 40 < 0.9
    assert counts == [sum(int(d) < 30 for d in ds.draws), sum(int(d) >= 30 for d in ds.draws)]
    first = ds.draws.copy()
    ds.set_epoch(2)  # new draws every epoch, the same ones whenever epoch 2 comes round again
    assert not np.array_equal(first, ds.draws)
    ds.set_epoch(1)
    assert np.array_equal(first, ds.draws)
    assert not ds.can_reuse_epoch_itr_across_epochs
    # fairseq's batcher is a method of the dataset (ResamplingDataset shadowed it with a bool)
    batches = ds.batch_by_size(ds.ordered_indices(), max_tokens=64000)
    assert sum(len(b) for b in batches) == 40
    assert ds[0]["id"] == int(ds.draws[0])
    t.load_dataset("valid")  # validation is never resampled, and its crops stay fixed
    valid = t.datasets["valid"]
    assert len(valid) == 4 and [valid[i]["id"] for i in range(4)] == [0, 1, 2, 3]
    batch = ds.collater([ds[i] for i in range(3)])
    assert batch["net_input"]["source"].shape[0] == 3
    with pytest.raises(ValueError, match="need 2 non-negative weights"):
        several_corpora_task(tmp_path, "1:2:3").load_dataset("train")


def test_data_folders_are_separated_by_colon_with_a_hint_for_commas(tmp_path):
    from emotion2vec_plugin.tasks.emotion2vec_pretraining import split_data_paths

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert split_data_paths(f"{tmp_path}/a:{tmp_path}/b") == [f"{tmp_path}/a", f"{tmp_path}/b"]
    with pytest.raises(ManifestError, match=r"b' is not a directory \(separate several folders with ':', not ','\)"):
        split_data_paths(f"{tmp_path}/a,{tmp_path}/b")


def test_evaluation_crops_and_masks_do_not_change_with_the_epoch(corpus):
    mask_cfg = {"mask_prob": 0.5, "mask_length": 5, "mask_prob_adjust": 0.05, "clone_batch": 2}
    manifest = read_manifest(str(corpus / "valid.tsv"))
    train = Emotion2vecAudioDataset(manifest, mask=mask_cfg, conv_layers=TINY_CONV)
    valid = Emotion2vecAudioDataset(manifest, mask=mask_cfg, conv_layers=TINY_CONV, vary_with_epoch=False)
    batches = {}
    for name, ds in (("train", train), ("valid", valid)):
        for epoch in (1, 2):
            ds.set_epoch(epoch)
            batches[name, epoch] = ds.collater([ds[i] for i in range(4)])["net_input"]
    for key in ("source", "precomputed_mask"):
        assert not torch.equal(batches["train", 1][key], batches["train", 2][key])
        assert torch.equal(batches["valid", 1][key], batches["valid", 2][key])
    assert train.can_reuse_epoch_itr_across_epochs is False and valid.can_reuse_epoch_itr_across_epochs is True


def test_batch_of_only_bad_files_becomes_a_flagged_placeholder(tmp_path):
    root = tmp_path / "wav"
    root.mkdir()
    (root / "gone.wav").write_bytes(b"")
    (tmp_path / "m.tsv").write_text(f"{root}\ngone.wav\t16000\nalso_gone.wav\t16000\n")
    ds = Emotion2vecAudioDataset(read_manifest(str(tmp_path / "m.tsv")), min_sample_size=4000, conv_layers=TINY_CONV)
    batch = ds.collater([ds[0], ds[1]])
    # a real batch for fairseq (valid dummy batch, a forward on every DDP rank), flagged and counted
    assert batch["all_bad"] is True and batch["bad_files"] == 2
    assert batch["net_input"]["source"].shape == (1, 16000) and not batch["net_input"]["source"].any()
