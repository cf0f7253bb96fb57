"""Tiny copies of the public corpus layouts, with their real file formats and quirks, in tmp_path.

Each ``*_tree`` function writes one layout and returns what the test needs to know about it
(paths, expected counts). Media are real: AAC in mp4/m4a written with PyAV, wav with soundfile,
MOSEI's labels an HDF5 ``.csd`` written with h5py in the SDK's group layout.
"""

import json
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
import soundfile as sf

LAYOUTS = {1: "mono", 2: "stereo", 6: "5.1"}


def tone(seconds: float, rate: int, freq: float = 220.0, amp: float = 0.2) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write_aac(path: Path, channels: np.ndarray, rate: int) -> None:
    """Real AAC in an mp4/m4a container via PyAV; ``channels`` is [C, frames] float32 (C in 1, 2, 6)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    layout = LAYOUTS[len(channels)]
    fmt = "ipod" if path.suffix == ".m4a" else "mp4"
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream("aac", rate=rate, layout=layout)
        for i in range(0, channels.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(channels[:, i:i + 1024]), format="fltp",
                                               layout=layout)
            frame.sample_rate, frame.pts = rate, i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def write_av(path: Path, codec: str, mono: np.ndarray, rate: int) -> None:
    """Stereo ``mono``/``-mono`` with PyAV in the container of ``path``'s extension (webm: libopus, avi: pcm_s16le)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate, layout="stereo")
        size = stream.codec_context.frame_size or 1024
        packed = codec.startswith("pcm_s16")
        for i in range(0, len(mono), size):
            chunk = np.stack([mono[i:i + size], -mono[i:i + size]])
            if packed:
                frame = av.AudioFrame.from_ndarray((chunk.T.reshape(1, -1) * 32767).astype(np.int16), format="s16",
                                                   layout="stereo")
            else:
                frame = av.AudioFrame.from_ndarray(chunk.T.reshape(1, -1).copy(), format="flt", layout="stereo")
            frame.sample_rate, frame.pts = rate, i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def write_wav(path: Path, seconds: float = 0.3, rate: int = 16000, freq: float = 220.0) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    x = tone(seconds, rate, freq)
    sf.write(path, x, rate)
    return len(x)


def without_moov(path: Path) -> None:
    """Cut an mp4 just before its moov atom (at the end, as FFmpeg writes it): MELD's dia125_utt3.mp4."""
    data = path.read_bytes()
    path.write_bytes(data[:data.rindex(b"moov") - 4])


# --------------------------------------------------------------------------------------------- MELD

MELD_HEADER = "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,StartTime,EndTime"
# (partition, dialogue, utterance, speaker, emotion, sentiment, channels); 48 kHz AAC like the release
MELD_ROWS = [
    ("train", 0, 0, "Chandler", "neutral", "neutral", 2), ("train", 0, 1, "The Interviewer", "joy", "positive", 2),
    ("train", 1, 0, "Monica", "anger", "negative", 6), ("train", 1, 1, "Joey", "sadness", "negative", 2),
    ("train", 125, 3, "Ross", "surprise", "positive", 2),  # the clip without a moov atom
    ("train", 2, 0, "Rachel", "neutral", "neutral", 2),  # a row without a clip
    ("dev", 0, 0, "Phoebe", "joy", "positive", 2), ("dev", 0, 1, "Ross", "neutral", "neutral", 2),
    ("test", 0, 0, "Monica", "fear", "negative", 2), ("test", 0, 1, "Chandler", "disgust", "negative", 2),
]
MELD_FOLDERS = {"train": "train_splits", "dev": "dev_splits_complete", "test": "output_repeated_splits_test"}


def meld_tree(root: Path, emobox_style: bool = False) -> Dict[str, object]:
    """``MELD.Raw`` with the three CSVs (curly quotes, both time forms, a quoted line break) and the clips;
    ``emobox_style``: the train CSV in ``train/`` and every tarball extracted into its own folder."""
    lines: Dict[str, List[str]] = {p: [MELD_HEADER] for p in MELD_FOLDERS}
    for k, (part, dia, utt, speaker, emo, sent, ch) in enumerate(MELD_ROWS):
        start = "00:16:16,059" if k % 2 else "0:13:40,766"
        text = "\u201cOh my God\u201d, he\u2019s \u2014 right." if k != 3 else "\u201cTwo\nlines\u201d"
        lines[part].append(f'{k + 1},"{text}",{speaker},{emo},{sent},{dia},{utt},3,19,"{start}","0:13:42,100"')
        if (dia, utt) == (2, 0):
            continue  # the row without a file
        # the variant: each tarball extracted into its own folder (train/train_splits ...), and test clips
        # named final_videos_testdia<D>_utt<U>.mp4
        folder = (f"{part}/" if emobox_style else "") + MELD_FOLDERS[part]
        name = ("final_videos_test" if emobox_style and part == "test" else "") + f"dia{dia}_utt{utt}.mp4"
        clip = root / folder / name
        x = tone(0.25, 48000, 200.0 + 40 * k)
        write_aac(clip, np.stack([x * (0.5 + 0.1 * c) for c in range(ch)]), 48000)
        if (dia, utt) == (125, 3):
            without_moov(clip)
    write_aac(root / "train_splits" / "dia9_utt9.mp4", np.stack([tone(0.25, 48000)] * 2), 48000)  # no row
    for part, rows in lines.items():
        folder = root / "train" if emobox_style and part == "train" else root
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{part}_sent_emo.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    (root / "train_splits" / "._dia0_utt0.mp4").write_bytes(b"\x00\x05\x16\x07")  # a macOS resource fork
    return {"rows": len(MELD_ROWS), "kept": len(MELD_ROWS) - 2}


# --------------------------------------------------------------------------------------------- MSP-Podcast

MSP_ROWS = [  # FileName, EmoClass, SpkrID, Split_Set
    ("MSP-PODCAST_0001_0008.wav", "N", "127", "Train"), ("MSP-PODCAST_0001_0010.wav", "A", "127", "Train"),
    ("MSP-PODCAST_0002_0001.wav", "H", "Unknown", "Train"), ("MSP-PODCAST_0002_0002.wav", "X", "Unknown", "Train"),
    ("MSP-PODCAST_0003_0001.wav", "S", "45", "Development"), ("MSP-PODCAST_0003_0002.wav", "O", "45", "Test1"),
    ("MSP-PODCAST_0004_0001.wav", "U", "12", "Test1"), ("MSP-PODCAST_0004_0002.wav", "C", "12", "Test2"),
]


def msppodcast_tree(root: Path, form: str = "csv", misspelled: bool = False, old_audio: bool = False,
                    old_split_name: bool = False, rows: Sequence[Tuple[str, str, str, str]] = MSP_ROWS) -> None:
    """MSP-Podcast: ``Audios/`` (or ``Audio/``) and ``Labels/labels_consensus.csv`` (or its variants)."""
    audio = root / ("Audio" if old_audio else "Audios")
    for name, *_ in rows:
        write_wav(audio / name, 0.2)
    split = {"Development": "Validation"} if old_split_name else {}
    name = f"labels_{'concensus' if misspelled else 'consensus'}.{form}"
    (root / "Labels").mkdir(parents=True, exist_ok=True)
    if form == "csv":
        text = "FileName,EmoClass,EmoAct,EmoVal,EmoDom,SpkrID,Gender,Split_Set\n" + "".join(
            f"{f},{c},4.2,3.8,4.0,{s},{'Female' if s == '127' else 'Male'},{split.get(p, p)}\n" for f, c, s, p in rows)
        (root / "Labels" / name).write_text(text, encoding="utf-8")
    else:
        data = {f: {"EmoClass": c, "EmoAct": 4.2, "EmoVal": 3.8, "EmoDom": 4.0, "SpkrID": s, "Gender": "Male",
                    "Split_Set": split.get(p, p)} for f, c, s, p in rows}
        (root / "Labels" / name).write_text(json.dumps(data, indent=2), encoding="utf-8")


# --------------------------------------------------------------------------------------------- CMU-MOSEI

# video id -> rows of (start, end, sentiment, happy, sad, anger, surprise, disgust, fear)
MOSEI_VIDEOS = {
    "-3g5yACwYnA": [(-0.08, 0.6, 1.4, 0.66, 0, 0, 0, 0, 0), (0.7, 1.3, -0.6, 0, 1.0, 0.3, 0, 0, 0)],
    "81406": [(0.1, 0.9, 0.0, 0, 0, 0, 0, 0, 0), (1.0, 1.6, -2.6, 0, 0, 2.0, 0, 0.3, 0)],
    "hh04W3xXa5s": [(0.2, 1.0, 3.0, 1.66, 0, 0, 0.3, 0, 0), (1.1, 1.8, -1.2, 0, 0, 0, 0, 0, 1.0)],
}
MOSEI_FOLDS = {"train": ["-3g5yACwYnA", "hh04W3xXa5s"], "valid": [], "test": ["81406"]}


def mosei_tree(root: Path) -> Path:
    """``Raw/Audio/Full/WAV_16000/<vid>.wav`` and the SDK's ``CMU_MOSEI_Labels.csd`` (HDF5); returns the SDK's
    folds file, written as the SDK writes it (``standard_*_fold = [...]``)."""
    import h5py

    for k, vid in enumerate(MOSEI_VIDEOS):
        write_wav(root / "Raw/Audio/Full/WAV_16000" / f"{vid}.wav", 2.0, freq=150.0 + 60 * k)
    labels = root / "CMU_MOSEI_Labels.csd"
    with h5py.File(labels, "w") as f:
        data = f.create_group("All Labels").create_group("data")
        for vid, rows in MOSEI_VIDEOS.items():
            g = data.create_group(vid)
            g.create_dataset("features", data=np.array([r[2:] for r in rows], dtype=np.float32))
            g.create_dataset("intervals", data=np.array([r[:2] for r in rows], dtype=np.float64))
        meta = f["All Labels"].create_group("metadata")
        meta.create_dataset("root name", (1,), dtype=h5py.special_dtype(vlen=str))[0] = json.dumps("All Labels")
    folds = root / "cmu_mosei_std_folds.py"
    folds.write_text("".join(f"standard_{k}_fold={v!r}\n" for k, v in MOSEI_FOLDS.items()), encoding="utf-8")
    return folds


# --------------------------------------------------------------------------------------------- MEAD

MEAD_CLIPS = [("M003", "angry", 1, "001"), ("M003", "angry", 3, "002"), ("M003", "neutral", 1, "001"),
              ("W009", "happy", 2, "001"), ("W009", "neutral", 1, "001"), ("W009", "contempt", 1, "003")]


def mead_tree(root: Path) -> None:
    """``<SPK>/audio/<emotion>/level_<n>/<NNN>.m4a``: AAC in m4a, 48 kHz stereo (as extracted from audio.tar)."""
    for k, (spk, emo, level, n) in enumerate(MEAD_CLIPS):
        x = tone(0.2, 48000, 180.0 + 30 * k)
        write_aac(root / spk / "audio" / emo / f"level_{level}" / f"{n}.m4a", np.stack([x, x]), 48000)


# --------------------------------------------------------------------------------------------- EmoBox


def emobox_tree(emobox: Path, dataset: str = "cafe", with_valid: bool = False) -> Path:
    """``EmoBox/data/<dataset>/`` (jsonl with float num_frame, label_map.json, fold_K/) and the audio under
    ``EmoBox/downloads/``; one entry is a span (start_time/end_time). Returns ROOT."""
    codes = {"c": "Angry", "j": "Happy", "n": "Neutral", "t": "Sad"}
    entries = []
    for spk in ("01", "02"):
        for k, code in enumerate(codes):
            rel = f"downloads/{dataset}/CaFE_48k/{spk}-{code.upper()}-{k}.wav"
            frames = write_wav(emobox / rel, 0.3, rate=48000, freq=200.0 + 50 * k)
            entry = {"key": f"{dataset}-{spk}-{code.upper()}-{k}", "dataset": dataset, "wav": rel, "type": "raw",
                     "sample_rate": 48000, "num_frame": frames * (1 + 1e-16) + 1e-9, "task": "category",
                     "length": frames / 48000, "emo": code, "channel": 1}
            entries.append(entry)
    long_rel = f"downloads/{dataset}/long/session.wav"
    write_wav(emobox / long_rel, 1.0, rate=48000)
    entries.append({"key": f"{dataset}-long-0", "dataset": dataset, "wav": long_rel, "type": "raw",
                    "sample_rate": 48000, "num_frame": 19200.000000000004, "task": "category", "length": 0.4,
                    "emo": "n", "channel": 1, "start_time": 0.25, "end_time": 0.65})
    root = emobox / "data" / dataset
    root.mkdir(parents=True, exist_ok=True)
    (root / "label_map.json").write_text(json.dumps(codes, indent=4), encoding="utf-8")

    def dump(path: Path, rows) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")

    dump(root / f"{dataset}.jsonl", entries)
    for k, spk in enumerate(("01", "02"), start=1):
        test = [e for e in entries if e["key"].startswith(f"{dataset}-{spk}-")]
        train = [e for e in entries if e not in test]
        if with_valid:
            dump(root / f"fold_{k}" / f"{dataset}_valid_fold_{k}.jsonl", train[:1])
            train = train[1:]
        dump(root / f"fold_{k}" / f"{dataset}_train_fold_{k}.jsonl", train)
        dump(root / f"fold_{k}" / f"{dataset}_test_fold_{k}.jsonl", test)
    return root
