"""MELD (``MELD.Raw``): the Friends utterances, 7 emotions or 3 sentiments, one official fold.

Layout, from MELD's README and its ``MELD.Raw.tar.gz``:

* labels: ``train_sent_emo.csv``, ``dev_sent_emo.csv``, ``test_sent_emo.csv`` with the columns
  ``Sr No., Utterance, Speaker, Emotion, Sentiment, Dialogue_ID, Utterance_ID, Season, Episode,
  StartTime, EndTime``. UTF-8 with curly quotes in the utterances; times as ``00:16:16,059``
  or ``0:13:40,766`` (both accepted, not used: the clips are already cut);
* media: ``dia{D}_utt{U}.mp4`` in ``train_splits/``, ``dev_splits_complete/`` and
  ``output_repeated_splits_test/`` (some copies of the test clips are named
  ``final_videos_testdia{D}_utt{U}.mp4``), wherever they are under ROOT (the tarballs are
  extracted in place, so ``MELD.Raw/train/train_splits/``, ``MELD.Raw/dev/dev_splits_complete/`` ... are
  as common as ``MELD.Raw/train_splits/``; EmoBox keeps ``train/train_sent_emo.csv``). Of two
  copies of a CSV the shallowest is read. macOS ``._*`` files are not clips.
  The audio is 48 kHz, 2 or 6 channels, AAC: convert with ``--resample-to``.

Rows without a file and files without a row are counted and listed in
``DEST/<split>.unmatched.tsv``, not fatal (the release has both). Group: the speaker.
Fold 1: train / valid (dev) / test.
"""

import os
import re
from typing import Dict, List, Tuple

from .base import TEST, TRAIN, VALID, Corpus, Item, LabelError, find_files, read_csv_rows

EMOTIONS = ("neutral", "joy", "sadness", "anger", "surprise", "fear", "disgust")
SENTIMENTS = ("neutral", "positive", "negative")
PARTITIONS = {"train": TRAIN, "dev": VALID, "test": TEST}
MEDIA_FOLDERS = {"train_splits": "train", "dev_splits_complete": "dev", "output_repeated_splits_test": "test"}
COLUMNS = ("Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID", "StartTime", "EndTime")
_CLIP = re.compile(r"(?:final_videos_test_?)?dia(\d+)_utt(\d+)\.mp4")
_TIME = re.compile(r"\d{1,2}:\d{2}:\d{2}[,.]\d{1,3}")


def index_media(root: str) -> Tuple[Dict[Tuple[str, int, int], str], List[str]]:
    """(partition, dialogue, utterance) -> clip path, from the folders of :data:`MEDIA_FOLDERS`; and
    the mp4 files that are not MELD clips of a known folder (listed as unmatched)."""
    index: Dict[Tuple[str, int, int], str] = {}
    other: List[str] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames.sort()
        partition = MEDIA_FOLDERS.get(os.path.basename(dirpath))
        for name in sorted(filenames):
            if not name.lower().endswith(".mp4"):
                continue
            m = _CLIP.fullmatch(name)
            path = os.path.join(dirpath, name)
            if partition is None or m is None:
                other.append(path)
                continue
            index.setdefault((partition, int(m.group(1)), int(m.group(2))), path)
    return index, other


def read(root: str, args) -> Corpus:
    """MELD's three CSVs and clips -> items; ``args.target`` emotion (default) or sentiment."""
    target = getattr(args, "target", None) or "emotion"
    if target not in ("emotion", "sentiment"):
        raise LabelError(f"--target {target} is not a MELD target; use emotion (7 classes) or sentiment (3)")
    csvs = find_files(root, [f"{p}_sent_emo.csv" for p in PARTITIONS])
    absent = [n for n, paths in csvs.items() if not paths]
    if absent:
        raise LabelError(f"{root}: no {', '.join(absent)} under it; ROOT must be MELD.Raw (with "
                         f"train_sent_emo.csv, dev_sent_emo.csv, test_sent_emo.csv and the extracted clips)")
    index, other = index_media(root)
    if not index:
        raise LabelError(f"{root}: no dia*_utt*.mp4 clips in train_splits/, dev_splits_complete/ or "
                         f"output_repeated_splits_test/ under it; extract MELD.Raw's train/dev/test tarballs there")
    items: List[Item] = []
    unmatched: List[str] = []
    used = set()
    for partition, role in PARTITIONS.items():
        path = csvs[f"{partition}_sent_emo.csv"][0]
        for line, row in read_csv_rows(path, f"MELD {partition} labels", COLUMNS):
            where = f"{path}:{line}"
            emotion, sentiment = row["Emotion"].lower(), row["Sentiment"].lower()
            if emotion not in EMOTIONS or sentiment not in SENTIMENTS:
                raise LabelError(f"{where}: Emotion {row['Emotion']!r} / Sentiment {row['Sentiment']!r}; expected one "
                                 f"of {', '.join(EMOTIONS)} / {', '.join(SENTIMENTS)}. Is this MELD's CSV?")
            try:
                key = (partition, int(row["Dialogue_ID"]), int(row["Utterance_ID"]))
            except ValueError:
                raise LabelError(f"{where}: Dialogue_ID {row['Dialogue_ID']!r} and Utterance_ID "
                                 f"{row['Utterance_ID']!r} must be integers; re-download the CSV") from None
            for column in ("StartTime", "EndTime"):
                if not _TIME.fullmatch(row[column]):
                    raise LabelError(f"{where}: {column} {row[column]!r} is not a time like 00:16:16,059 or "
                                     f"0:13:40,766; re-download the CSV")
            clip = index.get(key)
            if clip is None:
                unmatched.append(f"{where}\tno clip dia{key[1]}_utt{key[2]}.mp4 in the {partition} folder")
                continue
            used.add(clip)
            speaker = " ".join(row["Speaker"].split()) or "unknown"
            items.append(Item(clip, emotion if target == "emotion" else sentiment, speaker, where, roles=(role,)))
    without_row = [p for p in index.values() if p not in used]
    unmatched += [f"{p}\tno row in the {MEDIA_FOLDERS[os.path.basename(os.path.dirname(p))]} CSV"
                  for p in sorted(without_row)]
    unmatched += [f"{p}\tnot a MELD clip name (dia<D>_utt<U>.mp4) in a MELD clip folder" for p in other]
    n_rows = sum(1 for u in unmatched if "no clip" in u)
    notes = (f"{n_rows} label row(s) without a clip, {len(without_row)} clip(s) without a row, "
             f"{len(other)} other mp4 file(s)",) if unmatched else ()
    return Corpus(items, folds=1, notes=notes, unmatched=tuple(unmatched))
