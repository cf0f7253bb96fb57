"""What every ``e2v-labels`` corpus reader returns, and the helpers they share.

A reader takes the corpus ROOT and the command-line options and returns a :class:`Corpus`:
its labelled :class:`Item` s (a whole file, or a span of one), how many official folds it
defines (each item carries its role in every fold) and the notes the summary prints (rows
without a file, classes left out ...). Readers raise :class:`LabelError` on bad input, with
the file, the line and the fix in the message, before anything is written.
"""

import csv
import io
import json
import os
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

from emotion2vec_plugin.data.manifest import TextFileError, read_utf8
from emotion2vec_plugin.errors import Emotion2vecError

# roles of an item in one fold; "" = not in that fold (e.g. MSP-Podcast's Test2 in the Test1 fold)
TRAIN, VALID, TEST, NONE = "train", "valid", "test", ""
ROLES = (TRAIN, VALID, TEST)


class LabelError(Emotion2vecError, ValueError):
    """A label source that cannot be used; the message names the file (and line) and the fix."""


class Item(NamedTuple):
    """One labelled utterance.

    ``path`` is the absolute audio path; ``segment`` (start, end) in seconds when the label is
    for a span of that file (cut into its own wav under ``--resample-to``); ``roles[k]`` is
    train/valid/test/"" in official fold k+1; ``source`` is where the label came from
    (``file:line``), for messages.
    """

    path: str
    label: str
    group: str
    source: str
    segment: Optional[Tuple[float, float]] = None
    roles: Tuple[str, ...] = ()


class Corpus(NamedTuple):
    """A reader's result: items, number of official folds (0: none), summary notes and
    ``unmatched`` (``where<TAB>what`` lines, e.g. MELD rows without a file), written to
    ``DEST/<split>.unmatched.tsv`` when not empty."""

    items: List[Item]
    folds: int = 0
    notes: Tuple[str, ...] = ()
    unmatched: Tuple[str, ...] = ()


def require_audio(path: str, source: str, hint: str) -> str:
    """``path`` when it is a file; else :class:`LabelError` naming ``source`` (file:line)."""
    if not os.path.isfile(path):
        raise LabelError(f"{source}: the label points to {path}, which does not exist; {hint}")
    return path


def read_text(path: str, what: str) -> str:
    """UTF-8 text (a BOM dropped) or :class:`LabelError` naming the file."""
    if not os.path.isfile(path):
        raise LabelError(f"{path} does not exist; expected the {what}")
    try:
        return read_utf8(path, what)
    except TextFileError as e:
        raise LabelError(str(e)) from None


def read_csv_rows(path: str, what: str, required: Sequence[str]) -> List[Tuple[int, Dict[str, str]]]:
    """``(line number, row)`` for every non-empty row of a CSV with a header holding ``required``.

    Quoted fields may span lines (MELD's utterances do); the line number is where the row starts.
    """
    text = read_text(path, what)
    reader = csv.reader(io.StringIO(text, newline=""))
    header = [h.strip() for h in next(reader, [])]
    missing = [c for c in required if c not in header]
    if missing:
        raise LabelError(f"{path}:1: the {what} needs the column(s) {', '.join(missing)}; the header is "
                         f"{','.join(header) or 'empty'}. Is this the right file?")
    rows = []
    line = 2
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            raise LabelError(f"{path}:{start}: not a CSV row ({e}); re-download the {what}") from None
        line = start
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise LabelError(f"{path}:{line}: expected {len(header)} columns ({','.join(header)}), got {len(row)}; "
                             f"re-download the {what}")
        rows.append((line, {h: cell.strip() for h, cell in zip(header, row)}))
    return rows


def read_json(path: str, what: str):
    """A JSON document, or :class:`LabelError` naming the file and the line of the syntax error."""
    text = read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise LabelError(f"{path}:{e.lineno}: not JSON ({e.msg}, column {e.colno}); re-download the {what}") from None


def find_files(root: str, names: Sequence[str]) -> Dict[str, List[str]]:
    """For each file name in ``names``, the paths under ``root`` that have it, shallowest first."""
    found: Dict[str, List[str]] = {n: [] for n in names}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames.sort()
        for n in filenames:
            if n in found:
                found[n].append(os.path.join(dirpath, n))
    for n in found:
        found[n].sort(key=lambda p: (p.count(os.sep), p))
    return found


def fold_roles_from_partition(partition: str, mapping: Dict[str, str]) -> Tuple[str, ...]:
    """Roles in a single official fold from a partition name (``mapping``: name -> role or "")."""
    return (mapping.get(partition, NONE),)
