"""Vectorised parsing of a fairseq wav manifest's utterance lines (the fast path of read_manifest).

A 40,000-hour corpus is 10-15 million lines. Splitting them into Python strings costs minutes
and gigabytes; here the file is memory-mapped and parsed in blocks of whole lines with numpy:
newlines and tabs are found with one comparison each, lengths are read digit by digit for all
lines of a block at once, and the names are copied into one byte buffer (a
:class:`~emotion2vec_plugin.data.columns.StringColumn`). Peak extra memory is a few times the
block size plus the result.

The fast path accepts only the regular layout ``name<TAB>digits[<TAB>anything]`` with ``\\n`` or
``\\r\\n`` line ends, empty lines in between, and valid UTF-8. Anything else (a line without a
tab, a length that is not plain digits or is 0, a whitespace-only line, another line-break
character that ``str.splitlines`` would split on, bytes that are not UTF-8) makes
:func:`scan_utterances` return None: :func:`~emotion2vec_plugin.data.manifest.read_manifest` then
parses the file line by line, which names the bad line and the fix, or accepts it as before.
No dependency on fairseq or torch.
"""

import mmap
import os
from typing import List, Optional, Tuple

import numpy as np

from .columns import StringColumn
from .worker_memory import release_free_heap

BLOCK_BYTES = 1 << 25  # 32 MiB of lines parsed at a time
# bytes str.splitlines also splits on (\v, \f, file/group/record separators)
_OTHER_BREAKS = (11, 12, 28, 29, 30)
_MAX_DIGITS = 18  # any int64 length; longer fields go to the slow path
_UTF8_BOM = b"\xef\xbb\xbf"


def read_first_line(path: str) -> Tuple[bytes, int]:
    """Line 1 of ``path`` (without its line end and a UTF-8 BOM) and the offset where line 2 starts
    (the file size when there is only one line)."""
    with open(path, "rb") as f:
        head = b""
        while True:
            chunk = f.read(1 << 16)
            head += chunk
            nl = head.find(b"\n")
            if nl >= 0 or not chunk:
                break
    end = len(head) if nl < 0 else nl
    skip = 3 if head.startswith(_UTF8_BOM) else 0
    return head[skip:end], (end if nl < 0 else nl + 1)


def scan_utterances(path: str, body_start: int, block_bytes: int = BLOCK_BYTES
                    ) -> Optional[Tuple[StringColumn, np.ndarray, np.ndarray]]:
    """(names, sizes [n] int64, line numbers [n] int64) of the lines from byte ``body_start``
    (line 2) on, or None when some line needs the line-by-line parser (module docstring)."""
    size = os.path.getsize(path)
    if body_start >= size:
        return StringColumn(np.zeros(0, np.uint8), np.zeros(1, np.int64)), np.zeros(0, np.int64), np.zeros(0, np.int64)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        parts = _scan_mapped(mm, body_start, block_bytes)
    if parts is None:
        return None
    names, lengths, sizes, lines = parts
    offsets = np.zeros(sum(len(x) for x in lengths) + 1, dtype=np.int64)
    if len(offsets) > 1:
        np.cumsum(np.concatenate(lengths), out=offsets[1:])
    data = np.concatenate(names) if names else np.zeros(0, np.uint8)
    result = (StringColumn(data, offsets), np.concatenate(sizes) if sizes else np.zeros(0, np.int64),
              np.concatenate(lines) if lines else np.zeros(0, np.int64))
    del parts, names, lengths, sizes, lines
    release_free_heap()  # the blocks' temporaries would otherwise stay resident (worker_memory.py)
    return result


def _scan_mapped(mm: mmap.mmap, start: int, block_bytes: int):
    """Per-block lists (name bytes, name lengths, sizes, line numbers), or None (slow path)."""
    buf = np.frombuffer(mm, dtype=np.uint8)
    names: List[np.ndarray] = []
    lengths: List[np.ndarray] = []
    sizes: List[np.ndarray] = []
    lines: List[np.ndarray] = []
    line = 2
    try:
        while start < len(buf):
            stop = len(buf) if start + block_bytes >= len(buf) else mm.rfind(b"\n", start, start + block_bytes) + 1
            if stop <= start:  # one line longer than a block: take up to its end
                nl = mm.find(b"\n", start + block_bytes)
                stop = len(buf) if nl < 0 else nl + 1
            block = _scan_block(buf[start:stop], line)
            if block is None:
                return None
            names.append(block[0])
            lengths.append(block[1])
            sizes.append(block[2])
            lines.append(block[3])
            line = block[4]
            start = stop
        return names, lengths, sizes, lines
    finally:
        del buf  # the mmap cannot close while a numpy view of it lives


def _scan_block(c: np.ndarray, first_line: int):
    """Parse whole lines ``c`` [bytes] starting at line ``first_line``: (name bytes, name
    lengths, sizes, line numbers, next line number) or None (slow path)."""
    counts = np.bincount(c, minlength=256)
    if counts[list(_OTHER_BREAKS)].any():
        return None
    if counts[128:].any():
        try:
            text = c.tobytes().decode("utf-8")
        except UnicodeDecodeError:
            return None
        if "\x85" in text or "\u2028" in text or "\u2029" in text:  # more splitlines breaks
            return None
        del text
    nl = np.flatnonzero(c == 10)
    starts = np.concatenate([[0], nl + 1])
    ends = np.concatenate([nl, [len(c)]])
    numbers = np.arange(first_line, first_line + len(starts), dtype=np.int64)
    next_line = first_line + len(nl)  # a block ends with a newline, or at the end of the file
    if len(c) and c[-1] == 10:  # the "line" after the final newline is not a line
        starts, ends, numbers = starts[:-1], ends[:-1], numbers[:-1]
    cr = (ends > starts) & (c[np.maximum(ends - 1, 0)] == 13)
    ends = ends - cr
    if counts[13] != cr.sum():  # a \r that does not end a line
        return None
    keep = ends > starts  # empty lines are skipped
    starts, ends, numbers = starts[keep], ends[keep], numbers[keep]
    tabs = np.flatnonzero(c == 9)
    k = np.searchsorted(tabs, starts)
    tabs = np.concatenate([tabs, [len(c), len(c)]])
    first_tab = tabs[k]
    if (first_tab >= ends).any():  # no tab: whitespace-only lines and errors go the slow way
        return None
    field_end = np.minimum(tabs[k + 1], ends)
    width = field_end - first_tab - 1
    if len(width) and (width.min() < 1 or width.max() > _MAX_DIGITS):
        return None
    sizes = np.zeros(len(starts), dtype=np.int64)
    for d in range(int(width.max()) if len(width) else 0):
        active = np.flatnonzero(width > d)
        digit = c[first_tab[active] + 1 + d].astype(np.int64) - 48
        if ((digit < 0) | (digit > 9)).any():
            return None
        sizes[active] = sizes[active] * 10 + digit
    if len(sizes) and sizes.min() <= 0:
        return None
    lengths = first_tab - starts
    # the name bytes: a running count +1 at each line start, -1 at its first tab
    step = np.zeros(len(c) + 1, dtype=np.int8)
    step[starts] += 1
    step[first_tab] -= 1
    inside = np.cumsum(step[:-1], dtype=np.int8).view(bool)
    return c[inside], lengths, sizes, numbers, next_line
