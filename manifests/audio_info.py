"""One place that decides whether an audio file can be listed, and converts it when asked.

:func:`inspect` reads the header with soundfile. For compressed formats (FLAC, OGG, MP3) it also
seeks to the last frame and decodes it, because their headers keep promising the full length
after a file was cut; libsndfile already reports a truncated WAV's true length from the file
size, so WAV files cost one header read, like fairseq's own manifest script. :func:`convert` decodes, averages channels and resamples to 16 kHz with torchaudio.
Both return a :class:`Entry` (listable, with its 16 kHz length) or a skip reason, never raise for
a bad file: every skip is reported with its reason.
"""

import os
from dataclasses import dataclass
from typing import Optional

import numpy as np
import soundfile as sf

TARGET_RATE = 16000

# skip reasons (the summary counts them in this order)
UNREADABLE = "unreadable"
EMPTY = "empty"
TOO_SHORT = "too short"
TOO_LONG = "too long"
UNSUPPORTED = "unsupported"
NEEDS_RESAMPLING = "needs resampling"
REASONS = (UNREADABLE, EMPTY, TOO_SHORT, TOO_LONG, UNSUPPORTED, NEEDS_RESAMPLING)


@dataclass
class Entry:
    """Outcome for one file: ``frames`` at 16 kHz when listable, else ``reason`` + ``detail``."""

    path: str
    frames: int = 0
    samplerate: int = 0
    channels: int = 0
    reason: Optional[str] = None
    detail: str = ""
    converted: bool = False

    @property
    def ok(self) -> bool:
        return self.reason is None


_FORMATS = {f.lower() for f in sf.available_formats()} | {"oga", "opus"}
_HEADER_IS_TRUTH = {"wav", "wave"}  # libsndfile derives a truncated WAV's length from the file size


def inspect(path: str) -> Entry:
    """Header (+ last-frame check for compressed formats). Sets ``reason`` for unreadable,
    unsupported or empty files."""
    ext = os.path.splitext(path)[1].lower().lstrip(".")
    if ext not in _FORMATS:
        return Entry(path, reason=UNSUPPORTED, detail=f"soundfile cannot read .{ext}")
    try:
        with sf.SoundFile(path) as f:
            frames, rate, channels = f.frames, f.samplerate, f.channels
            if frames > 0 and ext not in _HEADER_IS_TRUTH:
                f.seek(frames - 1)
                if len(f.read(1, dtype="float32", always_2d=True)) != 1:
                    return Entry(path, reason=UNREADABLE, detail=f"truncated: header says {frames} frames")
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as e:
        return Entry(path, reason=UNREADABLE, detail=str(e).splitlines()[0][:200])
    if frames == 0:
        return Entry(path, samplerate=rate, channels=channels, reason=EMPTY, detail="0 frames")
    return Entry(path, frames=frames, samplerate=rate, channels=channels)


def length_at_target(entry: Entry) -> int:
    """Frames after resampling to 16 kHz (what torchaudio's resample produces)."""
    return int(np.ceil(entry.frames * TARGET_RATE / entry.samplerate))


def check_duration(entry: Entry, min_seconds: float, max_seconds: Optional[float]) -> Entry:
    seconds = length_at_target(entry) / TARGET_RATE
    if seconds < min_seconds:
        entry.reason, entry.detail = TOO_SHORT, f"{seconds:.2f} s < --min-seconds {min_seconds}"
    elif max_seconds is not None and seconds > max_seconds:
        entry.reason, entry.detail = TOO_LONG, f"{seconds:.2f} s > --max-seconds {max_seconds}"
    return entry


def convert(entry: Entry, dest: str) -> Entry:
    """Write ``entry.path`` as 16 kHz mono 16-bit wav at ``dest`` (channels averaged)."""
    import torch
    import torchaudio

    try:
        wav, rate = sf.read(entry.path, dtype="float32", always_2d=True)  # [S, C]
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        return Entry(entry.path, reason=UNREADABLE, detail=str(e).splitlines()[0][:200])
    mono = torch.from_numpy(wav.mean(axis=1))
    if rate != TARGET_RATE:
        mono = torchaudio.functional.resample(mono, rate, TARGET_RATE)
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    sf.write(dest, mono.clamp(-1, 1).numpy(), TARGET_RATE, subtype="PCM_16")
    return Entry(entry.path, frames=len(mono), samplerate=TARGET_RATE, channels=1, converted=True)
