"""e2v-manifest and e2v-validate-manifest on a messy folder of tiny synthetic files.

The folder mixes what real corpora hold: 16 kHz mono files in wav/flac/ogg/mp3, other rates
(8k, 22.05k, 44.1k, 48k) and stereo, nested folders, a name with spaces and non-ASCII letters,
symlinks (to a file, to a folder outside the root, to a folder inside it, a dangling one), and
broken files (cut, 0 bytes, header only, text with a .wav name, an extension soundfile cannot read).
"""

import math
import os
import sys
from pathlib import Path
from typing import Dict, Tuple

import numpy as np
import pytest
import soundfile as sf

from emotion2vec_plugin.data.manifest import read_manifest
from manifests import audio_info, audio_manifest, validate

HAVE_MP3 = "MP3" in sf.available_formats()
UNICODE_NAME = "nested/deeper/with space é ü 日本.wav"


def tone(seconds: float, rate: int, channels: int = 1) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    x = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    return np.stack([x, 0.5 * x], axis=1) if channels == 2 else x


def write(path: Path, seconds: float, rate: int = 16000, channels: int = 1, **kw) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, tone(seconds, rate, channels), rate, **kw)


def cut_in_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# relpath -> (seconds, rate, channels) of the files that are fine as they are
NATIVE = {"a.wav": 0.5, "UPPER.WAV": 0.2, "nested/b.flac": 0.3, "nested/c.ogg": 0.25, UNICODE_NAME: 0.4,
          "dup.wav": 0.3}
# files that need converting: relpath -> (seconds, rate, channels, soundfile kwargs)
OTHER = {"rates/c8k.wav": (0.5, 8000, 1, {}), "rates/d22.ogg": (0.4, 22050, 1, {}),
         "rates/e44_stereo.wav": (0.25, 44100, 2, {}), "rates/f48.flac": (0.3, 48000, 1, {}),
         "rates/g16k_stereo.wav": (0.2, 16000, 2, {}), "rates/h44_float.wav": (0.2, 44100, 1, {"subtype": "FLOAT"}),
         "dup.flac": (0.3, 48000, 1, {})}
BROKEN = {"broken/zero_bytes.wav": "empty", "broken/header_only.wav": "empty", "broken/not_audio.wav": "unreadable",
          "broken/cut.wav": "unreadable", "broken/cut.flac": "unreadable", "broken/cut.ogg": "unreadable",
          "broken/dangling.wav": "unreadable", "broken/clip.m4a": "unreadable"}
EXT = "wav,flac,ogg,mp3,m4a"


@pytest.fixture
def messy(tmp_path) -> Tuple[Path, Path, Dict[str, int]]:
    """(root, tmp_path, {relpath that must be listed: its length}) of the messy folder."""
    root = tmp_path / "audio"
    expected: Dict[str, int] = {}
    for rel, seconds in NATIVE.items():
        write(root / rel, seconds)
        expected[rel] = int(round(seconds * 16000))
    if HAVE_MP3:
        write(root / "nested/speech.mp3", 0.3)
        expected["nested/speech.mp3"] = len(sf.read(root / "nested/speech.mp3")[0])
        write(root / "broken/cut.mp3", 1.0)
        cut_in_half(root / "broken/cut.mp3")
    for rel, (seconds, rate, channels, kw) in OTHER.items():
        write(root / rel, seconds, rate, channels, **kw)
    os.symlink(root / "a.wav", root / "nested" / "link to a.wav")  # a symlinked file is listed under its name
    expected["nested/link to a.wav"] = expected["a.wav"]
    outside = tmp_path / "outside"
    write(outside / "o.wav", 0.2)
    os.symlink(outside, root / "ext")  # a folder outside the root: followed
    expected["ext/o.wav"] = 3200
    os.symlink(root / "nested", root / "alias")  # a folder inside the root: not listed twice
    os.symlink(root, root / "nested" / "loop")  # a loop: not followed forever
    (root / "broken").mkdir(exist_ok=True)
    (root / "broken/zero_bytes.wav").write_bytes(b"")
    sf.write(root / "broken/header_only.wav", np.zeros(0, np.float32), 16000)
    (root / "broken/not_audio.wav").write_text("this is a text file with an audio extension")
    for ext in ("wav", "flac", "ogg"):
        write(root / f"broken/cut.{ext}", 1.0)
        cut_in_half(root / f"broken/cut.{ext}")
    os.symlink(root / "gone.wav", root / "broken/dangling.wav")
    (root / "broken/clip.m4a").write_bytes(b"\x00\x00\x00\x18ftypM4A ")
    (root / "notes.txt").write_text("not scanned")
    return root, tmp_path, expected


def make(root: Path, dest: Path, *extra: str, **overrides) -> dict:
    args = audio_manifest.get_parser().parse_args(
        [str(root), "--dest", str(dest), "--quiet", "--valid-percent", "0.3", "--ext", EXT, *extra])
    for k, v in overrides.items():
        setattr(args, k, v)
    return audio_manifest.main(args)


def listed(dest: Path) -> Dict[str, Tuple[str, int]]:
    """{relpath: (full path, listed length)} over train.tsv and valid.tsv."""
    out = {}
    for split in ("train", "valid"):
        m = read_manifest(str(dest / f"{split}.tsv"))
        for i in range(len(m)):
            assert m.names[i] not in out, f"{m.names[i]} listed twice"
            out[m.names[i]] = (m.full_path(i), m.sizes[i])
    return out


def skipped(dest: Path) -> Dict[str, Tuple[str, str]]:
    """{path relative to the audio root: (reason, detail)} from skipped.tsv."""
    out = {}
    for line in (dest / "skipped.tsv").read_text(encoding="utf-8").splitlines():
        path, reason, detail = line.split("\t")
        out[path] = (reason, detail)
    return out


def broken_expected() -> Dict[str, str]:
    return {**BROKEN, **({"broken/cut.mp3": "unreadable"} if HAVE_MP3 else {})}


def test_without_resampling_lists_every_16k_mono_file_and_reports_every_skip(messy):
    root, tmp, expected = messy
    summary = make(root, tmp / "m")
    files = listed(tmp / "m")
    assert {rel: n for rel, (_, n) in files.items()} == expected  # nothing valid lost, nothing else listed
    for rel, (path, n) in files.items():
        info = sf.info(path)
        assert (info.samplerate, info.channels) == (16000, 1) and len(sf.read(path)[0]) == n, rel
    skips = {os.path.relpath(p, root): r for p, r in skipped(tmp / "m").items()}
    want = {**broken_expected(), **{rel: "needs resampling" for rel in OTHER}}
    assert {rel: reason for rel, (reason, _) in skips.items()} == want
    assert all(detail for _, detail in skips.values())
    assert "truncated" in skips["broken/cut.wav"][1] and "truncated" in skips["broken/cut.flac"][1]
    assert skips["broken/dangling.wav"][1].startswith("broken symlink to ")
    assert summary["found"] == len(expected) + len(want) == summary["kept"] + sum(summary["skipped"].values())
    assert summary["skipped"]["needs resampling"] == len(OTHER) and summary["converted"] == 0


def test_resample_to_converts_to_16k_mono_and_lists_everything_under_one_root(messy):
    root, tmp, expected = messy
    out = tmp / "conv"
    os.makedirs(out / "rates")
    victim = tmp / "victim.wav"
    write(victim, 0.1)
    victim_bytes = victim.read_bytes()
    os.symlink(victim, out / "rates" / "c8k.wav")  # a stale link where a conversion goes: replaced, not written through
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    summary = make(root, tmp / "m", "--resample-to", str(out))
    files = listed(tmp / "m")
    assert read_manifest(str(tmp / "m" / "train.tsv")).root == str(out)
    converted = {"rates/c8k.wav", "rates/d22.wav", "rates/e44_stereo.wav", "rates/f48.wav", "rates/g16k_stereo.wav",
                 "rates/h44_float.wav", "dup.flac.wav"}  # dup.wav exists, so dup.flac keeps its extension
    assert set(files) == set(expected) | converted
    assert summary["converted"] == len(OTHER) and summary["linked"] == len(expected)
    for rel, (path, n) in files.items():
        assert path.startswith(str(out) + os.sep)
        info = sf.info(path)
        assert (info.samplerate, info.channels, info.frames) == (16000, 1, n), rel
        assert len(sf.read(path)[0]) == n
        assert os.path.islink(path) == (rel in expected), rel
    for rel, (seconds, rate, channels, _) in OTHER.items():
        name = "dup.flac.wav" if rel == "dup.flac" else os.path.splitext(rel)[0] + ".wav"
        assert files[name][1] == math.ceil(int(round(seconds * rate)) * 16000 / rate), rel
    assert sf.info(files["rates/h44_float.wav"][0]).subtype == "FLOAT"
    assert sf.info(files["rates/c8k.wav"][0]).subtype == "PCM_16"
    assert victim.read_bytes() == victim_bytes and not os.path.islink(out / "rates" / "c8k.wav")
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before  # originals untouched
    assert validate.check(str(tmp / "m" / "train.tsv")) == [] and validate.check(str(tmp / "m" / "valid.tsv")) == []
    again = make(root, tmp / "m2", "--resample-to", str(out))  # a re-run reuses the conversions
    assert again["reused"] == len(OTHER) and again["converted"] == len(OTHER)
    for split in ("train.tsv", "valid.tsv"):
        assert (tmp / "m" / split).read_text(encoding="utf-8") == (tmp / "m2" / split).read_text(encoding="utf-8")


def test_split_is_deterministic_for_a_seed_and_workers_do_not_change_anything(messy):
    root, tmp, _ = messy
    make(root, tmp / "one", "--seed", "3", "--workers", "1")
    make(root, tmp / "two", "--seed", "3", "--workers", "2")
    make(root, tmp / "again", "--seed", "3")
    for name in ("train.tsv", "valid.tsv", "skipped.tsv"):
        one = (tmp / "one" / name).read_text(encoding="utf-8")
        assert one == (tmp / "two" / name).read_text(encoding="utf-8") == (tmp / "again" / name).read_text(
            encoding="utf-8"), name
    valid_sets = set()
    for seed in range(6):
        s = make(root, tmp / f"seed{seed}", "--seed", str(seed))
        assert s["valid"] == round(s["kept"] * 0.3)
        valid_sets.add((tmp / f"seed{seed}" / "valid.tsv").read_text(encoding="utf-8"))
    assert len(valid_sets) > 1  # the seed matters


def test_workers_2_converts_the_same_as_workers_1(messy):
    root, tmp, _ = messy
    make(root, tmp / "one", "--resample-to", str(tmp / "out1"), "--workers", "1")
    make(root, tmp / "two", "--resample-to", str(tmp / "out2"), "--workers", "2")
    for name in ("train.tsv", "valid.tsv"):
        one = (tmp / "one" / name).read_text(encoding="utf-8").splitlines()
        two = (tmp / "two" / name).read_text(encoding="utf-8").splitlines()
        assert one[1:] == two[1:] and (one[0], two[0]) == (str(tmp / "out1"), str(tmp / "out2"))


def test_min_and_max_seconds_skip_with_their_reasons(messy):
    root, tmp, expected = messy
    summary = make(root, tmp / "m", "--min-seconds", "0.22", "--max-seconds", "0.45")
    files = listed(tmp / "m")
    assert set(files) == {rel for rel, n in expected.items() if 0.22 * 16000 <= n <= 0.45 * 16000}
    skips = {os.path.relpath(p, root): r for p, r in skipped(tmp / "m").items()}
    assert skips["a.wav"][0] == "too long" and skips["UPPER.WAV"][0] == "too short"
    assert summary["skipped"]["too long"] >= 2 and summary["skipped"]["too short"] >= 2


def test_split_rows_and_conversion_names():
    rows = [(f"{i}.wav", 100 + i) for i in range(10)]
    train, valid = audio_manifest.split_rows(list(reversed(rows)), 0.2, seed=1)
    assert len(valid) == 2 and sorted(train + valid) == rows and train == sorted(train)
    assert audio_manifest.split_rows(rows[:3], 0.01, 0)[1] != []  # a fraction > 0 gives at least one valid
    assert audio_manifest.split_rows(rows[:3], 0.0, 0)[1] == []
    plan = audio_manifest.plan_conversions(["x.flac", "x.ogg", "x.wav", "y.mp3", "z.WAV"])
    assert plan == {"x.flac": "x.flac.wav", "x.ogg": "x.ogg.wav", "x.wav": "x.wav", "y.mp3": "y.wav", "z.WAV": "z.WAV"}


def test_manifest_is_read_by_fairseqs_own_dataset_with_the_same_sizes(messy):
    from fairseq.data.audio.raw_audio_dataset import FileAudioDataset

    root, tmp, _ = messy
    make(root, tmp / "m", "--resample-to", str(tmp / "conv"), "--valid-percent", "0")
    manifest = read_manifest(str(tmp / "m" / "train.tsv"))
    dataset = FileAudioDataset(str(tmp / "m" / "train.tsv"), sample_rate=16000, min_sample_size=0)
    assert len(dataset) == len(manifest) > 10
    assert list(dataset.sizes) == manifest.sizes.tolist()
    for i in range(len(dataset)):
        assert dataset[i]["source"].shape == (manifest.sizes[i],), manifest.names[i]


def test_validator_names_the_line_and_what_is_wrong(messy):
    root, tmp, _ = messy
    make(root, tmp / "m", "--valid-percent", "0")
    m = tmp / "m" / "train.tsv"
    assert validate.check(str(m)) == []
    lines = m.read_text(encoding="utf-8").splitlines()
    name, n = lines[1].split("\t")
    lines[1] = f"{name}\t{int(n) + 5}"
    lines += ["gone.wav\t1000", "rates/c8k.wav\t8000", "rates/g16k_stereo.wav\t3200", "broken/cut.flac\t16000"]
    m.write_text("\n".join(lines) + "\n", encoding="utf-8")
    problems = validate.check(str(m))
    last = len(lines)
    assert problems[0].startswith(f"{m}:2: wrong length (expected {int(n) + 5} samples as listed, got {n} ")
    assert problems[1].startswith(f"{m}:{last - 3}: file missing (expected {root}/gone.wav, got nothing")
    assert problems[2].startswith(f"{m}:{last - 2}: wrong sample rate (expected 16000 Hz, got 8000 Hz)")
    assert problems[3].startswith(f"{m}:{last - 1}: not mono (expected 1 channel, got 2)")
    assert problems[4].startswith(f"{m}:{last}: unreadable file (expected readable audio, got: truncated")
    assert len(problems) == 5
    bad_root = tmp / "bad_root.tsv"
    bad_root.write_text("/no/such/folder\na.wav\t10\n")
    assert validate.check(str(bad_root))[0].startswith(f"{bad_root}:1: audio root")


def test_clis_print_summaries_and_exit_codes(messy, monkeypatch, capsys):
    root, tmp, expected = messy
    monkeypatch.setattr(sys, "argv", ["e2v-manifest", str(root), "--dest", str(tmp / "m"), "--quiet", "--ext", EXT])
    audio_manifest.cli_main()
    out = capsys.readouterr().out
    assert f"found {len(expected) + len(OTHER) + len(broken_expected())} files, kept {len(expected)}" in out
    assert "needs resampling 7" in out and str(tmp / "m" / "skipped.tsv") in out
    monkeypatch.setattr(sys, "argv", ["e2v-validate-manifest", str(tmp / "m" / "train.tsv"), "--quiet"])
    assert validate.cli_main() == 0
    assert capsys.readouterr().out.startswith(f"e2v-validate-manifest: {tmp / 'm' / 'train.tsv'}: OK,")
    with open(tmp / "m" / "train.tsv", "a", encoding="utf-8") as f:
        f.write("gone.wav\t5\n")
    assert validate.cli_main() == 1
    assert ": file missing (expected" in capsys.readouterr().err
    monkeypatch.setattr(sys, "argv", ["e2v-manifest", str(tmp / "nowhere"), "--dest", str(tmp / "x")])
    with pytest.raises(SystemExit, match="is not a folder"):
        audio_manifest.cli_main()
    monkeypatch.setattr(sys, "argv", ["e2v-manifest", str(root), "--dest", str(tmp / "x"), "--resample-to",
                                      str(root / "inside")])
    with pytest.raises(SystemExit, match="contain one another"):
        audio_manifest.cli_main()


def test_inspect_never_raises_and_says_why():
    assert audio_info.inspect("/no/such/file.wav").reason == "unreadable"
    assert audio_info.inspect("/no/such/file.xyz").reason == "unsupported"
    assert audio_info.frames_at_target(11025, 44100) == 4000 and audio_info.frames_at_target(7001, 22050) == 5081


def test_conversions_never_land_on_a_source_file(tmp_path):
    write(tmp_path / "d" / "x44.wav", 0.1, 44100)
    write(tmp_path / "d" / "sub" / "y.wav", 0.1)
    with pytest.raises(audio_manifest.ManifestToolError, match=r"would write .*x44\.wav, which is one of the source"):
        audio_manifest.check_files(str(tmp_path / "d"), ["x44.wav", "sub/y.wav"], resample_to=str(tmp_path / "d"),
                                   progress=False)
    assert sf.info(tmp_path / "d" / "x44.wav").samplerate == 44100


def test_paths_fairseq_cannot_read_back_are_skipped_with_the_reason(tmp_path):
    for name in (" lead.wav", "a:b.mp3", "a:b.wav"):
        if name.endswith(".mp3") and not HAVE_MP3:
            continue
        write(tmp_path / "d" / name, 0.1)
    results = {r.rel: r for r in audio_manifest.check_files(str(tmp_path / "d"), audio_manifest.scan(
        str(tmp_path / "d"), [".wav", ".mp3"]), progress=False)}
    assert results[" lead.wav"].reason == "unsupported" and "whitespace" in results[" lead.wav"].detail
    assert results["a:b.wav"].ok
    if HAVE_MP3:
        assert results["a:b.mp3"].reason == "unsupported" and "':'" in results["a:b.mp3"].detail
