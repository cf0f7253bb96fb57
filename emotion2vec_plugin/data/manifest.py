"""Reading fairseq wav manifests.

A manifest is the format of fairseq's ``examples/wav2vec/wav2vec_manifest.py``::

    /abs/path/to/audio/root
    relative/path/a.wav<TAB>48000
    relative/path/b.flac<TAB>31200

Line 1 is the root directory; every further line is a path relative to the root and its length
in samples at 16 kHz. This module parses that format with errors that name the file and line.
It has no dependency on fairseq or torch so that the manifest tools can share it.
"""

import os
from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np

from ..errors import Emotion2vecError
from .columns import StringColumn
from .manifest_scan import read_first_line, scan_utterances


class ManifestError(Emotion2vecError, ValueError):
    """A manifest that cannot be used; the message names the file, the line and the fix."""


class AudioReadError(Emotion2vecError, RuntimeError):
    """An utterance that cannot be used; the message names manifest:line and the file."""


class TextFileError(Emotion2vecError, ValueError):
    """A text input (manifest, labels, lengths) that is not a readable UTF-8 file; names path(:line)."""


def read_utf8(path: str, what: str = "text file", fix: str = "re-save it as UTF-8, or check that this is the right file") -> str:
    """The text of ``path`` decoded as UTF-8 (a BOM is dropped).

    Raises:
        TextFileError: ``path`` is a directory, or holds bytes that are not UTF-8 (random
            bytes, UTF-16, Latin-1): the message gives ``path:line``, the byte and the fix.
    """
    if os.path.isdir(path):
        raise TextFileError(f"{path}: is a directory, expected a {what}")
    with open(path, "rb") as f:
        data = f.read()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        utf16 = data[:2] in (b"\xff\xfe", b"\xfe\xff")
        kind = "UTF-16 text (it starts with a UTF-16 byte-order mark)" if utf16 else "not UTF-8 text"
        raise TextFileError(
            f"{path}:{line}: expected a UTF-8 {what}, got {kind}: byte 0x{data[e.start]:02x} at offset {e.start} "
            f"({e.reason}); {fix}") from None


@dataclass
class Manifest:
    """A parsed manifest, held in flat read-only buffers (``data/columns.py``): no Python object
    per utterance, so loader workers forked from the trainer share it instead of copying it.

    Attributes:
        path: the manifest file.
        root: the audio root directory (line 1).
        names: relative paths, one per utterance [n] (``names[i]`` is a str).
        sizes: lengths in samples [n], int64.
        line_numbers: the 1-based line each utterance came from [n], int64 (for error messages).
    """

    path: str
    root: str
    names: StringColumn
    sizes: np.ndarray
    line_numbers: np.ndarray

    def __post_init__(self) -> None:
        if not isinstance(self.names, StringColumn):
            self.names = StringColumn.from_strings(self.names)
        self.sizes = np.asarray(self.sizes, dtype=np.int64)
        self.line_numbers = np.asarray(self.line_numbers, dtype=np.int64)
        if not len(self.names) == len(self.sizes) == len(self.line_numbers):
            raise ValueError(f"{self.path}: {len(self.names)} names, {len(self.sizes)} sizes and "
                             f"{len(self.line_numbers)} line numbers")

    def __len__(self) -> int:
        return len(self.sizes)

    def full_path(self, i: int) -> str:
        return os.path.join(self.root, self.names[i])

    def where(self, i: int) -> str:
        """``manifest:line`` of utterance ``i``, for error messages."""
        return f"{self.path}:{int(self.line_numbers[i])}"

    @property
    def nbytes(self) -> int:
        """Bytes held by the per-utterance buffers."""
        return self.names.nbytes + int(self.sizes.nbytes + self.line_numbers.nbytes)


def read_manifest(path: str, check_root: bool = True) -> Manifest:
    """Parse a fairseq wav manifest.

    Line 1 is read and its root checked first, so a missing root fails at once whatever the
    size of the file. The utterance lines are parsed vectorised (``data/manifest_scan.py``: 15
    million lines in seconds); a file the fast parser does not take line by line goes through
    :func:`parse_lines`, which gives the same result or names the bad line.

    Args:
        path: the ``.tsv`` file.
        check_root: raise if the root directory on line 1 does not exist.

    Raises:
        ManifestError: empty file, missing root, a line without ``<TAB>num_samples``, a
            non-integer or non-positive length. The message gives ``path:line`` and the line.
    """
    if os.path.isdir(path):
        raise ManifestError(f"{path}: is a directory, expected a manifest file such as "
                            f"{os.path.join(path, 'train.tsv')}")
    if not os.path.isfile(path):
        raise ManifestError(
            f"manifest {path!r} does not exist; write one with `e2v-manifest AUDIO_ROOT --dest DIR` "
            f"or point task.data at the folder holding <subset>.tsv"
        )
    first, body_start = read_first_line(path)
    try:
        root_lines = first.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        root_lines = None  # parse_lines names the byte
    if root_lines is not None and len(root_lines) == 1 and root_lines[0].strip():
        root = root_lines[0].strip()
        if check_root:
            check_root_dir(path, root)
        scanned = scan_utterances(path, body_start)
        if scanned is not None:
            names, sizes, line_numbers = scanned
            return Manifest(path=path, root=root, names=names, sizes=sizes, line_numbers=line_numbers)
    return parse_lines(path, check_root)


def check_root_dir(path: str, root: str) -> None:
    """ManifestError unless the root ``root`` on line 1 of ``path`` is a directory."""
    if not os.path.isdir(root):
        raise ManifestError(
            f"{path}:1: audio root {root!r} is not a directory; the manifest was probably written on "
            f"another machine: edit line 1 or re-run e2v-manifest"
        )


def parse_lines(path: str, check_root: bool = True) -> Manifest:
    """:func:`read_manifest` line by line with Python strings: slow and memory-hungry for millions
    of lines, but it names the first bad line. Used for what the fast parser does not take."""
    try:
        lines = read_utf8(path, "manifest (root on line 1, then 'relpath<TAB>num_samples' lines)",
                          "rebuild it with e2v-manifest, or check that this is the right file").splitlines()
    except TextFileError as e:
        raise ManifestError(str(e)) from None
    if not lines or not lines[0].strip():
        raise ManifestError(
            f"{path}:1: expected the audio root directory on line 1, found an empty line/file"
        )
    root = lines[0].strip()
    if check_root:
        check_root_dir(path, root)
    names: List[str] = []
    sizes: List[int] = []
    line_numbers: List[int] = []
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) < 2:
            raise ManifestError(
                f"{path}:{lineno}: expected 'relative/path<TAB>num_samples', got {line!r} "
                f"(is the separator a space instead of a tab?)"
            )
        try:
            size = int(parts[1])
        except ValueError:
            raise ManifestError(
                f"{path}:{lineno}: length {parts[1]!r} is not an integer number of samples"
            ) from None
        if size <= 0:
            raise ManifestError(f"{path}:{lineno}: length {size} must be positive")
        names.append(parts[0])
        sizes.append(size)
        line_numbers.append(lineno)
    return Manifest(path=path, root=root, names=names, sizes=sizes, line_numbers=line_numbers)


def sample_indices(n: int, limit: Optional[int], seed: int = 0) -> np.ndarray:
    """All of ``range(n)`` when ``limit`` is None/0 or ``n <= limit``; else ``limit`` distinct
    indices drawn with ``seed``, in increasing order (the start-up check of large manifests)."""
    if not limit or n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


def first_missing_files(manifest: Manifest, limit: Optional[int] = 10,
                        indices: Optional[Sequence[int]] = None) -> List[str]:
    """``path:line: file`` strings for utterances whose audio file does not exist, looking at
    ``indices`` (default: every utterance) in order and stopping after ``limit`` of them."""
    bad = []
    for i in (range(len(manifest)) if indices is None else indices):
        if not os.path.isfile(manifest.full_path(i)):
            bad.append(f"{manifest.where(i)}: {manifest.full_path(i)} does not exist")
            if limit is not None and len(bad) >= limit:
                break
    return bad


def read_mono(path: str, where: str, sample_rate: int = 16000):
    """Decode ``path`` as float32 mono at ``sample_rate`` or raise AudioReadError naming ``where``.

    soundfile is imported here so that parsing manifests needs no audio library.
    """
    import soundfile as sf

    try:
        wav, sr = sf.read(path, dtype="float32", always_2d=False)
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        raise AudioReadError(f"{where}: cannot read {path}: {e}") from None
    if sr != sample_rate:
        raise AudioReadError(f"{where}: {path} is {sr} Hz, expected {sample_rate}; "
                             f"convert with `e2v-manifest ROOT --dest DIR --resample-to OUT`")
    if wav.ndim != 1:
        raise AudioReadError(f"{where}: {path} has {wav.shape[1]} channels, expected mono; "
                             f"convert with `e2v-manifest ... --resample-to OUT`")
    return wav
