"""e2v-probe: separable task near 100%, shuffled labels near chance, determinism, padding, bad input."""

import json
import os

import numpy as np
import pytest
import torch

from emotion2vec_plugin.downstream import probe
from emotion2vec_plugin.downstream.features import FeatureFormatError, load_features
from emotion2vec_plugin.downstream.extract import write_stacked


def synthetic(tmp_path, shuffle=False, seed=0):
    """4 classes x 3 speakers x 15 utterances of 5-30 frames, D=16, class-dependent mean."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(4, 16)) * 1.5
    feats, labels, groups = [], [], []
    for g in range(3):
        for c in range(4):
            for _ in range(15):
                T = int(rng.integers(5, 30))
                feats.append((centers[c] + rng.normal(size=(T, 16))).astype(np.float32))
                labels.append(f"class{c}")
                groups.append(f"spk{g}")
    if shuffle:
        labels = list(rng.permutation(labels))
    paths = []
    for i, f in enumerate(feats):
        paths.append(str(tmp_path / f"u{i}.npy"))
        np.save(paths[-1], f)
    write_stacked(paths, str(tmp_path / "feats"))
    (tmp_path / "labels.emo").write_text("\n".join(labels) + "\n")
    (tmp_path / "groups.txt").write_text("\n".join(groups) + "\n")
    return tmp_path / "feats", tmp_path / "labels.emo", tmp_path / "groups.txt"


def run(tmp_path, feats, labels, groups, *extra):
    args = probe.get_parser().parse_args([str(feats), str(labels), "--groups", str(groups), "--epochs", "30",
                                          "--patience", "5", "--quiet", *extra])
    return probe.main(args)


def test_separable_task_scores_near_perfect(tmp_path):
    result = run(tmp_path, *synthetic(tmp_path), "--out", str(tmp_path / "r.json"))
    assert len(result["folds"]) == 3
    assert result["summary"]["WA"]["mean"] > 0.95 and result["summary"]["UA"]["mean"] > 0.95
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["summary"] == result["summary"] and saved["labels"] == ["class0", "class1", "class2", "class3"]
    assert np.sum(saved["confusion_total"]) == 180


def test_shuffled_labels_score_near_chance(tmp_path):
    result = run(tmp_path, *synthetic(tmp_path, shuffle=True))
    assert result["summary"]["WA"]["mean"] < 0.45  # chance is 0.25 for 4 balanced classes


def test_same_seed_same_result(tmp_path):
    a = run(tmp_path, *synthetic(tmp_path), "--seed", "3")
    b = run(tmp_path, *synthetic(tmp_path), "--seed", "3")
    assert a["folds"] == b["folds"]


def test_probe_output_alone_equals_inside_padded_batch():
    torch.manual_seed(0)
    model = probe.UtteranceProbe(8, 3)
    arrays = [np.random.default_rng(i).normal(size=(n, 8)).astype(np.float32) for i, n in enumerate((4, 9, 6))]
    x, mask = probe.pad_batch(arrays)
    batched = model(x, mask)
    for i, a in enumerate(arrays):
        alone = model(torch.from_numpy(a)[None])
        torch.testing.assert_close(batched[i], alone[0], atol=1e-6, rtol=1e-6)


def test_label_count_mismatch_is_a_clear_error(tmp_path):
    feats, labels, groups = synthetic(tmp_path)
    labels.write_text("\n".join(labels.read_text().split()[:-1]) + "\n")
    with pytest.raises(probe.ProbeInputError, match=r"labels\.emo has 179 labels but .*feats holds 180 utterances"):
        run(tmp_path, feats, labels, groups)


def test_lengths_that_do_not_sum_to_rows_are_rejected(tmp_path):
    feats, _, _ = synthetic(tmp_path)
    lines = (tmp_path / "feats.lengths").read_text().split()
    (tmp_path / "feats.lengths").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(FeatureFormatError, match=r"feats\.lengths: lengths sum to \d+ frames but .*feats\.npy has \d+ rows"):
        load_features(str(feats))


def test_features_dir_missing_an_utterance_names_it(tmp_path):
    os.makedirs(tmp_path / "d" / "npy")
    for name in ("a", "b"):
        np.save(tmp_path / "d" / "npy" / f"{name}.npy", np.zeros((3, 4), np.float32))
    (tmp_path / "d" / "index.tsv").write_text("a.wav\tnpy/a.npy\nb.wav\tnpy/b.npy\nc.wav\tnpy/c.npy\n")
    with pytest.raises(FeatureFormatError, match=r"index\.tsv:3: features of utterance 'c\.wav' missing"):
        load_features(str(tmp_path / "d"))


def test_cli_writes_json_and_plots(tmp_path):
    feats, labels, groups = synthetic(tmp_path)
    run(tmp_path, feats, labels, groups, "--out", str(tmp_path / "out" / "r.json"), "--plot", str(tmp_path / "tsne.png"),
        "--confusion-plot", str(tmp_path / "cm.png"), "--optimizer", "rmsprop")
    for name in ("out/r.json", "tsne.png", "cm.png"):
        assert (tmp_path / name).stat().st_size > 1000
