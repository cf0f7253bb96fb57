"""MEAD: ``<SPK>/audio/<emotion>/level_<n>/<NNN>.m4a``, 8 emotions, grouped by speaker.

MEAD ships one ``audio.tar`` per actor (``M003/audio.tar`` ...); extracted in the actor's folder
it gives ``M003/audio/<emotion>/level_<1..3>/001.m4a`` (``neutral`` has only ``level_1``).
The emotion folders are angry, contempt, disgusted, fear, happy, neutral, sad, surprised. The
audio is AAC in m4a (48 kHz): convert with ``--resample-to``. No official folds
(leave-one-speaker-out over the groups).
"""

import os
import re
from typing import List

from .base import Corpus, Item, LabelError

EMOTIONS = ("angry", "contempt", "disgusted", "fear", "happy", "neutral", "sad", "surprised")
_LEVEL = re.compile(r"level_(\d+)")
_CLIP = re.compile(r"\d+\.m4a")


def read(root: str, args) -> Corpus:
    """Every ``.m4a`` under ROOT at ``<SPK>/audio/<emotion>/level_<n>/<NNN>.m4a``."""
    items: List[Item] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames.sort()
        for name in sorted(filenames):
            if not name.lower().endswith(".m4a") or name.startswith("._"):
                continue
            path = os.path.join(dirpath, name)
            parts = os.path.relpath(path, root).split(os.sep)
            ok = (len(parts) >= 5 and parts[-4] == "audio" and _LEVEL.fullmatch(parts[-2])
                  and _CLIP.fullmatch(name))
            if not ok:
                raise LabelError(f"{path}: expected MEAD's <SPK>/audio/<emotion>/level_<n>/<NNN>.m4a; move other m4a "
                                 f"files out of ROOT or point ROOT at the folder of the actors")
            emotion = parts[-3]
            if emotion not in EMOTIONS:
                raise LabelError(f"{path}: emotion folder {emotion!r} is not one of {', '.join(EMOTIONS)}")
            items.append(Item(path, emotion, parts[-5], path))
    speakers = sorted({i.group for i in items})
    notes = (f"{len(speakers)} speaker(s); no official folds (leave-one-speaker-out over the groups)",) if items else ()
    return Corpus(items, folds=0, notes=notes)
