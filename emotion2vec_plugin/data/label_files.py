"""Label files: one name per line, in utterance or class order (no fairseq, no torch).

Two layouts, each with one reader here:

* per-utterance columns (:func:`read_column_file`): ``SPLIT.emo`` (one label per utterance) and
  ``SPLIT.group`` (one speaker/session per utterance), in the order of the manifest ``SPLIT.tsv``
  that ``e2v-labels`` writes next to them; ``utt_id<TAB>value`` lines (the official emotion2vec
  ``train.emo``) are read too.
* class lists (:func:`read_label_file`, written by :func:`write_label_file`): one class name per
  line, class 0 first: the ``labels.txt`` that fine-tuning saves next to its checkpoints and
  FunASR's ``tokens.txt`` in an export.

Every problem raises :class:`LabelFileError` naming the file and line.
"""

import os
from typing import List, Sequence

from ..errors import Emotion2vecError
from .manifest import TextFileError, read_utf8


class LabelFileError(Emotion2vecError, ValueError):
    """A label, group or class-name file that cannot be read; names the file (and line) and the fix."""


def read_column_file(path: str, what: str) -> List[str]:
    """One value per line (the whole stripped line, so labels may contain spaces), or
    ``utt_id<TAB>value`` lines (the official emotion2vec ``train.emo`` layout; the value is the
    second column). Trailing blank lines are ignored; a blank line inside, more than two tab
    columns, or a layout that changes within the file is an error naming the line.

    ``what`` is the plural shown in messages ("labels", "groups")."""
    one = what[:-1]  # "labels" -> "label"
    if not os.path.isfile(path):
        state = "is a directory" if os.path.isdir(path) else "does not exist"
        raise LabelFileError(f"{what} file {path} {state} (expected one {one} per line)")
    try:
        lines = read_utf8(path, f"{what} file (one {one} per line)").split("\n")
    except TextFileError as e:
        raise LabelFileError(str(e)) from None
    while lines and not lines[-1].strip():
        lines.pop()
    values, columns = [], None
    for lineno, line in enumerate(lines, start=1):
        fields = [v.strip() for v in line.rstrip("\r").split("\t")]
        if not all(fields) or len(fields) > 2:
            raise LabelFileError(f"{path}:{lineno}: expected one {one} (or 'utt_id<TAB>{one}'), got {line!r}; "
                                 f"every utterance needs exactly one line, in manifest order")
        if columns is None:
            columns = len(fields)
        elif len(fields) != columns:
            raise LabelFileError(f"{path}:{lineno}: {len(fields)} tab-separated columns but line 1 has {columns}; "
                                 f"use one layout for the whole file")
        values.append(fields[-1])
    return values


def write_text_atomic(path: str, text: str) -> None:
    """``text`` into ``path`` as UTF-8 through ``path.tmp`` and a rename: a reader never sees half a file."""
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def write_label_file(names: Sequence[str], path: str) -> None:
    """One class name per line, class 0 first (also FunASR's ``tokens.txt`` layout); atomic."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_text_atomic(path, "".join(f"{n}\n" for n in names))


def read_label_file(path: str) -> List[str]:
    """Class names, one per line, class 0 first (``labels.txt``, FunASR's ``tokens.txt``; what
    :func:`write_label_file` writes). Trailing blank lines are ignored; a blank line inside is an
    error naming the line."""
    with open(path, encoding="utf-8") as f:
        names = [line.rstrip("\r\n") for line in f]
    while names and not names[-1].strip():
        names.pop()
    for i, n in enumerate(names, start=1):
        if not n.strip():
            raise LabelFileError(f"{path}:{i}: empty class name; expected one class per line")
    return names
