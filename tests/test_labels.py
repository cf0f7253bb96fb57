"""e2v-labels on tiny fake corpora with the public folder layouts and label-file formats."""

import os
import sys
from pathlib import Path
from typing import List, Tuple

import numpy as np
import pytest
import soundfile as sf

from emotion2vec_plugin.data.manifest import Manifest, read_manifest
from manifests import labels


def write(path: Path, seconds: float = 0.1, rate: int = 16000, channels: int = 1) -> int:
    """A tiny tone at ``path``; returns its length in frames."""
    path.parent.mkdir(parents=True, exist_ok=True)
    n = int(round(seconds * rate))
    x = (0.2 * np.sin(2 * np.pi * 330 * np.arange(n) / rate)).astype(np.float32)
    sf.write(path, np.stack([x, x], axis=1) if channels == 2 else x, rate)
    return n


def run(dataset: str, root: Path, dest: Path, *extra: str) -> Tuple[Manifest, List[str], List[str], dict]:
    """Run e2v-labels; return the manifest, labels, groups (checked to be parallel) and the summary."""
    args = labels.get_parser().parse_args([dataset, str(root), "--dest", str(dest), "--split", "x", "--quiet", *extra])
    summary = labels.main(args)
    manifest = read_manifest(str(dest / "x.tsv"))
    emo = (dest / "x.emo").read_text(encoding="utf-8").splitlines()
    group = (dest / "x.group").read_text(encoding="utf-8").splitlines()
    assert len(manifest) == len(emo) == len(group) == summary["utterances"]
    for i in range(len(manifest)):
        info = sf.info(manifest.full_path(i))
        assert (info.samplerate, info.channels, info.frames) == (16000, 1, manifest.sizes[i])
    return manifest, emo, group, summary


def iemocap_corpus(root: Path, rows: dict, missing: Tuple[str, ...] = ()) -> None:
    """``rows``: session -> [(utterance, label)]; the label files in the real EmoEvaluation format."""
    for session, utterances in rows.items():
        dialogs = {}
        for utt, label in utterances:
            dialogs.setdefault(utt.rsplit("_", 1)[0], []).append((utt, label))
        for dialog, utts in dialogs.items():
            lines = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
            for k, (utt, label) in enumerate(utts):
                lines += [f"[{6.2901 + k:.4f} - {8.2357 + k:.4f}]\t{utt}\t{label}\t[2.5000, 2.5000, 2.5000]",
                          f"C-E2:\t{label.capitalize()};\t()", ""]
                if utt not in missing:
                    write(root / session / "sentences" / "wav" / dialog / f"{utt}.wav")
            evaluation = root / session / "dialog" / "EmoEvaluation"
            (evaluation / "Categorical").mkdir(parents=True, exist_ok=True)  # real subfolder, not read
            (evaluation / f"{dialog}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


IEMOCAP_ROWS = {
    "Session1": [("Ses01F_impro01_F000", "neu"), ("Ses01F_impro01_M001", "exc"), ("Ses01F_impro01_F002", "xxx"),
                 ("Ses01F_script01_1_F000", "hap")],
    "Session2": [("Ses02M_script01_1_F000", "ang"), ("Ses02M_script01_1_M003", "sad"),
                 ("Ses02M_script01_1_F004", "fru"), ("Ses02M_impro03_M000", "sur")],
}


def test_iemocap_four_classes_exc_merged_into_hap_others_dropped(tmp_path):
    iemocap_corpus(tmp_path / "IEMOCAP_full_release", IEMOCAP_ROWS)
    m, emo, group, summary = run("iemocap", tmp_path / "IEMOCAP_full_release", tmp_path / "out")
    names = [os.path.basename(n) for n in m.names]
    assert names == ["Ses01F_impro01_F000.wav", "Ses01F_impro01_M001.wav", "Ses01F_script01_1_F000.wav",
                     "Ses02M_script01_1_F000.wav", "Ses02M_script01_1_M003.wav"]
    assert emo == ["neu", "hap", "hap", "ang", "sad"]
    assert group == ["Session1", "Session1", "Session1", "Session2", "Session2"]
    assert summary["classes"] == {"ang": 1, "hap": 2, "neu": 1, "sad": 1}
    assert summary["groups"] == {"Session1": 3, "Session2": 2}


def test_iemocap_label_without_audio_names_the_label_line(tmp_path):
    iemocap_corpus(tmp_path / "I", IEMOCAP_ROWS, missing=("Ses02M_script01_1_M003",))
    txt = tmp_path / "I" / "Session2" / "dialog" / "EmoEvaluation" / "Ses02M_script01_1.txt"
    with pytest.raises(labels.LabelError, match=rf"^{txt}:6: the label points to .*Ses02M_script01_1_M003\.wav, "
                                                r"which does not exist; expected the audio"):
        run("iemocap", tmp_path / "I", tmp_path / "out")


def test_ravdess_48k_needs_resample_to_and_groups_by_actor(tmp_path):
    root = tmp_path / "RAVDESS"
    write(root / "Actor_01" / "03-01-05-01-01-01-01.wav", rate=48000)
    write(root / "Actor_01" / "03-01-02-02-02-02-01.wav", rate=48000)
    write(root / "Actor_12" / "03-01-08-01-01-01-12.wav", rate=48000, channels=2)
    with pytest.raises(labels.LabelError, match="all 3 labelled files were skipped .*add --resample-to OUT"):
        run("ravdess", root, tmp_path / "out")
    m, emo, group, summary = run("ravdess", root, tmp_path / "out", "--resample-to", str(tmp_path / "16k"))
    assert emo == ["calm", "angry", "surprised"] and group == ["Actor_01", "Actor_01", "Actor_12"]
    assert m.root == str(tmp_path / "16k") and m.sizes.tolist() == [1600, 1600, 1600] and summary["converted"] == 3
    write(root / "Actor_02" / "notes.wav")
    with pytest.raises(labels.LabelError, match=r"notes\.wav: expected a RAVDESS name MM-VV-EE-II-SS-RR-AA"):
        run("ravdess", root, tmp_path / "out2")


# RAVDESS's published emotion codes (third field of the file name), written out here on their own
RAVDESS_CODES = {"01": "neutral", "02": "calm", "03": "happy", "04": "sad", "05": "angry", "06": "fearful",
                 "07": "disgust", "08": "surprised"}


def test_ravdess_all_eight_emotion_codes(tmp_path):
    root = tmp_path / "RAVDESS"
    for code in RAVDESS_CODES:  # speech (02), normal intensity, one actor per code
        write(root / f"Actor_{code}" / f"03-01-{code}-01-01-01-{code}.wav")
    _, emo, group, summary = run("ravdess", root, tmp_path / "out")
    assert emo == list(RAVDESS_CODES.values())
    assert group == [f"Actor_{code}" for code in RAVDESS_CODES]
    assert summary["classes"] == {name: 1 for name in RAVDESS_CODES.values()}


def test_cremad_groups_by_speaker(tmp_path):
    for name in ("1001_DFA_ANG_XX", "1001_IEO_HAP_HI", "1091_TSI_NEU_XX", "1002_MTI_DIS_LO", "1002_WSI_FEA_MD",
                 "1003_ITS_SAD_XX"):
        write(tmp_path / "CREMA-D" / "AudioWAV" / f"{name}.wav")
    _, emo, group, summary = run("cremad", tmp_path / "CREMA-D", tmp_path / "out")
    assert emo == ["ang", "hap", "dis", "fea", "sad", "neu"]
    assert group == ["1001", "1001", "1002", "1002", "1003", "1091"]
    assert summary["classes"] == {"ang": 1, "dis": 1, "fea": 1, "hap": 1, "neu": 1, "sad": 1}


def test_esd_emotion_folders_speakers_and_transcripts_ignored(tmp_path):
    root = tmp_path / "ESD"
    write(root / "0001" / "Neutral" / "0001_000001.wav")
    write(root / "0001" / "Surprise" / "0001_001401.wav")
    write(root / "0011" / "Happy" / "train" / "0011_000701.wav")  # the older release's split subfolders
    write(root / "0011" / "Angry" / "evaluation" / "0011_000351.wav")
    (root / "0011" / "0011.txt").write_text("0011_000001\tThe nine the eggs.\tNeutral\n", encoding="utf-8")
    _, emo, group, _ = run("esd", root, tmp_path / "out")
    assert emo == ["neutral", "surprise", "angry", "happy"] and group == ["0001", "0001", "0011", "0011"]


def test_esd_reads_all_five_emotion_folders(tmp_path):
    root = tmp_path / "ESD"
    folders = ("Angry", "Happy", "Neutral", "Sad", "Surprise")  # ESD's five emotion folders
    for k, folder in enumerate(folders):
        write(root / "0003" / folder / f"0003_{k:06d}.wav")
    write(root / "0003" / "Disgust" / "0003_999999.wav")  # not an ESD folder: not read
    _, emo, group, summary = run("esd", root, tmp_path / "out")
    assert emo == [f.lower() for f in folders] and group == ["0003"] * 5
    assert summary["classes"] == {f.lower(): 1 for f in folders}


def test_csv_relative_absolute_spaces_bom_and_default_group(tmp_path):
    mine = tmp_path / "my corpus"
    write(mine / "clips" / "x y é.wav")
    write(tmp_path / "elsewhere" / "z.wav", rate=22050)
    (mine / "labels.csv").write_text(f"\ufeffpath,label,group\nclips/x y é.wav,calm,s1\n\n"
                                     f"{tmp_path / 'elsewhere' / 'z.wav'},very tense,s2\n", encoding="utf-8")
    m, emo, group, _ = run("csv", mine / "labels.csv", tmp_path / "out", "--resample-to", str(tmp_path / "c"))
    assert emo == ["calm", "very tense"] and group == ["s1", "s2"] and m.sizes.tolist() == [1600, 1600]
    (mine / "nogroup.csv").write_text("label,path\nneu,clips/x y é.wav\n", encoding="utf-8")
    _, emo, group, _ = run("csv", mine / "nogroup.csv", tmp_path / "out2")
    assert emo == ["neu"] and group == ["all"]


@pytest.mark.parametrize("content, message", [
    ("path,label\nmissing.wav,neu\n", r"list\.csv:2: the label points to .*missing\.wav, which does not exist; fix"),
    ("file,emotion\na.wav,neu\n", r"list\.csv:1: expected the header path,label\[,group\], got file,emotion"),
    ("path,label\na.wav,\n", r"list\.csv:2: the label is empty"),
    ("path,label\na.wav,neu\na.wav,sad\n", r"list\.csv:3: .*a\.wav is labelled twice \(first at .*list\.csv:2\)"),
])
def test_csv_errors_name_file_line_and_fix(tmp_path, content, message):
    write(tmp_path / "a.wav")
    (tmp_path / "list.csv").write_text(content, encoding="utf-8")
    with pytest.raises(labels.LabelError, match=message):
        run("csv", tmp_path / "list.csv", tmp_path / "o")


def test_unknown_dataset_and_empty_results_are_clear_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(labels.LabelError, match="unknown dataset .msp.; expected one of cremad, csv, emobox, esd, iemocap"):
        run("msp", tmp_path / "empty", tmp_path / "o")
    for dataset in ("iemocap", "ravdess", "cremad", "esd"):
        with pytest.raises(labels.LabelError, match=f"no labelled utterances found for {dataset}; check that ROOT"):
            run(dataset, tmp_path / "empty", tmp_path / "o")
    with pytest.raises(labels.LabelError, match="is not a folder"):
        run("esd", tmp_path / "nowhere", tmp_path / "o")


def test_cli_reports_counts_per_class_and_skips(tmp_path, monkeypatch, capsys):
    write(tmp_path / "d" / "a.wav")
    write(tmp_path / "d" / "b.wav")
    (tmp_path / "d" / "c.wav").write_bytes(b"")
    (tmp_path / "d" / "l.csv").write_text("path,label,group\na.wav,neu,s1\nb.wav,neu,s2\nc.wav,ang,s2\n")
    monkeypatch.setattr(sys, "argv", ["e2v-labels", "csv", str(tmp_path / "d" / "l.csv"), "--dest",
                                      str(tmp_path / "o"), "--split", "demo", "--quiet"])
    labels.cli_main()
    out = capsys.readouterr().out
    assert "e2v-labels csv: 2 utterances" in out and "skipped 1 (empty 1)" in out and "per class: neu 2" in out
    assert (tmp_path / "o" / "demo.skipped.tsv").read_text().split("\t")[1] == "empty"
    monkeypatch.setattr(sys, "argv", ["e2v-labels", "nope", str(tmp_path), "--dest", str(tmp_path / "o")])
    with pytest.raises(SystemExit, match="e2v-labels: error: unknown dataset 'nope'"):
        labels.cli_main()
