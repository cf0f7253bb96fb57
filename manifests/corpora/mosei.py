"""CMU-MOSEI: sentiment / emotion labels of spans inside the full-video audio.

Layout (CMU-MultimodalSDK and the raw download):

* audio: ``ROOT/Raw/Audio/Full/WAV_16000/<video_id>.wav`` (found wherever a ``WAV_16000``
  folder is under ROOT); video ids may start with ``-``;
* labels: the SDK's ``CMU_MOSEI_Labels.csd`` (under ROOT, or ``--csd PATH``), an HDF5 file
  whose one top-level group (``All Labels``) holds ``data/<video_id>/features`` (N x 7:
  sentiment -3..3, happy, sad, anger, surprise, disgust, fear) and ``intervals`` (N x 2,
  seconds). Each interval is cut into its own wav under ``--resample-to`` (a negative start is 0).

Targets (``--target``): ``sentiment`` (default; 2 classes: negative < 0, else non_negative),
``sentiment3`` (negative / neutral (= 0) / positive), ``sentiment7`` (the sentiment rounded to
-3..3, written ``sent-3`` .. ``sent3``), ``emotion`` (argmax of the six emotion scores; rows
whose six scores are all 0 are left out and counted, not called "happy").
Group: the video id. Folds: the SDK keeps its standard folds in its Python source
(``cmu_mosei_std_folds.py``), not in the .csd, so they come from ``--folds-file``: that file
itself (read as text: ``standard_{train,valid,test}_fold = [...]``, never run) or a JSON
``{"train": [...], "valid": [...], "test": [...]}`` of video ids. Without it no folds are written.
"""

import ast
import os
from collections import Counter
from typing import Dict, List, Optional, Tuple

import numpy as np

from .base import NONE, TEST, TRAIN, VALID, Corpus, Item, LabelError, find_files, read_json, read_text

EMOTIONS = ("happy", "sad", "anger", "surprise", "disgust", "fear")  # columns 1..6 of the features
TARGETS = ("sentiment", "sentiment2", "sentiment3", "sentiment7", "emotion")
CSD_NAME = "CMU_MOSEI_Labels.csd"


def label_of(features: np.ndarray, target: str) -> Optional[str]:
    """The class of one features row [7] for ``target``; None for an emotion row of all zeros."""
    sentiment = float(features[0])
    if target in ("sentiment", "sentiment2"):
        return "negative" if sentiment < 0 else "non_negative"
    if target == "sentiment3":
        return "negative" if sentiment < 0 else "neutral" if sentiment == 0 else "positive"
    if target == "sentiment7":
        return f"sent{int(np.clip(np.round(sentiment), -3, 3))}"
    scores = np.asarray(features[1:7], dtype=np.float64)
    if not np.any(scores > 0):
        return None
    return EMOTIONS[int(np.argmax(scores))]


def read_folds(path: str) -> Dict[str, str]:
    """video id -> train/valid/test, from the SDK's ``cmu_mosei_std_folds.py`` or a JSON file."""
    if path.endswith(".py"):
        tree = None
        try:
            tree = ast.parse(read_text(path, "MOSEI standard folds (cmu_mosei_std_folds.py)"))
        except SyntaxError as e:
            raise LabelError(f"{path}:{e.lineno}: not Python ({e.msg}); give the SDK's cmu_mosei_std_folds.py or a "
                             f"JSON file") from None
        lists = {}
        for node in tree.body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                try:
                    lists[node.targets[0].id] = ast.literal_eval(node.value)
                except ValueError:
                    continue
        parts = {role: lists.get(f"standard_{role}_fold") for role in (TRAIN, VALID, TEST)}
    else:
        data = read_json(path, "MOSEI folds (JSON {train: [...], valid: [...], test: [...]})")
        parts = {role: data.get(role) if isinstance(data, dict) else None for role in (TRAIN, VALID, TEST)}
    roles: Dict[str, str] = {}
    for role, ids in parts.items():
        if role != VALID and not isinstance(ids, list):
            raise LabelError(f"{path}: no {role} list of video ids (expected standard_{role}_fold = [...] in the SDK's "
                             f"file, or the key {role!r} in a JSON file)")
        for vid in ids or []:
            if str(vid) in roles and roles[str(vid)] != role:
                raise LabelError(f"{path}: video {vid!r} is in both {roles[str(vid)]} and {role}; fix the folds file")
            roles[str(vid)] = role
    return roles


def _open_csd(path: str):
    import h5py

    with open(path, "rb") as f:
        magic = f.read(8)
    if magic != b"\x89HDF\r\n\x1a\n":
        raise LabelError(f"{path}: not an HDF5 file (starts with {magic!r}); a .csd is HDF5: download "
                         f"{CSD_NAME} again with the CMU-MultimodalSDK")
    try:
        handle = h5py.File(path, "r")
    except OSError as e:
        raise LabelError(f"{path}: h5py cannot read it ({e}); download {CSD_NAME} again") from None
    roots = list(handle.keys())
    if len(roots) != 1 or "data" not in handle[roots[0]]:
        handle.close()
        raise LabelError(f"{path}: expected one top-level group with data/<video_id>/{{features,intervals}} (the "
                         f"SDK's computational sequence), got {roots}")
    return handle, roots[0]


def read(root: str, args) -> Corpus:
    """The .csd's intervals -> span items of the full-video wavs."""
    target = getattr(args, "target", None) or "sentiment"
    if target not in TARGETS:
        raise LabelError(f"--target {target} is not a MOSEI target; use one of {', '.join(TARGETS)}")
    csd = getattr(args, "csd", None)
    wav_dirs: List[str] = []
    for dirpath, dirnames, _ in os.walk(root, followlinks=True):
        dirnames.sort()
        if os.path.basename(dirpath) == "WAV_16000":
            wav_dirs.append(dirpath)
            dirnames[:] = []
    if not wav_dirs:
        raise LabelError(f"{root}: no WAV_16000 folder under it; ROOT must hold Raw/Audio/Full/WAV_16000/<video>.wav")
    if csd is None:
        found = find_files(root, [CSD_NAME])[CSD_NAME]
        if not found:
            raise LabelError(f"{root}: no {CSD_NAME} under it; download it with the CMU-MultimodalSDK and put it "
                             f"there or give --csd PATH")
        csd = found[0]
    folds_file = getattr(args, "folds_file", None)
    fold_roles = read_folds(folds_file) if folds_file else None
    skip_missing = getattr(args, "skip_missing", False)
    handle, group = _open_csd(csd)
    items: List[Item] = []
    unmatched: List[str] = []
    all_zero = 0
    try:
        data = handle[group]["data"]
        for vid in sorted(data.keys()):
            where = f"{csd}:{group}/data/{vid}"
            try:
                features = np.asarray(data[vid]["features"], dtype=np.float64)
                intervals = np.asarray(data[vid]["intervals"], dtype=np.float64)
            except KeyError:
                raise LabelError(f"{where}: needs the datasets features and intervals; download {CSD_NAME} "
                                 f"again") from None
            if features.ndim != 2 or features.shape[1] < 7 or intervals.shape != (len(features), 2):
                raise LabelError(f"{where}: features {features.shape} and intervals {intervals.shape}; expected N x 7 "
                                 f"and N x 2 (is this {CSD_NAME}, not another computational sequence?)")
            wav = next((os.path.join(d, vid + ".wav") for d in wav_dirs if os.path.isfile(os.path.join(d, vid + ".wav"))),
                       None)
            if wav is None:
                if skip_missing:
                    unmatched.append(f"{where}\tno {vid}.wav in {', '.join(wav_dirs)}")
                    continue
                raise LabelError(f"{where}: the labels point to {os.path.join(wav_dirs[0], vid + '.wav')}, which does "
                                 f"not exist; is WAV_16000 complete? (--skip-missing lists such videos instead)")
            roles: Tuple[str, ...] = ()
            if fold_roles is not None:
                roles = (fold_roles.get(vid, NONE),)
            for row, ((start, end), feats) in enumerate(zip(intervals, features)):
                label = label_of(feats, target)
                if label is None:
                    all_zero += 1
                    continue
                items.append(Item(wav, label, vid, f"{where} row {row}", segment=(float(start), float(end)),
                                  roles=roles))
    finally:
        handle.close()
    notes = []
    if all_zero:
        notes.append(f"left out {all_zero} span(s) whose six emotion scores are all 0")
    if fold_roles is None:
        notes.append("no folds written: the standard folds are not in the .csd; give --folds-file "
                     "(the SDK's cmu_mosei_std_folds.py or a JSON {train, valid, test} of video ids)")
    else:
        counts = Counter(i.roles[0] for i in items)
        notes.append(f"standard fold from {folds_file}: train {counts[TRAIN]}, valid {counts[VALID]}, "
                     f"test {counts[TEST]} span(s); {counts[NONE]} in no part")
    if unmatched:
        notes.append(f"{len(unmatched)} video(s) without a wav (--skip-missing)")
    return Corpus(items, folds=1 if fold_roles is not None else 0, notes=tuple(notes), unmatched=tuple(unmatched))
