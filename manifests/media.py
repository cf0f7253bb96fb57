"""Compressed and video media (mp4, m4a, webm, avi, mkv, mov, opus, aac ...) through PyAV.

PyAV (``av`` on PyPI) carries its own FFmpeg libraries in the wheel, so no system ffmpeg is
needed. soundfile keeps reading what libsndfile reads (wav, flac, ogg, mp3; see
:mod:`manifests.audio_info`); everything in :data:`AV_EXTENSIONS` comes here.

* :func:`probe` opens the container (header only) and returns its first audio stream's rate,
  channels, codec and an *estimated* length from the container's duration. A file that
  FFmpeg cannot open (MELD's ``train/dia125_utt3.mp4`` has no ``moov`` atom) raises
  :class:`MediaError` with FFmpeg's own reason ("moov atom not found").
* :func:`decode` decodes the whole stream (or a span of it) to float32 ``[frames, channels]``
  at the stream's own rate; averaging channels and resampling are the caller's business
  (:func:`manifests.audio_info.convert`), so that every decoder goes through one mixing rule.
"""

import logging
import os
from typing import List, NamedTuple, Optional, Tuple

import numpy as np

from emotion2vec_plugin.errors import Emotion2vecError

logger = logging.getLogger(__name__)

# What the manifest tools send to PyAV (containers whose audio libsndfile does not read).
AV_EXTENSIONS = frozenset({".mp4", ".m4a", ".m4b", ".mov", ".webm", ".mkv", ".avi", ".opus", ".aac", ".wma",
                           ".3gp"})

# integer sample formats -> full scale, for the conversion to float in [-1, 1)
_INT_SCALE = {"s16": 32768.0, "s16p": 32768.0, "s32": 2147483648.0, "s32p": 2147483648.0,
              "s64": 9223372036854775808.0, "s64p": 9223372036854775808.0}


class MediaError(Emotion2vecError):
    """A file FFmpeg cannot open or decode; the message is FFmpeg's reason (one line)."""


class MediaInfo(NamedTuple):
    """The first audio stream of a container: ``frames`` is estimated from its duration."""

    frames: int
    samplerate: int
    channels: int
    codec: str


def _av():
    """Import PyAV with FFmpeg's error messages kept (they carry the reason, e.g. 'moov atom not found')."""
    import av
    import av.logging

    av.logging.set_level(av.logging.ERROR)
    # the reason comes back in the exception's message; FFmpeg's log lines would repeat it once per file
    logging.getLogger("libav").setLevel(logging.CRITICAL)
    return av


def _reason(error: BaseException) -> str:
    """FFmpeg's reason in one line: PyAV appends the last error log line ('moov atom not found')."""
    text = " ".join(str(error).split())
    if "last error log:" in text:
        head, log = text.split("last error log:", 1)
        log = log.strip()
        if log.startswith("[") and "]" in log:
            log = log.split("]", 1)[1].strip()
        return f"{log} ({head.split(':')[0].strip().rstrip(';')})"[:300]
    return text[:300] or type(error).__name__


def _open(path: str):
    av = _av()
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise MediaError("0 bytes")
    try:
        container = av.open(path)
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise MediaError(_reason(e)) from None
    streams = [s for s in container.streams if s.type == "audio"]
    if not streams:
        kinds = ", ".join(sorted({s.type for s in container.streams})) or "no streams"
        container.close()
        raise MediaError(f"no audio stream ({kinds})")
    return container, streams[0]


def probe(path: str) -> MediaInfo:
    """Rate, channels, codec and estimated length of ``path``'s first audio stream (header only)."""
    container, stream = _open(path)
    try:
        rate = int(stream.rate or stream.codec_context.sample_rate or 0)
        channels = int(stream.channels or stream.codec_context.channels or 0)
        if stream.duration is not None and stream.time_base is not None:
            seconds = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            seconds = container.duration / 1e6  # AV_TIME_BASE
        else:
            seconds = 0.0
        return MediaInfo(int(round(seconds * rate)), rate, channels, stream.codec_context.name)
    finally:
        container.close()


def _to_float(frame) -> np.ndarray:
    """One decoded AudioFrame -> float32 [samples, channels]."""
    data = frame.to_ndarray()
    name = frame.format.name
    channels = len(frame.layout.channels)
    if frame.format.is_planar:
        data = data.T  # [channels, samples] -> [samples, channels]
    else:
        data = data.reshape(-1, channels)  # packed: [1, samples * channels]
    if name in _INT_SCALE:
        return (data / _INT_SCALE[name]).astype(np.float32)
    if name in ("u8", "u8p"):
        return ((data.astype(np.float32) - 128.0) / 128.0).astype(np.float32)
    return data.astype(np.float32, copy=False)


def decode(path: str, start: Optional[float] = None, end: Optional[float] = None) -> Tuple[np.ndarray, int]:
    """Decode ``path``'s first audio stream to float32 ``[frames, channels]`` and its rate.

    With ``start``/``end`` (seconds, ``start`` clamped to 0) only that span is returned; the
    span is cut at the stream's own rate after a full decode (simple and exact; the spans
    that need this are short files' parts).

    Raises:
        MediaError: the container cannot be opened, has no audio, or fails mid-stream.
    """
    av = _av()
    container, stream = _open(path)
    chunks: List[np.ndarray] = []
    try:
        rate = int(stream.rate or 0)
        for frame in container.decode(stream):
            chunks.append(_to_float(frame))
            rate = frame.sample_rate or rate
    except (av.error.FFmpegError, ValueError) as e:
        raise MediaError(f"decoding stopped after {sum(len(c) for c in chunks)} frames: {_reason(e)}") from None
    finally:
        container.close()
    if not chunks:
        raise MediaError("the audio stream decodes to nothing")
    audio = np.concatenate(chunks)
    if start is not None or end is not None:
        first, last = span_frames(start, end, rate, len(audio))
        audio = audio[first:last]
    return audio, rate


def span_frames(start: Optional[float], end: Optional[float], rate: int, total: int) -> Tuple[int, int]:
    """Frame range ``[first, last)`` of the span ``start..end`` seconds in a file of ``total`` frames.

    A negative or missing start is 0 (CMU-MOSEI has a few negative interval starts); a missing
    end or one past the file is the file's end. The range may be empty; the caller says so.
    """
    first = 0 if start is None else max(0, int(round(start * rate)))
    last = total if end is None else min(total, int(round(end * rate)))
    return min(first, total), max(min(first, total), last)
