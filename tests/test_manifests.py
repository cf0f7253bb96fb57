"""e2v-manifest / e2v-validate-manifest on a messy folder; e2v-labels on fake corpus layouts."""

import os

import numpy as np
import pytest
import soundfile as sf

from emotion2vec_plugin.data.manifest import read_manifest
from manifests import audio_manifest, labels, validate


def tone(seconds, rate, channels=1):
    t = np.arange(int(seconds * rate)) / rate
    x = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


@pytest.fixture
def messy(tmp_path):
    """Valid files (16 kHz mono, other rates/channels, flac/ogg, nested, spaces, non-ASCII, symlink) and broken ones."""
    root = tmp_path / "audio"
    (root / "nested" / "deeper").mkdir(parents=True)
    valid_native = {"a.wav": tone(0.5, 16000), "nested/b.flac": tone(0.3, 16000),
                    "nested/deeper/with space é.wav": tone(0.4, 16000)}
    valid_other = {"c8k.wav": tone(0.5, 8000), "d44.wav": tone(0.25, 44100, 2), "e48.flac": tone(0.3, 48000),
                   "f22.ogg": tone(0.4, 22050)}
    for rel, x in {**valid_native, **valid_other}.items():
        rate = {"c8k.wav": 8000, "d44.wav": 44100, "e48.flac": 48000, "f22.ogg": 22050}.get(rel, 16000)
        sf.write(root / rel, x, rate)
    os.symlink(root / "a.wav", root / "nested" / "link.wav")
    sf.write(root / "empty.wav", np.zeros(0, np.float32), 16000)
    (root / "not_audio.wav").write_text("this is a text file with an audio extension")
    sf.write(root / "trunc.wav", tone(1.0, 16000), 16000)
    data = (root / "trunc.wav").read_bytes()
    (root / "trunc.wav").write_bytes(data[: len(data) // 2])
    sf.write(root / "trunc.flac", np.random.default_rng(0).normal(0, 0.1, 16000).astype(np.float32), 16000)
    data = (root / "trunc.flac").read_bytes()
    (root / "trunc.flac").write_bytes(data[: len(data) // 2])  # FLAC's header still says 16000 frames
    return root, tmp_path


def make(root, dest, **kw):
    args = audio_manifest.get_parser().parse_args([str(root), "--dest", str(dest), "--quiet", "--valid-percent", "0.3"])
    for k, v in kw.items():
        setattr(args, k, v)
    return audio_manifest.main(args)


def listed(dest):
    out = {}
    for split in ("train", "valid"):
        m = read_manifest(str(dest / f"{split}.tsv"))
        out.update({m.names[i]: (m.full_path(i), m.sizes[i]) for i in range(len(m))})
    return out


def test_without_resampling_lists_only_16k_mono_and_reports_every_skip(messy):
    root, tmp = messy
    summary = make(root, tmp / "m")
    files = listed(tmp / "m")
    assert {"a.wav", "nested/b.flac", "nested/deeper/with space é.wav", "nested/link.wav"} <= set(files)
    for rel, (path, n) in files.items():
        assert n == len(sf.read(path)[0])  # never a wrong length
    skipped = {os.path.basename(line.split("\t")[0]): line.split("\t")[1]
               for line in (tmp / "m" / "skipped.tsv").read_text(encoding="utf-8").splitlines()}
    assert skipped["empty.wav"] == "empty" and skipped["not_audio.wav"] == "unreadable"
    assert skipped["trunc.flac"] == "unreadable"  # caught by the last-frame probe
    for name in ("c8k.wav", "d44.wav", "e48.flac", "f22.ogg"):
        assert skipped[name] == "needs resampling"
    assert "trunc.wav" in skipped or files["trunc.wav"][1] == len(sf.read(files["trunc.wav"][0])[0])
    assert summary["found"] == summary["kept"] + sum(summary["skipped"].values())


def test_resample_to_converts_to_16k_mono_with_true_lengths(messy):
    root, tmp = messy
    summary = make(root, tmp / "m", resample_to=str(tmp / "conv"))
    files = listed(tmp / "m")
    assert summary["converted"] == 4
    for rel, (path, n) in files.items():
        info = sf.info(path)
        assert info.samplerate == 16000 and info.channels == 1 and info.frames == n, rel
    assert files["d44.wav"][1] == int(np.ceil(0.25 * 44100 * 16000 / 44100))
    assert validate.check(str(tmp / "m" / "train.tsv")) == []


def test_split_is_deterministic_and_workers_do_not_change_it(messy):
    root, tmp = messy
    make(root, tmp / "one", workers=1, seed=3)
    make(root, tmp / "two", workers=2, seed=3)
    for split in ("train", "valid"):
        assert (tmp / "one" / f"{split}.tsv").read_text() == (tmp / "two" / f"{split}.tsv").read_text()
    again = make(root, tmp / "again", workers=1, seed=3)
    assert (tmp / "again" / "valid.tsv").read_text() == (tmp / "one" / "valid.tsv").read_text()
    assert again["valid"] == round(again["kept"] * 0.3)


def test_manifest_reads_the_same_in_fairseq_and_in_the_task(messy):
    from fairseq.data.audio.raw_audio_dataset import FileAudioDataset

    from emotion2vec_plugin.data.audio_dataset import Emotion2vecAudioDataset

    root, tmp = messy
    make(root, tmp / "m", resample_to=str(tmp / "conv"), valid_percent=0.0)
    fair = FileAudioDataset(str(tmp / "m" / "train.tsv"), sample_rate=16000, min_sample_size=0)
    ours = Emotion2vecAudioDataset(read_manifest(str(tmp / "m" / "train.tsv")))
    assert list(fair.sizes) == list(ours.sizes)
    for i in range(len(ours)):
        assert len(ours[i]["source"]) == ours.sizes[i]


def test_validator_names_line_and_problem(messy):
    root, tmp = messy
    make(root, tmp / "m", valid_percent=0.0)
    m = tmp / "m" / "train.tsv"
    lines = m.read_text(encoding="utf-8").splitlines()
    name, n = lines[1].split("\t")
    lines[1] = f"{name}\t{int(n) + 5}"
    lines.append("gone.wav\t1000")
    lines.append("c8k.wav\t8000")
    m.write_text("\n".join(lines) + "\n", encoding="utf-8")
    problems = validate.check(str(m))
    assert any(p.startswith(f"{m}:2: length mismatch (expected {int(n) + 5}") for p in problems)
    assert any(p.startswith(f"{m}:{len(lines) - 1}: ") and "does not exist" in p for p in problems)
    assert any(p.startswith(f"{m}:{len(lines)}: ") and "8000 Hz" in p for p in problems)


def write(path, seconds=0.2, rate=16000):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sf.write(path, tone(seconds, rate), rate)


def run_labels(dataset, root, dest, **kw):
    args = labels.get_parser().parse_args([dataset, str(root), "--dest", str(dest), "--split", "x", "--quiet"])
    for k, v in kw.items():
        setattr(args, k, v)
    s = labels.main(args)
    m = read_manifest(str(dest / "x.tsv"))
    emo = (dest / "x.emo").read_text().split()
    grp = (dest / "x.group").read_text().split()
    assert len(m) == len(emo) == len(grp) == s["utterances"]
    return m, emo, grp


def test_iemocap_layout_four_classes_with_excited_merged(tmp_path):
    root = tmp_path / "IEMOCAP"
    rows = {"Session1": [("Ses01F_impro01_F000", "neu"), ("Ses01F_impro01_M001", "exc"), ("Ses01F_impro01_F002", "xxx")],
            "Session2": [("Ses02M_script01_1_F000", "ang"), ("Ses02M_script01_1_M003", "sad"), ("Ses02M_script01_1_F004", "fru")]}
    for session, utts in rows.items():
        lines = ["% header line that is not a label"]
        for utt, lab in utts:
            lines.append(f"[6.2901 - 8.2357]\t{utt}\t{lab}\t[2.5000, 2.5000, 2.5000]")
            write(root / session / "sentences" / "wav" / utt.rsplit("_", 1)[0] / f"{utt}.wav")
        ev = root / session / "dialog" / "EmoEvaluation"
        ev.mkdir(parents=True)
        (ev / f"{utts[0][0].rsplit('_', 1)[0]}.txt").write_text("\n".join(lines) + "\n")
    m, emo, grp = run_labels("iemocap", root, tmp_path / "out")
    assert emo == ["neu", "hap", "ang", "sad"] and grp == ["Session1", "Session1", "Session2", "Session2"]


def test_ravdess_cremad_esd_and_csv_layouts(tmp_path):
    write(tmp_path / "ravdess" / "Actor_01" / "03-01-05-01-01-01-01.wav")
    write(tmp_path / "ravdess" / "Actor_02" / "03-01-01-01-02-01-02.wav")
    _, emo, grp = run_labels("ravdess", tmp_path / "ravdess", tmp_path / "o1")
    assert emo == ["angry", "neutral"] and grp == ["Actor_01", "Actor_02"]
    write(tmp_path / "crema" / "AudioWAV" / "1001_DFA_ANG_XX.wav")
    write(tmp_path / "crema" / "AudioWAV" / "1002_IEO_SAD_HI.wav")
    _, emo, grp = run_labels("cremad", tmp_path / "crema", tmp_path / "o2")
    assert emo == ["ang", "sad"] and grp == ["1001", "1002"]
    write(tmp_path / "esd" / "0011" / "Happy" / "train" / "0011_000351.wav")
    write(tmp_path / "esd" / "0012" / "Sad" / "0012_001051.wav")
    _, emo, grp = run_labels("esd", tmp_path / "esd", tmp_path / "o3")
    assert emo == ["happy", "sad"] and grp == ["0011", "0012"]
    write(tmp_path / "mine" / "x y.wav")
    write(tmp_path / "mine" / "sub" / "z.wav", rate=22050)
    (tmp_path / "mine" / "list.csv").write_text("path,label,group\nx y.wav,calm,s1\nsub/z.wav,tense,s2\n")
    m, emo, grp = run_labels("csv", tmp_path / "mine" / "list.csv", tmp_path / "o4", resample_to=str(tmp_path / "c"))
    assert emo == ["calm", "tense"] and all(sf.info(m.full_path(i)).samplerate == 16000 for i in range(2))


def test_labels_errors_name_the_line(tmp_path):
    (tmp_path / "list.csv").write_text("path,label\nmissing.wav,neu\n")
    with pytest.raises(labels.LabelError, match=r"list\.csv:2: audio .*missing\.wav does not exist"):
        run_labels("csv", tmp_path / "list.csv", tmp_path / "o")
    (tmp_path / "empty").mkdir()
    with pytest.raises(labels.LabelError, match="no labelled utterances found for ravdess"):
        run_labels("ravdess", tmp_path / "empty", tmp_path / "o")
