"""Flat, read-only columns for millions of utterances (no Python object per item).

A training process forks its loader workers; a worker that reads ``names[i]`` from a Python
``list`` of ``str`` touches the reference count of that string object, and the kernel copies
the 4 KiB page holding it into the worker (copy-on-read, PyTorch issue #13246). Over an epoch
every worker ends up with a private copy of the whole list. A numpy array is one object whose
items live in one data buffer: reading ``a[i]`` changes the refcount of the array object only,
so the buffer's pages stay shared between the trainer and all its workers.

numpy, not pyarrow (which fairseq's ``FileAudioDataset`` uses for the same reason): numpy is
already a dependency of everything here, the two columns below are all a manifest needs, and
they pickle and slice like any numpy array.

:class:`StringColumn` keeps ``n`` strings as one ``uint8`` buffer of their UTF-8 bytes plus
``n + 1`` ``int64`` offsets: string ``i`` is ``data[offsets[i]:offsets[i + 1]]``, decoded on
access. Cost: the bytes of the strings plus 8 bytes per item.
"""

from typing import Iterable, Iterator, List, Sequence, Union

import numpy as np


class StringColumn(Sequence):
    """``n`` strings in one UTF-8 byte buffer.

    Args:
        data: the concatenated UTF-8 bytes [total_bytes], uint8.
        offsets: start of each string and the end of the last [n + 1], int64, non-decreasing,
            ``offsets[0] == 0`` and ``offsets[-1] == len(data)``.

    ``col[i]`` is a ``str``; ``col[a:b]`` and ``col[index_array]`` are new (compact) columns;
    ``len``, iteration and ``list(col)`` behave as for a list of str.
    """

    __slots__ = ("data", "offsets")

    def __init__(self, data: np.ndarray, offsets: np.ndarray):
        self.data = np.ascontiguousarray(data, dtype=np.uint8)
        self.offsets = np.ascontiguousarray(offsets, dtype=np.int64)
        if self.offsets.ndim != 1 or len(self.offsets) == 0 or self.offsets[0] != 0 \
                or self.offsets[-1] != len(self.data):
            raise ValueError(f"offsets must run from 0 to len(data)={len(self.data)}, "
                             f"got {self.offsets[:1]}..{self.offsets[-1:]} ({len(self.offsets)} offsets)")

    @classmethod
    def from_strings(cls, strings: Iterable[str]) -> "StringColumn":
        """A column holding ``strings`` (any iterable of str)."""
        encoded = [s.encode("utf-8") for s in strings]
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(b) for b in encoded], out=offsets[1:])
        return cls(np.frombuffer(b"".join(encoded), dtype=np.uint8), offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index: Union[int, slice, np.ndarray]) -> Union[str, "StringColumn"]:
        if isinstance(index, (int, np.integer)):
            n = len(self)
            i = int(index) + n if index < 0 else int(index)
            if not 0 <= i < n:
                raise IndexError(f"string column index {int(index)} out of range for {n} items")
            return self.data[self.offsets[i]:self.offsets[i + 1]].tobytes().decode("utf-8")
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step == 1:
                lo, hi = self.offsets[start], self.offsets[max(start, stop)]
                return StringColumn(self.data[lo:hi].copy(), self.offsets[start:max(start, stop) + 1] - lo)
            index = np.arange(start, stop, step)
        return self.take(np.asarray(index))

    def take(self, index: np.ndarray) -> "StringColumn":
        """The strings at ``index`` [k] (int array, or a boolean mask [n]) as a new column."""
        index = np.asarray(index)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        index = index.astype(np.int64, copy=False)
        starts, ends = self.offsets[index], self.offsets[index + 1]
        lengths = ends - starts
        offsets = np.zeros(len(index) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        # byte j of the result comes from starts[k] + (j - offsets[k]) for the item k it falls in
        owner = np.repeat(np.arange(len(index)), lengths)
        source = np.arange(offsets[-1], dtype=np.int64) - offsets[owner] + starts[owner]
        return StringColumn(self.data[source], offsets)

    def __iter__(self) -> Iterator[str]:
        data, offsets = self.data, self.offsets
        for i in range(len(self)):
            yield data[offsets[i]:offsets[i + 1]].tobytes().decode("utf-8")

    def __eq__(self, other) -> bool:
        if isinstance(other, StringColumn):
            return np.array_equal(self.offsets, other.offsets) and np.array_equal(self.data, other.data)
        if isinstance(other, (list, tuple)):
            return len(other) == len(self) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    def __repr__(self) -> str:
        head = ", ".join(repr(s) for s in (self[i] for i in range(min(3, len(self)))))
        return f"StringColumn([{head}{', ...' if len(self) > 3 else ''}], n={len(self)}, bytes={len(self.data)})"

    def tolist(self) -> List[str]:
        return list(self)

    @property
    def nbytes(self) -> int:
        """Memory held by the column's two buffers."""
        return int(self.data.nbytes + self.offsets.nbytes)
