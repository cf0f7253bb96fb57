"""The paper's corpora and EmoBox from their public layouts: media via PyAV, spans, official folds, bad input."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from emotion2vec_plugin.cli import InputErrorExit
from emotion2vec_plugin.data.labelled_split import read_labelled_split
from emotion2vec_plugin.data.manifest import read_manifest
from manifests import audio_manifest, labels
from tests import corpus_layouts as layouts
from tests.test_labels import IEMOCAP_ROWS, iemocap_corpus


def run_labels(dataset, root, dest, *extra):
    args = labels.get_parser().parse_args([dataset, str(root), "--dest", str(dest), "--split", "x", "--quiet", *extra])
    return labels.main(args)


def read_split(dest: Path, name: str = "x"):
    manifest = read_manifest(str(dest / f"{name}.tsv"))
    emo = (dest / f"{name}.emo").read_text(encoding="utf-8").splitlines()
    group = (dest / f"{name}.group").read_text(encoding="utf-8").splitlines()
    assert len(manifest) == len(emo) == len(group)
    for i in range(len(manifest)):
        info = sf.info(manifest.full_path(i))
        assert (info.samplerate, info.channels, info.frames) == (16000, 1, manifest.sizes[i])
    return manifest, emo, group


def check_folds(dest: Path, n_folds: int, with_valid: bool, name: str = "x"):
    """Every fold file's rows are rows of the main split with the same label; returns {fold: {role: [names]}}."""
    main, emo, _ = read_split(dest, name)
    label_of = dict(zip(main.names, emo))
    folds = sorted(os.listdir(dest / f"{name}.folds"))
    assert folds == [f"fold_{k}" for k in range(1, n_folds + 1)]
    out = {}
    for fold in folds:
        folder = dest / f"{name}.folds" / fold
        roles = {p.stem for p in folder.glob("*.tsv")}
        assert roles == ({"train", "valid", "test"} if with_valid else {"train", "test"})
        out[fold] = {}
        for role in roles:
            split = read_labelled_split(str(folder), role)
            assert split.manifest.root == main.root
            assert all(label_of[n] == lab for n, lab in zip(split.manifest.names, split.labels))
            out[fold][role] = list(split.manifest.names)
        assert not set(out[fold]["train"]) & set(out[fold]["test"])
    return out


def test_manifest_finds_and_converts_compressed_media(tmp_path):
    root, out, dest = tmp_path / "media", tmp_path / "mirror", tmp_path / "m"
    x = layouts.tone(0.5, 48000, 300.0, amp=0.3)
    layouts.write_aac(root / "a" / "opposite.mp4", np.stack([x, -x]), 48000)  # mean of L and -L is silence
    layouts.write_aac(root / "a" / "six.m4a", np.stack([x] + [0 * x] * 5), 48000)
    layouts.write_aac(root / "b" / "mono16k.mp4", x[None, ::3].copy(), 16000)
    layouts.write_aac(root / "train" / "dia125_utt3.mp4", np.stack([x, x]), 48000)
    layouts.without_moov(root / "train" / "dia125_utt3.mp4")
    (root / "b" / "zero.m4a").write_bytes(b"")
    layouts.write_av(root / "c" / "opus.webm", "libopus", x, 48000)  # 0.5 s each
    layouts.write_av(root / "c" / "pcm.avi", "pcm_s16le", x, 44100)
    layouts.write_wav(root / "b" / "plain.wav", 0.3)
    argv = [str(root), "--dest", str(dest), "--valid-percent", "0", "--quiet"]
    without = audio_manifest.main(audio_manifest.get_parser().parse_args(argv))
    assert without["kept"] == 1 and without["skipped"] == {"unreadable": 1, "empty": 1, "needs resampling": 5}
    summary = audio_manifest.main(audio_manifest.get_parser().parse_args(argv + ["--resample-to", str(out)]))
    assert (summary["found"], summary["kept"], summary["converted"], summary["downmixed"]) == (8, 6, 5, 4)
    skipped = {line.split("\t")[0]: line.split("\t") for line in (dest / "skipped.tsv").read_text().splitlines()}
    nomoov = skipped[str(root / "train" / "dia125_utt3.mp4")]
    assert nomoov[1] == "unreadable" and "moov atom not found" in nomoov[2]
    assert skipped[str(root / "b" / "zero.m4a")][1] == "empty"
    opposite, _ = sf.read(out / "a" / "opposite.wav")
    six, _ = sf.read(out / "a" / "six.wav")
    steady = slice(3000, 6000)  # away from the AAC priming and the end
    rms = lambda a: float(np.sqrt(np.mean(a[steady] ** 2)))  # noqa: E731
    assert rms(opposite) < 0.01 * 0.3 / np.sqrt(2)  # the mean of x and -x, not a left-channel pick
    assert rms(six) == pytest.approx(0.3 / 6 / np.sqrt(2), rel=0.1)  # mean of 6 channels, one of them x
    assert not list(out.rglob("*.tmp*"))
    again = audio_manifest.main(audio_manifest.get_parser().parse_args(argv + ["--resample-to", str(out)]))
    assert (again["converted"], again["reused"]) == (5, 5)
    assert abs(sf.info(out / "c" / "opus.wav").frames - 8000) < 400  # 0.5 s, give or take the codec's padding
    assert abs(sf.info(out / "c" / "pcm.wav").frames - int(len(x) / 44100 * 16000)) < 400
    assert (dest / "train.tsv").read_text().splitlines()[1:] == sorted(
        (dest / "train.tsv").read_text().splitlines()[1:])


def test_meld_from_its_raw_layout(tmp_path):
    for style in (False, True):
        root, dest = tmp_path / f"MELD.Raw{int(style)}", tmp_path / f"labels{int(style)}"
        expect = layouts.meld_tree(root, emobox_style=style)
        summary = run_labels("meld", root, dest, "--resample-to", str(tmp_path / f"mirror{int(style)}"))
        manifest, emo, group = read_split(dest)
        assert len(manifest) == expect["kept"] == summary["utterances"]
        assert summary["downmixed"] == expect["kept"] and summary["skipped"] == {"unreadable": 1}
        assert "moov atom not found" in (dest / "x.skipped.tsv").read_text()
        unmatched = (dest / "x.unmatched.tsv").read_text().splitlines()
        assert len(unmatched) == 3 and "no clip dia2_utt0.mp4" in unmatched[0] and "dia9_utt9.mp4" in unmatched[1]
        assert "._dia0_utt0.mp4\tnot a MELD clip" in unmatched[2]
        assert sorted(set(emo)) == ["anger", "disgust", "fear", "joy", "neutral", "sadness"]
        assert "The Interviewer" in group
        folds = check_folds(dest, 1, with_valid=True)["fold_1"]
        assert [len(folds[r]) for r in ("train", "valid", "test")] == [4, 2, 2]
    run_labels("meld", root, tmp_path / "sent", "--resample-to", str(tmp_path / "mirror1"), "--target", "sentiment")
    assert set((tmp_path / "sent" / "x.emo").read_text().split()) == {"neutral", "positive", "negative"}


@pytest.mark.parametrize("form,misspelled,old", [("csv", False, False), ("csv", True, True), ("json", True, False)])
def test_msppodcast_variants(tmp_path, form, misspelled, old):
    layouts.msppodcast_tree(tmp_path / "msp", form, misspelled, old_audio=old, old_split_name=old)
    summary = run_labels("msppodcast", tmp_path / "msp", tmp_path / "l")
    manifest, emo, group = read_split(tmp_path / "l")
    assert summary["utterances"] == 6 and "X" not in emo and "noagreement" not in emo
    assert any("left out 1 X (no agreement) and 1 O (other)" in n for n in summary["notes"])
    assert group.count("Unknown") == 1 and set(emo) == {"neutral", "angry", "happy", "sad", "surprise", "contempt"}
    folds = check_folds(tmp_path / "l", 1, with_valid=True)["fold_1"]
    assert [len(folds[r]) for r in ("train", "valid", "test")] == [3, 1, 1]  # Test2 only in the main split
    assert run_labels("msppodcast", tmp_path / "msp", tmp_path / "k", "--keep-other")["utterances"] == 8


def test_mosei_spans_targets_and_folds(tmp_path):
    folds_py = layouts.mosei_tree(tmp_path / "mosei")
    mirror = tmp_path / "mirror"
    summary = run_labels("mosei", tmp_path / "mosei", tmp_path / "l", "--resample-to", str(mirror))
    manifest, emo, group = read_split(tmp_path / "l")
    assert summary["folds"] == {} and any("--folds-file" in n for n in summary["notes"])
    assert not (tmp_path / "l" / "x.folds").exists()
    spans = [r for rows in layouts.MOSEI_VIDEOS.values() for r in rows]
    assert emo == ["negative" if r[2] < 0 else "non_negative" for r in sorted(
        spans, key=lambda r: [v for v, rows in layouts.MOSEI_VIDEOS.items() if r in rows][0])]
    first = manifest.names.index("-3g5yACwYnA_0000000_0000600.wav")  # the negative start clamped to 0
    assert manifest.sizes[first] == int(0.6 * 16000)
    cut, _ = sf.read(mirror / manifest.names[first + 1])
    whole, _ = sf.read(tmp_path / "mosei/Raw/Audio/Full/WAV_16000/-3g5yACwYnA.wav")
    assert np.allclose(cut, whole[int(0.7 * 16000):int(1.3 * 16000)], atol=1e-4)
    assert group.count("81406") == 2
    for target, expected in (("sentiment3", {"positive", "negative", "neutral"}),
                             ("sentiment7", {"sent1", "sent-1", "sent0", "sent-3", "sent3"}),
                             ("emotion", {"happy", "sad", "anger", "fear"})):
        s = run_labels("mosei", tmp_path / "mosei", tmp_path / target, "--resample-to", str(mirror), "--target", target)
        assert set((tmp_path / target / "x.emo").read_text().split()) == expected
    assert s["utterances"] == 5 and any("all 0" in n for n in s["notes"])  # the all-zero emotion row
    (tmp_path / "folds.json").write_text(json.dumps(layouts.MOSEI_FOLDS))
    for folds_file in (folds_py, tmp_path / "folds.json"):
        run_labels("mosei", tmp_path / "mosei", tmp_path / "f", "--resample-to", str(mirror), "--folds-file",
                   str(folds_file))
        fold = check_folds(tmp_path / "f", 1, with_valid=False)["fold_1"]
        assert len(fold["test"]) == 2 and all(n.startswith("81406_") for n in fold["test"])


def test_mead_and_emobox(tmp_path):
    layouts.mead_tree(tmp_path / "MEAD")
    summary = run_labels("mead", tmp_path / "MEAD", tmp_path / "mead", "--resample-to", str(tmp_path / "mm"))
    _, emo, group = read_split(tmp_path / "mead")
    assert summary["utterances"] == 6 and sorted(set(group)) == ["M003", "W009"] and summary["downmixed"] == 6
    assert emo.count("neutral") == 2 and not (tmp_path / "mead" / "x.folds").exists()
    for with_valid in (False, True):
        root = layouts.emobox_tree(tmp_path / f"EmoBox{int(with_valid)}", with_valid=with_valid)
        dest = tmp_path / f"emobox{int(with_valid)}"
        summary = run_labels("emobox", root, dest, "--resample-to", str(tmp_path / f"em{int(with_valid)}"))
        manifest, emo, group = read_split(dest)
        assert summary["utterances"] == 9 and set(emo) == {"Angry", "Happy", "Neutral", "Sad"}
        span = [n for n in manifest.names if "session_" in n]
        assert span == ["long/session_0000250_0000650.wav"] and manifest.sizes[manifest.names.index(span[0])] == 6400
        folds = check_folds(dest, 2, with_valid=with_valid)
        assert sorted(group) == ["fold_1"] * 4 + ["fold_2"] * 4 + ["none"]
        assert len(folds["fold_1"]["test"]) == 4 and len(folds["fold_2"]["test"]) == 4
    run_labels("emobox", root, tmp_path / "raw", "--resample-to", str(tmp_path / "em1"), "--raw-labels")
    assert set((tmp_path / "raw" / "x.emo").read_text().split()) == {"c", "j", "n", "t"}


def test_iemocap_sessions_are_folds(tmp_path):
    iemocap_corpus(tmp_path / "IEMOCAP_full_release", IEMOCAP_ROWS)
    summary = run_labels("iemocap", tmp_path / "IEMOCAP_full_release", tmp_path / "l")
    sessions = sorted(set(summary["groups"]))
    folds = check_folds(tmp_path / "l", len(sessions), with_valid=False)
    _, _, group = read_split(tmp_path / "l")
    for k, session in enumerate(sessions, start=1):
        assert len(folds[f"fold_{k}"]["test"]) == group.count(session)


def fails_with(capsys, argv, pattern: str, dest: Path):
    with pytest.raises(InputErrorExit):
        labels.cli_main(argv + ["--dest", str(dest), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and __import__("re").search(pattern, err[0]), err
    assert not dest.exists() or not [p for p in dest.iterdir() if p.suffix in (".tsv", ".emo", ".group")]


def test_bad_input_is_one_line_and_nothing_half_written(tmp_path, capsys):
    msp = tmp_path / "msp"
    layouts.msppodcast_tree(msp)
    os.remove(msp / "Audios" / "MSP-PODCAST_0003_0001.wav")
    fails_with(capsys, ["msppodcast", str(msp)], r"labels_consensus\.csv:6: the label points to .*MSP-PODCAST_0003_0001"
               r"\.wav, which does not exist", tmp_path / "d1")
    listed = run_labels("msppodcast", msp, tmp_path / "d1b", "--skip-missing")
    assert listed["unmatched"] == 1 and "MSP-PODCAST_0003_0001.wav" in (tmp_path / "d1b/x.unmatched.tsv").read_text()
    fails_with(capsys, ["msppodcast", str(msp), "--target", "emotion"], r"--target is for meld, mosei, not msppodcast",
               tmp_path / "d1c")
    root = layouts.emobox_tree(tmp_path / "EmoBox")
    meta = root / "cafe.jsonl"
    lines = meta.read_text().splitlines()
    meta.write_text("\n".join(lines[:2] + [lines[2].replace('"emo": "n"', '"emo": "q"').replace('"emo": "c"', '"emo": "q"')
                                           .replace('"emo": "j"', '"emo": "q"').replace('"emo": "t"', '"emo": "q"')]
                              + lines[3:]) + "\n")
    fails_with(capsys, ["emobox", str(root), "--resample-to", str(tmp_path / "o")],
               r"cafe\.jsonl:3: label 'q' is not in .*label_map\.json", tmp_path / "d2")
    meta.write_text("\n".join(lines[:4] + ['{"key": "cafe-x", "wav": '] + lines[4:]) + "\n")
    fails_with(capsys, ["emobox", str(root), "--resample-to", str(tmp_path / "o")], r"cafe\.jsonl:5: not JSON",
               tmp_path / "d3")
    layouts.mosei_tree(tmp_path / "mosei")
    (tmp_path / "mosei" / "CMU_MOSEI_Labels.csd").write_text("<html>Not Found</html>")
    fails_with(capsys, ["mosei", str(tmp_path / "mosei"), "--resample-to", str(tmp_path / "o")],
               r"CMU_MOSEI_Labels\.csd: not an HDF5 file", tmp_path / "d4")
    # a truncated or empty clip: named on one line with the decoder's reason and skipped, nothing half-written
    layouts.mead_tree(tmp_path / "MEAD")
    clip = tmp_path / "MEAD/M003/audio/angry/level_1/001.m4a"
    clip.write_bytes(clip.read_bytes()[:300])
    (tmp_path / "MEAD/W009/audio/happy/level_2/001.m4a").write_bytes(b"")
    summary = run_labels("mead", tmp_path / "MEAD", tmp_path / "d5", "--resample-to", str(tmp_path / "o5"))
    assert summary["utterances"] == 4 and summary["skipped"] == {"unreadable": 1, "empty": 1}
    assert not list((tmp_path / "o5").rglob("*.tmp*")) and not (tmp_path / "o5/M003/audio/angry/level_1/001.wav").exists()


def test_paper_recipe_stages(tmp_path):
    """recipes/corpora/paper.sh on the five tiny layouts: mirror, manifests, training command, folds; a stage re-runs alone."""
    import subprocess

    repo = Path(__file__).resolve().parents[1]
    iemocap_corpus(tmp_path / "IEMOCAP_full_release", IEMOCAP_ROWS)
    (tmp_path / "IEMOCAP_full_release/Session1/dialog/wav").mkdir(parents=True)
    layouts.write_wav(tmp_path / "IEMOCAP_full_release/Session1/dialog/wav/Ses01F_impro01.wav", 1.0)  # not pretrained on
    layouts.meld_tree(tmp_path / "MELD.Raw")
    folds_py = layouts.mosei_tree(tmp_path / "mosei")
    layouts.msppodcast_tree(tmp_path / "msp")
    layouts.mead_tree(tmp_path / "MEAD")
    work = tmp_path / "work"
    cmd = ["bash", str(repo / "recipes/corpora/paper.sh"), "--iemocap", str(tmp_path / "IEMOCAP_full_release"),
           "--meld", str(tmp_path / "MELD.Raw"), "--mosei", str(tmp_path / "mosei"), "--msppodcast", str(tmp_path / "msp"),
           "--mead", str(tmp_path / "MEAD"), "--mosei-folds", str(folds_py), "--work", str(work), "--workers", "1",
           "--weights", "1:1:2:1:1"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    hours = [line.split("\t") for line in (work / "manifests/hours.tsv").read_text().splitlines()[1:]]
    n_iemocap = sum(len(rows) for rows in IEMOCAP_ROWS.values())  # every utterance, labelled or not
    assert [(c, int(n)) for c, n, _ in hours] == [("iemocap", n_iemocap), ("meld", 9), ("mosei", 6), ("msppodcast", 8),
                                                  ("mead", 6)]
    train = read_manifest(str(work / "manifests/iemocap/train.tsv"))
    assert not any("dialog" in n for n in train.names)
    script = (work / "pretrain.sh").read_text()
    assert "task.data_weights=1:1:2:1:1" in script and f"{work}/manifests/iemocap:{work}/manifests/meld:" in script
    for corpus, n_folds in (("iemocap", len(IEMOCAP_ROWS)), ("meld", 1), ("mosei", 1), ("msppodcast", 1)):
        assert len(os.listdir(work / "labels" / f"{corpus}.folds")) == n_folds
    os.remove(work / ".done.manifests")
    again = subprocess.run(cmd + ["--stage", "2", "--stop-stage", "2"], capture_output=True, text=True)
    assert again.returncode == 0 and "stage 2 manifests" in again.stdout and "stage 1" not in again.stdout
