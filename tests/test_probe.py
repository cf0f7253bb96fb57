"""e2v-probe and its feature readers: learns a separable task, stays at chance on shuffled labels,
is deterministic and padding-exact, and rejects inconsistent inputs with errors that say where."""

import json

import numpy as np
import pytest
import torch

from emotion2vec_plugin.data.feature_store import (
    FeatureFormatError,
    FeatureSet,
    load_features,
    save_feature_dir,
    save_stacked,
)
from emotion2vec_plugin.data.label_files import LabelFileError, read_column_file
from emotion2vec_plugin.evaluation import mlp_probe, probe_cli
from emotion2vec_plugin.evaluation.standardize import input_stats

CLASSES = ("ang", "hap", "neu", "sad")
FAST = ["--epochs", "25", "--patience", "5", "--hidden", "64", "--quiet"]


@pytest.fixture(autouse=True)
def one_torch_thread():
    """The probe's tensors here are tiny: extra intra-op threads only add synchronisation, which
    costs orders of magnitude on a loaded 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def synthetic_task(seed: int = 0, dim: int = 16, groups: int = 3, per_class: int = 15):
    """4 classes x 3 groups x 15 utterances (60 per group) of 5-30 frames [T, dim]; frames are
    N(class mean, 1) with class means ~N(0, 1.5^2): separable from the utterance mean."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(len(CLASSES), dim)) * 1.5
    feats, labels, group_keys = [], [], []
    for g in range(groups):
        for c, name in enumerate(CLASSES):
            for _ in range(per_class):
                T = int(rng.integers(5, 31))
                feats.append((centers[c] + rng.normal(size=(T, dim))).astype(np.float32))
                labels.append(name)
                group_keys.append(f"spk{g}")
    return feats, labels, group_keys


def write_task(tmp_path, feats, labels, groups):
    """Stacked features + label and group files; returns their paths as strings."""
    save_stacked(feats, str(tmp_path / "feats" / "train"))
    (tmp_path / "train.emo").write_text("".join(f"{v}\n" for v in labels))
    (tmp_path / "train.group").write_text("".join(f"{v}\n" for v in groups))
    return str(tmp_path / "feats" / "train"), str(tmp_path / "train.emo"), str(tmp_path / "train.group")


def run_probe(features, labels, groups, *extra):
    args = probe_cli.get_parser().parse_args([features, labels, "--groups", groups, *FAST, *extra])
    return probe_cli.main(args)


def test_separable_task_is_learned(tmp_path):
    result = run_probe(*write_task(tmp_path, *synthetic_task()))
    assert [f["group"] for f in result["folds"]] == ["spk0", "spk1", "spk2"]
    assert result["summary"]["WA"]["mean"] > 0.95
    assert result["summary"]["UA"]["mean"] > 0.95
    assert result["labels"] == sorted(CLASSES)
    for fold in result["folds"]:
        # 20% of the 120 training-fold utterances go to validation, stratified: 6 per class
        assert (fold["n_train"], fold["n_valid"], fold["n_test"]) == (96, 24, 60)
        assert np.sum(fold["confusion"]["matrix"]) == 60
    assert np.sum(result["confusion_total"]["matrix"]) == 180


def test_shuffled_labels_stay_near_chance(tmp_path):
    feats, labels, groups = synthetic_task()
    labels = list(np.random.default_rng(1).permutation(labels))
    result = run_probe(*write_task(tmp_path, feats, labels, groups))
    assert result["summary"]["WA"]["mean"] < 0.45  # chance is 0.25 for 4 balanced classes


def test_same_seed_same_metrics_different_seed_differs(tmp_path):
    paths = write_task(tmp_path, *synthetic_task(dim=8))
    a, b = (run_probe(*paths, "--seed", "3", "--optimizer", "adam", "--epochs", "4") for _ in range(2))
    c = run_probe(*paths, "--seed", "4", "--optimizer", "adam", "--epochs", "4")
    assert json.dumps(a["folds"]) == json.dumps(b["folds"])
    assert json.dumps(a["folds"]) != json.dumps(c["folds"])


def test_probe_output_alone_equals_output_inside_padded_batch():
    model = mlp_probe.UtteranceProbe(8, 3, hidden=32)
    model.set_input_stats(np.full(8, 0.5), np.full(8, 2.0))  # padding then maps to non-zero inputs
    arrays = [np.random.default_rng(i).normal(size=(n, 8)).astype(np.float32) for i, n in enumerate((4, 11, 1, 6))]
    x, mask = mlp_probe.pad_batch(arrays)
    assert x.shape == (4, 11, 8) and mask.shape == (4, 11) and int((~mask).sum()) == 22
    with torch.no_grad():
        batched = model(x, mask)
        for i, a in enumerate(arrays):
            alone = model(torch.from_numpy(a)[None])
            torch.testing.assert_close(batched[i], alone[0], atol=1e-6, rtol=0)


def test_packed_batches_equal_padded_batches_cached_or_not():
    """Training and scoring run on unpadded batches (FoldFrames + forward_packed): the logits must
    equal the padded forward's on the raw features, and the frames must be the same whether the
    fold's standardised frames are cached in one tensor or read batch by batch."""
    arrays = [np.random.default_rng(i).normal(2.0, 3.0, size=(n, 8)).astype(np.float32)
              for i, n in enumerate((4, 11, 1, 6, 9))]
    feats = FeatureSet.from_arrays(arrays)
    mean, std = input_stats(feats, [0, 1, 3])
    model = mlp_probe.UtteranceProbe(8, 3, hidden=32)
    model.set_input_stats(mean, std)
    cached, streamed = mlp_probe.FoldFrames(feats, mean, std), mlp_probe.FoldFrames(feats, mean, std, cache_bytes=0)
    assert cached.cache is not None and cached.cache.shape == (31, 8) and streamed.cache is None
    utts = [3, 0, 4]  # out of order: a batch is a random draw of the fold's utterances
    (xa, sa, ca), (xb, sb, cb) = cached.batch(utts), streamed.batch(utts)
    torch.testing.assert_close(xa, xb, atol=0, rtol=0)
    assert sa.tolist() == [0] * 6 + [1] * 4 + [2] * 9 and ca.tolist() == [6.0, 4.0, 9.0]
    assert torch.equal(sb, sa) and torch.equal(cb, ca)
    torch.testing.assert_close(xa[6:10], (torch.from_numpy(arrays[0]) - model.input_mean) / model.input_std,
                               atol=0, rtol=0)
    x, mask = mlp_probe.pad_batch([arrays[i] for i in utts])
    with torch.no_grad():
        torch.testing.assert_close(model.forward_packed(xa, sa, ca), model(x, mask), atol=1e-6, rtol=1e-6)
        logits = mlp_probe.predict_logits(model, cached, np.array(utts), 2, torch.device("cpu"))
        torch.testing.assert_close(logits, model(x, mask), atol=1e-6, rtol=1e-6)


def test_stacked_and_directory_formats_read_the_same(tmp_path):
    feats, _, _ = synthetic_task(per_class=2)
    save_stacked(feats, str(tmp_path / "s" / "x"))
    names = [f"sess1/utt{i}.wav" for i in range(len(feats))]
    save_feature_dir(feats, names, str(tmp_path / "d"))
    stacked, directory = load_features(str(tmp_path / "s" / "x.npy")), load_features(str(tmp_path / "d"))
    assert len(stacked) == len(directory) == len(feats) and stacked.dim == directory.dim == 16
    assert directory.names == names and stacked.names is None
    for a, b, ref in zip(stacked, directory, feats):
        np.testing.assert_array_equal(a, ref)
        np.testing.assert_array_equal(b, ref)
    # utterance-level: a 2-D PREFIX.npy without lengths file is one row per utterance
    np.save(tmp_path / "utt.npy", np.ones((5, 3), np.float32))
    assert list(load_features(str(tmp_path / "utt")).lengths) == [1] * 5


def test_label_count_mismatch_names_both_files_and_counts(tmp_path):
    feats, labels, groups = synthetic_task()
    paths = write_task(tmp_path, feats, labels[:-1], groups[:-1])
    with pytest.raises(mlp_probe.ProbeInputError, match=r"train\.emo has 179 labels but .*train holds 180 utterances"):
        run_probe(*paths)
    (tmp_path / "train.group").write_text("".join(f"{v}\n" for v in groups))
    with pytest.raises(mlp_probe.ProbeInputError, match=r"train\.emo has 179 labels but .*train\.group has 180 groups"):
        run_probe(*paths)


def test_single_group_is_rejected(tmp_path):
    feats, labels, groups = synthetic_task(per_class=3)
    with pytest.raises(mlp_probe.ProbeInputError, match=r"needs >= 2 groups"):
        run_probe(*write_task(tmp_path, feats, labels, ["spk0"] * len(groups)))


def test_directory_missing_an_utterance_names_it_and_the_line(tmp_path):
    save_feature_dir([np.zeros((3, 4), np.float32)] * 3, ["a.wav", "b.wav", "c.wav"], str(tmp_path / "d"))
    (tmp_path / "d" / "npy" / "b.npy").unlink()
    with pytest.raises(FeatureFormatError, match=r"index\.tsv:2: features of utterance 'b\.wav' missing: .*b\.npy"):
        load_features(str(tmp_path / "d"))


def test_directory_dim_mismatch_is_rejected(tmp_path):
    save_feature_dir([np.zeros((3, 4), np.float32), np.zeros((2, 5), np.float32)], ["a", "b"], str(tmp_path / "d"))
    with pytest.raises(FeatureFormatError, match=r"index\.tsv:2 .*feature dim 5 but expected 4"):
        load_features(str(tmp_path / "d"))


def test_lengths_that_do_not_sum_to_rows_are_rejected(tmp_path):
    feats, _, _ = synthetic_task(per_class=2)
    prefix = str(tmp_path / "x")
    save_stacked(feats, prefix)
    lengths = (tmp_path / "x.lengths").read_text().split()
    (tmp_path / "x.lengths").write_text("\n".join(lengths[:-1]) + "\n")  # last utterance's frames unclaimed
    with pytest.raises(FeatureFormatError, match=r"x\.lengths:23: .*sum to \d+ frames but .*x\.npy has \d+ rows"):
        load_features(prefix)
    (tmp_path / "x.lengths").write_text("\n".join(lengths + ["7"]) + "\n")  # one utterance too many
    with pytest.raises(FeatureFormatError, match=r"x\.lengths:25: utterance 25 ends at frame \d+, past the end"):
        load_features(prefix)


def test_missing_lengths_file_is_recognised(tmp_path):
    feats, _, _ = synthetic_task(per_class=2)
    save_stacked(feats, str(tmp_path / "x"))
    (tmp_path / "x.lengths").unlink()
    with pytest.raises(FeatureFormatError, match=r"x\.lengths: not found, and .* rows where 24 utterances"):
        load_features(str(tmp_path / "x"), expected_utterances=24)


def test_cli_writes_json_table_and_plots(tmp_path, capsys):
    features, labels, groups = write_task(tmp_path, *synthetic_task())
    out = tmp_path / "probe" / "results.json"
    plots = ["--plot", str(tmp_path / "probe" / "tsne.png"), "--confusion-plot", str(tmp_path / "probe" / "cm.png")]
    probe_cli.cli_main([features, labels, "--groups", groups, *FAST, "--out", str(out), *plots])
    saved = json.loads(out.read_text())
    assert saved["config"]["optimizer"] == "rmsprop" and saved["labels"] == sorted(CLASSES)
    assert set(saved["summary"]) == {"WA", "UA", "macro_f1", "weighted_f1"} and saved["num_utterances"] == 180
    assert saved["folds"][0]["confusion"]["labels"] == sorted(CLASSES)
    for name in ("tsne.png", "cm.png"):
        assert (tmp_path / "probe" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = capsys.readouterr().out
    assert "spk1" in table and "mean ± std" in table
    with pytest.raises(SystemExit, match=r"e2v-probe: error: .*x\.npy: not found"):
        probe_cli.cli_main([str(tmp_path / "x"), labels, "--groups", groups, "--quiet"])


def test_label_file_layouts(tmp_path):
    (tmp_path / "plain.emo").write_text("neu\nvery happy\n\n")
    assert read_column_file(str(tmp_path / "plain.emo"), "labels") == ["neu", "very happy"]
    (tmp_path / "official.emo").write_text("Ses01F_impro01_F000\tneu\nSes01F_impro01_F001\thap\n")
    assert read_column_file(str(tmp_path / "official.emo"), "labels") == ["neu", "hap"]
    (tmp_path / "gap.emo").write_text("neu\n\nhap\n")
    with pytest.raises(LabelFileError, match=r"gap\.emo:2: expected one label"):
        read_column_file(str(tmp_path / "gap.emo"), "labels")
