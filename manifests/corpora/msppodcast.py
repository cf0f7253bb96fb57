"""MSP-Podcast: consensus categorical labels, 8 classes, the official Train/Development/Test1 fold.

Layout (the corpus's release notes; EmoBox's ``msppodcast.py`` reads the older one):

* audio: ``ROOT/Audios/MSP-PODCAST_*.wav`` (older releases: ``ROOT/Audio/``), 16 kHz mono;
* labels: ``ROOT/Labels/labels_consensus.csv``, the misspelled ``labels_concensus.csv`` of some
  releases, or the ``.json`` form of either (``{FileName: {EmoClass, ..., Split_Set}}``); the
  folder may be ``Labels/`` or ``label/``. Columns ``FileName, EmoClass, EmoAct, EmoVal,
  EmoDom, SpkrID, Gender, Split_Set``.

EmoClass: A angry, S sad, H happy, U surprise, F fear, D disgust, C contempt, N neutral; O
(other) and X (no agreement) are left out and counted unless ``--keep-other``. ``SpkrID`` may be
``Unknown`` (kept as the group ``Unknown``). ``Split_Set``: ``Train`` -> train,
``Development`` (older: ``Validation``) -> valid, ``Test1`` -> test of fold 1; ``Test2`` and
``Test3`` rows are in the main split only.
"""

import os
from collections import Counter
from typing import Dict, List, Tuple

from .base import NONE, TEST, TRAIN, VALID, Corpus, Item, LabelError, read_csv_rows, read_json, require_audio

CLASSES = {"A": "angry", "S": "sad", "H": "happy", "U": "surprise", "F": "fear", "D": "disgust", "C": "contempt",
           "N": "neutral"}
OTHER = {"O": "other", "X": "noagreement"}
SPLITS = {"Train": TRAIN, "Development": VALID, "Validation": VALID, "Test1": TEST, "Test2": NONE, "Test3": NONE}
COLUMNS = ("FileName", "EmoClass", "SpkrID", "Split_Set")
LABEL_NAMES = [f"{folder}/{stem}.{ext}" for folder in ("Labels", "label", "labels")
               for stem in ("labels_consensus", "labels_concensus") for ext in ("csv", "json")]


def _rows(root: str) -> Tuple[str, List[Tuple[str, Dict[str, str]]]]:
    """The labels file and its ``(where, row)`` pairs, from the CSV or the JSON form."""
    path = next((os.path.join(root, n) for n in LABEL_NAMES if os.path.isfile(os.path.join(root, n))), None)
    if path is None:
        raise LabelError(f"{root}: none of {', '.join(LABEL_NAMES[:2])} (or the .json forms) exists; ROOT must be "
                         f"the MSP-Podcast folder that holds Labels/ and Audios/")
    if path.endswith(".csv"):
        return path, [(f"{path}:{line}", row) for line, row in read_csv_rows(path, "MSP-Podcast labels", COLUMNS)]
    data = read_json(path, "MSP-Podcast labels")
    if not isinstance(data, dict):
        raise LabelError(f"{path}: expected a JSON object {{FileName: {{EmoClass, SpkrID, Split_Set, ...}}}}, got "
                         f"{type(data).__name__}")
    rows = []
    for name, fields in data.items():
        if not isinstance(fields, dict) or any(c not in fields for c in COLUMNS[1:]):
            raise LabelError(f"{path}: entry {name!r} needs the keys {', '.join(COLUMNS[1:])}; got {fields!r:.200}")
        rows.append((f"{path}:{name}", dict({k: str(v).strip() for k, v in fields.items()}, FileName=name)))
    return path, rows


def read(root: str, args) -> Corpus:
    """MSP-Podcast's consensus labels -> items of 8 classes (O and X counted, not kept by default)."""
    audio = next((os.path.join(root, d) for d in ("Audios", "Audio") if os.path.isdir(os.path.join(root, d))), None)
    if audio is None:
        raise LabelError(f"{root}: neither Audios/ nor Audio/ exists; ROOT must be the MSP-Podcast folder")
    keep_other = getattr(args, "keep_other", False)
    skip_missing = getattr(args, "skip_missing", False)
    _, rows = _rows(root)
    classes = dict(CLASSES, **OTHER) if keep_other else CLASSES
    items: List[Item] = []
    left_out: Counter = Counter()
    unmatched: List[str] = []
    for where, row in rows:
        code = row["EmoClass"].upper()
        if code in OTHER and not keep_other:
            left_out[code] += 1
            continue
        if code not in classes:
            raise LabelError(f"{where}: EmoClass {row['EmoClass']!r} is not one of {' '.join(CLASSES)} O X; "
                             f"re-download the labels file")
        if row["Split_Set"] not in SPLITS:
            raise LabelError(f"{where}: Split_Set {row['Split_Set']!r} is not one of {', '.join(SPLITS)}")
        wav = os.path.join(audio, row["FileName"])
        if skip_missing and not os.path.isfile(wav):
            unmatched.append(f"{where}\tno file {wav}")
            continue
        require_audio(wav, where, f"is {audio} complete? (--skip-missing lists such rows instead)")
        speaker = row["SpkrID"] or "Unknown"
        items.append(Item(wav, classes[code], speaker, where, roles=(SPLITS[row["Split_Set"]],)))
    notes = []
    if left_out:
        notes.append(f"left out {left_out['X']} X (no agreement) and {left_out['O']} O (other) row(s); "
                     f"--keep-other keeps them")
    unknown = sum(1 for i in items if i.group == "Unknown")
    if unknown:
        notes.append(f"{unknown} utterance(s) with SpkrID Unknown share the group 'Unknown'")
    if unmatched:
        notes.append(f"{len(unmatched)} row(s) without a file (--skip-missing)")
    return Corpus(items, folds=1, notes=tuple(notes), unmatched=tuple(unmatched))
