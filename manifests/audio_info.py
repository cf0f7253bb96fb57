"""The one place that decides whether an audio file can be listed, converts it, and maps over many files.

* :func:`inspect` opens a file once with soundfile and returns a :class:`Probe`: its length,
  sample rate and channels, or a skip reason with a detail. It never raises for a bad file.
  What it reads per format, to catch files that were cut (a copy or download that stopped):

  - WAV, AIFF, W64, RF64, CAF (uncompressed): only the header. libsndfile already derives the
    true frame count from the file size, and its header log says ``data : N (should be M)``
    when the declared data chunk is longer than the file; that is reported as truncated.
    This is the same work as ``soundfile.info``, which fairseq's own manifest script does.
  - FLAC, OGG/Opus: the header, then a seek to the last frame and a one-frame read, because
    their headers keep promising the full length after a cut.
  - MP3: a full decode to count frames, because an MP3 header's length can be an estimate;
    the listed length is then exactly what ``soundfile.read`` returns.

  Compressed and video containers (:data:`manifests.media.AV_EXTENSIONS`: mp4, m4a, webm,
  avi, opus ...) are opened with PyAV instead (:func:`manifests.media.probe`, header only);
  their length is an estimate until :func:`convert` decodes them, and they are never listed
  as they are (fairseq reads audio with soundfile), only converted.

* :func:`convert` decodes (soundfile or PyAV), optionally cuts a span (``segment``, in
  seconds; a negative start is 0), averages channels, resamples to 16 kHz with
  ``torchaudio.functional.resample`` and writes a wav atomically (16-bit PCM, or 32-bit float
  when the source was float), returning the probe of the written file.

* :func:`map_chunked` runs a function over many items, in order, either in this process
  (``workers <= 1``) or in a ``ProcessPoolExecutor`` fed with chunks, with a tqdm bar.
"""

import logging
import os
import re
import sys
from typing import Callable, FrozenSet, List, NamedTuple, Optional, Sequence, Tuple, TypeVar

import numpy as np
import soundfile as sf
from tqdm import tqdm

from . import media

logger = logging.getLogger(__name__)

TARGET_RATE = 16000

# Skip reasons, in the order summaries list them.
UNREADABLE = "unreadable"
EMPTY = "empty"
TOO_SHORT = "too short"
TOO_LONG = "too long"
UNSUPPORTED = "unsupported"
NEEDS_RESAMPLING = "needs resampling"
REASONS = (UNREADABLE, EMPTY, TOO_SHORT, TOO_LONG, UNSUPPORTED, NEEDS_RESAMPLING)

# soundfile's errors for a file it cannot open or decode: LibsndfileError (a RuntimeError
# subclass) for bad content, OSError for the file system.
AUDIO_ERRORS = (sf.LibsndfileError, RuntimeError, OSError)

# How each readable extension is checked for a cut (see the module docstring).
_HEADER, _LAST_FRAME, _DECODE = "header", "last frame", "decode"
_CHECK_BY_FORMAT = {
    "WAV": _HEADER, "WAVEX": _HEADER, "W64": _HEADER, "RF64": _HEADER, "AIFF": _HEADER, "CAF": _HEADER,
    "AU": _HEADER, "FLAC": _LAST_FRAME, "OGG": _LAST_FRAME, "MP3": _DECODE,
}
# file extension -> soundfile format name, for the formats this libsndfile build reads
_EXTENSIONS = {
    ".wav": "WAV", ".wave": "WAV", ".w64": "W64", ".rf64": "RF64", ".aif": "AIFF", ".aiff": "AIFF",
    ".aifc": "AIFF", ".caf": "CAF", ".au": "AU", ".snd": "AU", ".flac": "FLAC", ".ogg": "OGG",
    ".oga": "OGG", ".opus": "OGG", ".mp3": "MP3",
}
_AVAILABLE = set(sf.available_formats())
SOUNDFILE_EXTENSIONS: FrozenSet[str] = frozenset(e for e, fmt in _EXTENSIONS.items() if fmt in _AVAILABLE)
# soundfile's first; PyAV decodes the containers libsndfile does not read
READABLE_EXTENSIONS: FrozenSet[str] = SOUNDFILE_EXTENSIONS | (media.AV_EXTENSIONS - SOUNDFILE_EXTENSIONS)
SOUNDFILE, PYAV = "soundfile", "pyav"

# "data : 32000 (should be 15978)": the data chunk declares more bytes than the file holds.
_DECLARED_VS_ACTUAL = re.compile(r"^\s*(data|SSND)\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
# Writers that stream (cannot seek back) leave a placeholder size; that is not a cut.
_PLACEHOLDER_MIN = 0x7FFF0000
_MP3_FRAME = 1152  # samples per MPEG-1 layer III frame: the slack allowed between header and decode


class Probe(NamedTuple):
    """What :func:`inspect` or :func:`convert` found for one file.

    ``frames`` (at ``samplerate``), ``channels`` and ``subtype`` describe a usable file;
    ``reason`` (one of :data:`REASONS`) and ``detail`` describe why it cannot be listed.
    ``decoder`` is :data:`SOUNDFILE` or :data:`PYAV` (then ``frames`` is the container's
    estimate and ``subtype`` the codec).
    """

    frames: int = 0
    samplerate: int = 0
    channels: int = 0
    subtype: str = ""
    reason: Optional[str] = None
    detail: str = ""
    decoder: str = SOUNDFILE

    @property
    def ok(self) -> bool:
        return self.reason is None

    @property
    def native(self) -> bool:
        """Already 16 kHz mono and read by soundfile (as fairseq reads audio): can be listed as it is."""
        return self.samplerate == TARGET_RATE and self.channels == 1 and self.decoder == SOUNDFILE


def skip(reason: str, detail: str) -> Probe:
    """A probe for a file that cannot be listed."""
    return Probe(reason=reason, detail=detail)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:300] if text else type(error).__name__


def _header_truncation(extra_info: str) -> Optional[str]:
    """A detail string when libsndfile's header log says the data chunk was cut, else None."""
    for chunk, declared, actual in _DECLARED_VS_ACTUAL.findall(extra_info):
        declared, actual = int(declared), int(actual)
        if declared > actual and declared < _PLACEHOLDER_MIN:
            return f"truncated: the {chunk} chunk declares {declared} bytes, the file holds {actual}"
    return None


def _count_decoded_frames(f: sf.SoundFile, block: int = 65536) -> int:
    """Frames that actually decode from the current position (``SoundFile.blocks`` pads short reads)."""
    buffer = np.empty((block, f.channels), dtype=np.float32)
    total = 0
    while True:
        n = len(f.read(out=buffer))
        if n == 0:
            return total
        total += n


def _last_frame_problem(f: sf.SoundFile, frames: int) -> Optional[str]:
    """None when the last of ``frames`` decodes, else a detail saying the file was cut."""
    try:
        f.seek(frames - 1)
        if len(f.read(1, dtype="float32", always_2d=True)) == 1:
            return None
        why = "it reads as nothing"
    except AUDIO_ERRORS as e:
        why = f"libsndfile: {_first_line(e)}"
    return f"truncated: the header says {frames} frames but the last one cannot be read ({why})"


def inspect(path: str) -> Probe:
    """Check one file; see the module docstring for what is read per format.

    Returns a :class:`Probe` with the file's own frames/sample rate/channels, or with
    ``reason`` unsupported (extension soundfile cannot read), unreadable (cannot be opened,
    cut, or a broken link; ``detail`` has soundfile's message) or empty (0 bytes or 0 frames).
    """
    ext = os.path.splitext(path)[1].lower()
    if ext in media.AV_EXTENSIONS and ext not in SOUNDFILE_EXTENSIONS:
        return _inspect_av(path)
    if ext not in READABLE_EXTENSIONS:
        return skip(UNSUPPORTED, f"soundfile (libsndfile {sf.__libsndfile_version__}) cannot read '{ext}' files; "
                                 f"convert them to wav/flac first or leave '{ext.lstrip('.')}' out of --ext")
    try:
        with sf.SoundFile(path) as f:
            frames, rate, channels, subtype = f.frames, f.samplerate, f.channels, f.subtype
            check = _CHECK_BY_FORMAT.get(f.format, _HEADER)
            problem = None
            if check == _HEADER:
                problem = _header_truncation(f.extra_info)
            elif check == _LAST_FRAME:
                if f.format == "OGG" and "ended unexpectedly" in f.extra_info:
                    problem = "truncated: the Ogg stream ends without its end-of-stream page"
                elif frames > 0:
                    problem = _last_frame_problem(f, frames)
            elif check == _DECODE:
                decoded = _count_decoded_frames(f)
                if decoded + _MP3_FRAME < frames:
                    problem = f"truncated: the header says {frames} frames, the data decodes to {decoded}"
                frames = decoded
    except AUDIO_ERRORS as e:
        # Say why in plain words where libsndfile does not: a dangling link, a 0-byte file.
        if os.path.islink(path) and not os.path.exists(path):
            return skip(UNREADABLE, f"broken symlink to {os.readlink(path)}")
        try:
            if os.path.getsize(path) == 0:
                return skip(EMPTY, "0 bytes")
        except OSError:
            pass  # vanished meanwhile: soundfile's message below says so
        return skip(UNREADABLE, _first_line(e))
    if problem is not None:
        return skip(UNREADABLE, problem)
    if rate <= 0 or channels <= 0:
        return skip(UNREADABLE, f"header says {rate} Hz and {channels} channel(s)")
    if frames == 0:
        return skip(EMPTY, "0 frames")
    return Probe(frames=frames, samplerate=rate, channels=channels, subtype=subtype)


def _inspect_av(path: str) -> Probe:
    """:func:`inspect` for a container PyAV opens: header only, length estimated."""
    if os.path.islink(path) and not os.path.exists(path):
        return skip(UNREADABLE, f"broken symlink to {os.readlink(path)}")
    try:
        info = media.probe(path)
    except media.MediaError as e:
        return skip(EMPTY if str(e) == "0 bytes" else UNREADABLE, f"FFmpeg (PyAV): {e}")
    except OSError as e:
        return skip(UNREADABLE, _first_line(e))
    if info.samplerate <= 0 or info.channels <= 0:
        return skip(UNREADABLE, f"FFmpeg (PyAV): the audio stream says {info.samplerate} Hz and {info.channels} "
                                f"channel(s)")
    return Probe(frames=info.frames, samplerate=info.samplerate, channels=info.channels, subtype=info.codec,
                 decoder=PYAV)


def frames_at_target(frames: int, samplerate: int) -> int:
    """Length after resampling ``frames`` at ``samplerate`` to 16 kHz.

    This is the length ``torchaudio.functional.resample`` returns: ``ceil(frames * 16000 / rate)``.
    """
    if samplerate == TARGET_RATE:
        return frames
    return -(-frames * TARGET_RATE // samplerate)


def _is_fresh_conversion(src: str, dest: str, expected_frames: Optional[int]) -> bool:
    """True when ``dest`` is a regular 16 kHz mono wav written after ``src`` (with ``expected_frames``
    frames when that is known exactly; conversions are written atomically, so an existing one is whole)."""
    if os.path.islink(dest) or not os.path.isfile(dest):
        return False
    try:
        if os.path.getmtime(dest) < os.path.getmtime(src):
            return False
        info = sf.info(dest)
    except AUDIO_ERRORS:
        return False
    if info.samplerate != TARGET_RATE or info.channels != 1 or info.frames == 0:
        return False
    return expected_frames is None or info.frames == expected_frames


Segment = Tuple[float, float]


def _read(src: str, source: Probe, segment: Optional[Segment]) -> Tuple[np.ndarray, int]:
    """Decode ``src`` (or its ``segment``) to float32 [frames, channels] with the decoder of its probe."""
    if source.decoder == PYAV:
        if segment is None:
            return media.decode(src)
        return media.decode(src, *segment)
    if segment is None:
        return sf.read(src, dtype="float32", always_2d=True)
    first, last = media.span_frames(segment[0], segment[1], source.samplerate, source.frames)
    if last <= first:
        return np.zeros((0, max(source.channels, 1)), dtype=np.float32), source.samplerate
    return sf.read(src, start=first, stop=last, dtype="float32", always_2d=True)


def convert(src: str, dest: str, source: Probe, reuse: bool = True, segment: Optional[Segment] = None) -> Probe:
    """Write ``src`` (or the span ``segment`` = (start, end) seconds of it) as a 16 kHz mono wav at ``dest``.

    Returns the probe of what was written (``channels`` is 1; the source's channel count is
    ``source.channels``, so a caller counts downmixed files from it). Channels are averaged;
    the rate is changed with ``torchaudio.functional.resample``. The wav is 32-bit float when
    the source was float, else 16-bit PCM (clipped to [-1, 1]). It is written to a temporary
    name and renamed, so an interrupted run never leaves half a file, and a symlink at
    ``dest`` (from an earlier run) is replaced, never written through. With ``reuse``, a
    ``dest`` newer than ``src`` (with the expected length where that is known exactly) is kept
    as it is (``detail`` says "reused"). A file the decoder cannot read, and a span that is
    empty after clamping to the file, come back as skipped probes naming the reason.
    """
    exact = source.decoder == SOUNDFILE and segment is None
    expected = frames_at_target(source.frames, source.samplerate) if exact else None
    float_out = source.subtype in ("FLOAT", "DOUBLE")
    if reuse and _is_fresh_conversion(src, dest, expected):
        frames = expected if expected is not None else sf.info(dest).frames
        return Probe(frames, TARGET_RATE, 1, "FLOAT" if float_out else "PCM_16", detail="reused")
    try:
        audio, rate = _read(src, source, segment)  # [frames, channels]
    except media.MediaError as e:
        return skip(UNREADABLE, f"FFmpeg (PyAV): {e}")
    except AUDIO_ERRORS as e:
        return skip(UNREADABLE, _first_line(e))
    if len(audio) == 0:
        if segment is not None:
            return skip(EMPTY, f"the span {segment[0]:.3f}-{segment[1]:.3f} s holds no audio of this "
                               f"{source.frames / max(source.samplerate, 1):.3f} s file")
        return skip(EMPTY, "0 frames decoded")
    mono = audio.mean(axis=1) if audio.shape[1] > 1 else audio[:, 0]
    if rate != TARGET_RATE:
        import torch
        import torchaudio

        with torch.no_grad():
            mono = torchaudio.functional.resample(torch.from_numpy(np.ascontiguousarray(mono)), rate,
                                                  TARGET_RATE).numpy()
    subtype = "FLOAT" if float_out else "PCM_16"
    if not float_out:
        mono = mono.clip(-1.0, 1.0)
    os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
    tmp = f"{dest}.tmp{os.getpid()}"
    try:
        sf.write(tmp, mono, TARGET_RATE, subtype=subtype, format="WAV")
        os.replace(tmp, dest)
    except AUDIO_ERRORS as e:
        if os.path.lexists(tmp):
            os.remove(tmp)
        raise OSError(f"cannot write the converted file {dest}: {_first_line(e)}; "
                      f"is there space and write permission under --resample-to?") from e
    return Probe(len(mono), TARGET_RATE, 1, subtype)


# ---------------------------------------------------------------------------------------------
# running over many files

T = TypeVar("T")
R = TypeVar("R")

# Set in each pool worker by _init_worker: the function and the whole item list, passed once
# (inherited without copying under fork), so that a task is just a (start, stop) range.
_WORKER_FN: Optional[Callable] = None
_WORKER_ITEMS: Sequence = ()


def _init_worker(fn: Callable, items: Sequence) -> None:
    """Pool workers: remember the job; one math thread each (torch may be imported later to resample)."""
    global _WORKER_FN, _WORKER_ITEMS
    _WORKER_FN, _WORKER_ITEMS = fn, items
    os.environ["OMP_NUM_THREADS"] = "1"
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


def _run_range(bounds: Tuple[int, int]) -> list:
    start, stop = bounds
    return [_WORKER_FN(item) for item in _WORKER_ITEMS[start:stop]]


def chunk_size(n_items: int, workers: int) -> int:
    """About 8 chunks per worker (balance against a slow file), between 1 and 1024 items each."""
    return max(1, min(1024, -(-n_items // (workers * 8))))


def map_chunked(fn: Callable[[T], R], items: Sequence[T], workers: int = 1, progress: bool = True,
                desc: str = "files") -> List[R]:
    """``[fn(x) for x in items]`` in order, with a tqdm bar, over ``workers`` processes.

    ``workers <= 1`` runs in this process (no pool). Otherwise ``fn`` (a module-level function
    or a ``functools.partial`` of one, so that it pickles) runs in a ``ProcessPoolExecutor``:
    each worker gets ``fn`` and the items once, at start, and then only ``(start, stop)``
    chunks, so a chunk costs one small message each way plus its results.
    """
    # a Sequence (list, or the lazy lines of a 15-million-line manifest) is used as is
    items = items if isinstance(items, Sequence) else list(items)
    out: List[R] = []
    with tqdm(total=len(items), unit="file", desc=desc, disable=not progress, dynamic_ncols=True) as bar:
        if workers <= 1 or len(items) < 2:
            for item in items:
                out.append(fn(item))
                bar.update(1)
            return out
        from concurrent.futures import ProcessPoolExecutor  # not imported for one worker

        size = chunk_size(len(items), workers)
        bounds = [(i, min(i + size, len(items))) for i in range(0, len(items), size)]
        with ProcessPoolExecutor(max_workers=min(workers, len(bounds)), initializer=_init_worker,
                                 initargs=(fn, items)) as pool:
            for results in pool.map(_run_range, bounds):
                out.extend(results)
                bar.update(len(results))
    return out
