"""The feature store: extracted utterance features on disk, read (and written) here.

Two on-disk formats, both in manifest order (utterance i of the features is line i of the
manifest, of the labels and of the groups):

* **stacked** (the emotion2vec probe format, ``e2v-extract --format stacked``):
  ``PREFIX.npy`` is every frame of every utterance concatenated, shape [sum_i T_i, D], and
  ``PREFIX.lengths`` holds one integer per line, T_i, the number of frames of utterance i.
  Utterance-level features are the same with every length 1, or a 2-D ``PREFIX.npy`` [N, D]
  without a lengths file (one row per utterance). ``PREFIX.npy`` is memory-mapped
  (``np.load(mmap_mode='r')``), so a multi-GB feature file costs no RAM until batches touch it.
* **directory** (``e2v-extract --format npy``): ``DIR/index.tsv`` lists ``utt_id<TAB>path``
  per line, ``path`` relative to ``DIR``, pointing at one ``.npy`` per utterance holding
  [T_i, D] frames or a [D] utterance vector (read as T_i = 1). Files are read into RAM once.

:func:`load_features` returns a :class:`FeatureSet`: ``feats[i]`` is utterance i as a
[T_i, D] array (any float dtype; callers cast per batch). Every inconsistency raises
:class:`FeatureFormatError` (a ``ValueError``) naming the file and line, what was expected,
what was found, and how to fix it.
"""

import logging
import os
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import Emotion2vecError
from .manifest import TextFileError, read_utf8

logger = logging.getLogger(__name__)

INDEX_NAME = "index.tsv"


class FeatureFormatError(Emotion2vecError, ValueError):
    """Feature files that are missing or disagree with their index/lengths file."""


class FeatureSet:
    """Per-utterance features in manifest order.

    Backed either by one stacked matrix [sum T_i, D] (possibly a read-only memory map) plus
    frame offsets, or by a list of per-utterance arrays [T_i, D]. Indexing never copies the
    stacked matrix: ``feats[i]`` is a view of rows ``offsets[i]:offsets[i+1]``.

    Attributes:
        lengths: int64 array [N], frames per utterance (all >= 1).
        offsets: int64 array [N + 1]; utterance i is rows ``offsets[i]:offsets[i+1]`` of the stacked
            matrix (or of all utterances concatenated in order).
        dim: feature size D.
        names: utterance ids (directory format) or None (stacked format).
        source: where the features came from, for messages.
    """

    def __init__(self, source: str, dim: int, lengths: np.ndarray, matrix: Optional[np.ndarray] = None,
                 arrays: Optional[List[np.ndarray]] = None, names: Optional[List[str]] = None):
        self.source = source
        self.dim = int(dim)
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.names = names
        self._matrix = matrix
        self._arrays = arrays
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)]).astype(np.int64)

    @classmethod
    def from_arrays(cls, arrays: Sequence[np.ndarray], source: str = "<in memory>",
                    names: Optional[List[str]] = None) -> "FeatureSet":
        """Wrap in-memory arrays ([T_i, D] or [D] each) after checking they share D and T_i >= 1."""
        if len(arrays) == 0:
            raise FeatureFormatError(f"{source}: no utterances (expected at least one [T, D] array)")
        fixed = []
        for i, a in enumerate(arrays):
            a = np.asarray(a)
            a = a[None] if a.ndim == 1 else a
            if a.ndim != 2 or a.shape[0] == 0:
                raise FeatureFormatError(f"{source}: utterance {i} has shape {a.shape}; expected [T, D] with T >= 1")
            if fixed and a.shape[1] != fixed[0].shape[1]:
                raise FeatureFormatError(f"{source}: utterance {i} has feature dim {a.shape[1]} but utterance 0 "
                                         f"has {fixed[0].shape[1]}; all utterances must come from one extraction")
            fixed.append(a)
        return cls(source, fixed[0].shape[1], np.array([len(a) for a in fixed]), arrays=fixed, names=names)

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, i: int) -> np.ndarray:
        """Utterance ``i`` as [T_i, D] (a view; dtype as stored)."""
        if self._arrays is not None:
            return self._arrays[i]
        return self._matrix[self.offsets[i]:self.offsets[i + 1]]

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self)):
            yield self[i]

    def utterance_means(self) -> np.ndarray:
        """Time-averaged features, float32 [N, D] (the utterance embeddings of the paper's Fig. 3)."""
        return np.stack([np.asarray(self[i], dtype=np.float64).mean(axis=0) for i in range(len(self))]).astype(
            np.float32)

    def describe(self) -> str:
        return (f"{self.source} ({len(self)} utterances, {int(self.lengths.sum())} frames, dim {self.dim})")


def load_features(path: str, expected_utterances: Optional[int] = None) -> FeatureSet:
    """Read features in either format.

    Args:
        path: a stacked prefix (``PREFIX`` or ``PREFIX.npy``), or a directory holding ``index.tsv``.
        expected_utterances: the number of utterances the caller expects (e.g. lines of the label
            file). Only used to recognise a stacked frame matrix whose lengths file went missing,
            which would otherwise silently read as one "utterance" per frame.

    Returns:
        A :class:`FeatureSet` of N utterances, item i of shape [T_i, D].
    """
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, INDEX_NAME)):
            return _load_directory(path)
        prefixes = sorted(f[: -len(".lengths")] for f in os.listdir(path) if f.endswith(".lengths"))
        hint = (f"; it holds stacked features, pass the prefix instead, e.g. {os.path.join(path, prefixes[0])}"
                if prefixes else "")
        raise FeatureFormatError(f"{os.path.join(path, INDEX_NAME)}: not found, so {path} is not a features "
                                 f"directory (expected index.tsv with 'utt_id<TAB>file.npy' lines){hint}")
    prefix = path[: -len(".npy")] if path.endswith(".npy") else path
    return _load_stacked(prefix, expected_utterances)


def _open_npy(file: str, where: str, mmap: bool) -> np.ndarray:
    try:
        return np.load(file, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError) as e:  # truncated/corrupt file, or not a .npy at all
        raise FeatureFormatError(f"{where}: cannot read {file} as a .npy array ({e}); "
                                 f"re-extract it (delete the file and re-run e2v-extract)") from e


def _load_stacked(prefix: str, expected_utterances: Optional[int]) -> FeatureSet:
    npy, lengths_path = prefix + ".npy", prefix + ".lengths"
    if not os.path.isfile(npy):
        raise FeatureFormatError(
            f"{npy}: not found; expected stacked features PREFIX.npy [frames, D] + PREFIX.lengths "
            f"(e2v-extract --format stacked --prefix PREFIX) or a directory with {INDEX_NAME}")
    matrix = _open_npy(npy, npy, mmap=True)
    if matrix.ndim != 2:
        raise FeatureFormatError(f"{npy}: expected a 2-D array [frames, D], got shape {matrix.shape}; "
                                 f"this is not a stacked feature file")
    rows = matrix.shape[0]
    if rows == 0:
        raise FeatureFormatError(f"{npy}: has no rows (expected at least one utterance); re-run e2v-extract")
    if not os.path.isfile(lengths_path):
        if expected_utterances is not None and rows != expected_utterances:
            raise FeatureFormatError(
                f"{lengths_path}: not found, and {npy} has {rows} rows where {expected_utterances} utterances are "
                f"expected; frame-level features need PREFIX.lengths (one frame count per utterance per line, "
                f"written by e2v-extract next to PREFIX.npy): restore it or re-extract")
        logger.info("%s: no lengths file, reading %d rows as utterance-level vectors", npy, rows)
        return FeatureSet(npy, matrix.shape[1], np.ones(rows, dtype=np.int64), matrix=matrix)
    lengths = []
    for lineno, line in enumerate(_read_text(lengths_path, "lengths file (one frame count per line)").splitlines(),
                                  start=1):
        text = line.strip()
        try:
            n = int(text)
        except ValueError:
            n = -1
        if n < 1:
            raise FeatureFormatError(
                f"{lengths_path}:{lineno}: expected a positive frame count, got {text!r}; "
                + ("an utterance with 0 frames is too short for the model: drop it from the manifest, labels "
                   "and groups, and re-extract" if n == 0 else "the file is damaged: re-run e2v-extract"))
        lengths.append(n)
    if not lengths:
        raise FeatureFormatError(f"{lengths_path}: empty (expected one frame count per utterance); re-run e2v-extract")
    cum = np.cumsum(lengths)
    if cum[-1] != rows:
        if cum[-1] > rows:
            line = int(np.searchsorted(cum, rows, side="right")) + 1  # first utterance running past the end
            where = f"{lengths_path}:{line}: utterance {line} ends at frame {int(cum[line - 1])}, past the end;"
        else:
            where = f"{lengths_path}:{len(lengths)}: after the last line {rows - int(cum[-1])} rows are left over;"
        raise FeatureFormatError(
            f"{where} the {len(lengths)} lengths sum to {int(cum[-1])} frames but {npy} has {rows} rows "
            f"(expected equal): the two files come from different extractions; re-run e2v-extract for this "
            f"manifest so both are written together")
    return FeatureSet(npy, matrix.shape[1], np.asarray(lengths), matrix=matrix)


def _load_directory(directory: str) -> FeatureSet:
    index = os.path.join(directory, INDEX_NAME)
    arrays: List[np.ndarray] = []
    names: List[str] = []
    seen = {}
    first: Optional[Tuple[int, str, int]] = None  # (line, file, dim) of the first utterance, for dim errors
    lines = _read_text(index, "features index ('utt_id<TAB>file.npy' lines)").split("\n")
    while lines and not lines[-1].strip():  # trailing newline(s) only; a blank line inside is an error
        lines.pop()
    for lineno, line in enumerate(lines, start=1):
        parts = line.rstrip("\r").split("\t")
        if len(parts) != 2 or not parts[0] or not parts[1]:
            raise FeatureFormatError(f"{index}:{lineno}: expected 'utt_id<TAB>relative/path.npy', got {line!r}; "
                                     f"regenerate the directory with e2v-extract --format npy")
        name, rel = parts
        if name in seen:
            raise FeatureFormatError(f"{index}:{lineno}: utterance {name!r} is listed again (first at line "
                                     f"{seen[name]}); each utterance must appear once, in manifest order")
        seen[name] = lineno
        file = os.path.join(directory, rel)
        if not os.path.isfile(file):
            raise FeatureFormatError(
                f"{index}:{lineno}: features of utterance {name!r} missing: expected {file}, which does not exist; "
                f"re-run e2v-extract with the same --out (it resumes and fills gaps), or drop the utterance from "
                f"the manifest, labels and groups")
        where = f"{index}:{lineno} (utterance {name!r})"
        a = _open_npy(file, where, mmap=False)  # into RAM: one mmap per file would exhaust map limits on big sets
        a = a[None] if a.ndim == 1 else a
        if a.ndim != 2 or a.shape[0] == 0:
            raise FeatureFormatError(f"{where}: {file} has shape {a.shape}; expected [T, D] frames (T >= 1) or a "
                                     f"[D] utterance vector; re-extract it")
        if first is None:
            first = (lineno, file, a.shape[1])
        elif a.shape[1] != first[2]:
            raise FeatureFormatError(
                f"{where}: {file} has feature dim {a.shape[1]} but expected {first[2]} like {first[1]} "
                f"({index}:{first[0]}); the files come from different models or layers: re-extract the "
                f"directory with one model (delete it and re-run e2v-extract)")
        arrays.append(a)
        names.append(name)
    if not arrays:
        raise FeatureFormatError(f"{index}: lists no utterances (expected one 'utt_id<TAB>file.npy' line each)")
    return FeatureSet(index, first[2], np.array([len(a) for a in arrays]), arrays=arrays, names=names)


def _read_text(path: str, what: str) -> str:
    try:
        return read_utf8(path, what, "re-run e2v-extract, or check that this is the right file")
    except TextFileError as e:
        raise FeatureFormatError(str(e)) from None


def save_stacked(arrays: Sequence[np.ndarray], prefix: str) -> Tuple[str, str]:
    """Write ``PREFIX.npy`` [sum T_i, D] and ``PREFIX.lengths`` from arrays [T_i, D] (or [D]).

    The one writer of this layout (``e2v-extract`` stacks its per-utterance files with it).
    Returns the two paths.
    """
    arrays = [np.asarray(a)[None] if np.asarray(a).ndim == 1 else np.asarray(a) for a in arrays]
    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    np.save(prefix + ".npy", np.concatenate(arrays, axis=0))
    with open(prefix + ".lengths", "w", encoding="utf-8") as f:
        f.write("".join(f"{len(a)}\n" for a in arrays))
    return prefix + ".npy", prefix + ".lengths"


def save_feature_dir(arrays: Sequence[np.ndarray], names: Sequence[str], directory: str) -> str:
    """Write one ``npy/<name>.npy`` per utterance and ``index.tsv``, in the order given.

    ``names`` may contain ``/`` (manifest paths); their extension is replaced by ``.npy``.
    Returns the index path.
    """
    if len(arrays) != len(names):
        raise ValueError(f"save_feature_dir: {len(arrays)} arrays but {len(names)} names; pass one name per array")
    lines = []
    for a, name in zip(arrays, names):
        rel = os.path.join("npy", os.path.splitext(name)[0] + ".npy")
        os.makedirs(os.path.dirname(os.path.join(directory, rel)), exist_ok=True)
        np.save(os.path.join(directory, rel), np.asarray(a))
        lines.append(f"{name}\t{rel}\n")
    index = os.path.join(directory, INDEX_NAME)
    with open(index, "w", encoding="utf-8") as f:
        f.write("".join(lines))
    return index


FeaturesLike = Union[FeatureSet, Sequence[np.ndarray]]


def as_feature_set(features: FeaturesLike) -> FeatureSet:
    """A :class:`FeatureSet` as is; a list of [T_i, D] arrays wrapped (and checked)."""
    return features if isinstance(features, FeatureSet) else FeatureSet.from_arrays(features)
