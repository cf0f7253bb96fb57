"""EmoBox: any of its 32 datasets, from the metadata EmoBox publishes, with its official folds.

Layout (EmoBox's ``data/<dataset>/``, written by its ``preprocess/scripts/*.py``):

* ``<dataset>.jsonl``: one JSON object per line with ``key`` (``<dataset>-...``), ``dataset``,
  ``wav``, ``type``, ``sample_rate``, ``num_frame`` (a float: EmoBox computes it as duration
  x rate), ``task``, ``length``, ``emo`` and ``channel``, and optionally ``start_time`` and
  ``end_time`` (then the label is for that span of ``wav``, cut into its own wav under
  ``--resample-to``). ``channel`` is not a channel count (MELD's are 1 or 3) and is ignored;
  the lengths come from the audio;
* ``label_map.json``: the dataset's codes -> EmoBox's unified names (``"c": "Angry"``);
* ``fold_K/<dataset>_{train,valid,test}_fold_K.jsonl`` (``valid`` only for some datasets):
  the official folds, whose lines repeat entries of ``<dataset>.jsonl`` (matched by ``key``).

ROOT is ``EmoBox/data/<dataset>``. ``wav`` paths are relative to ``--audio-root``, by default
the EmoBox root two levels above ROOT (where EmoBox's ``downloads/`` live). Labels go through
``label_map.json`` unless ``--raw-labels``. Group: ``fold_K`` of the fold whose test set holds
the utterance (EmoBox's metadata has no speaker).
"""

import json
import os
import re
from typing import Dict, List, Optional, Tuple

from .base import NONE, ROLES, VALID, Corpus, Item, LabelError, read_json, read_text, require_audio

_FOLD = re.compile(r"fold_(\d+)")


def read_jsonl(path: str) -> List[Tuple[str, dict]]:
    """``(file:line, entry)`` for every non-empty line; :class:`LabelError` on a line that is not JSON."""
    entries = []
    for lineno, line in enumerate(read_text(path, "EmoBox metadata (JSON lines)").split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as e:
            raise LabelError(f"{where}: not JSON ({e.msg}, column {e.colno}); every line of an EmoBox .jsonl is one "
                             f"JSON object: re-download EmoBox's data/ folder") from None
        if not isinstance(entry, dict) or not all(k in entry for k in ("key", "wav", "emo")):
            raise LabelError(f"{where}: expected an object with at least key, wav and emo; got {line.strip()[:120]}")
        if entry.get("type", "raw") != "raw":
            raise LabelError(f"{where}: type {entry.get('type')!r}; only EmoBox's raw (audio) entries can be listed, not "
                             f"precomputed features")
        try:
            float(entry.get("num_frame", 0))
        except (TypeError, ValueError):
            raise LabelError(f"{where}: num_frame {entry.get('num_frame')!r} is not a number") from None
        entries.append((where, entry))
    return entries


def _segment(where: str, entry: dict) -> Optional[Tuple[float, float]]:
    if "start_time" not in entry and "end_time" not in entry:
        return None
    try:
        start, end = float(entry["start_time"]), float(entry["end_time"])
    except (KeyError, TypeError, ValueError):
        raise LabelError(f"{where}: start_time {entry.get('start_time')!r} and end_time {entry.get('end_time')!r} "
                         f"must both be numbers (seconds)") from None
    return start, end


def fold_files(root: str, dataset: str) -> Dict[int, Dict[str, str]]:
    """fold number -> {role: path} for the ``fold_K`` folders under ROOT."""
    folds: Dict[int, Dict[str, str]] = {}
    for name in os.listdir(root):
        m = _FOLD.fullmatch(name)
        if not m or not os.path.isdir(os.path.join(root, name)):
            continue
        k = int(m.group(1))
        files = {role: os.path.join(root, name, f"{dataset}_{role}_fold_{k}.jsonl") for role in ROLES}
        files = {role: p for role, p in files.items() if os.path.isfile(p)}
        for role in ("train", "test"):
            if role not in files:
                raise LabelError(f"{os.path.join(root, name)}: no {dataset}_{role}_fold_{k}.jsonl; EmoBox's folds hold "
                                 f"train and test files (valid for some datasets): re-download data/{dataset}")
        folds[k] = files
    if folds and sorted(folds) != list(range(1, len(folds) + 1)):
        raise LabelError(f"{root}: fold folders {sorted(folds)} are not fold_1..fold_{len(folds)}")
    return folds


def read(root: str, args) -> Corpus:
    """``<dataset>.jsonl`` + ``label_map.json`` + ``fold_K/`` -> items with their roles in every fold."""
    root = os.path.abspath(root)
    dataset = os.path.basename(root.rstrip(os.sep))
    audio_root = os.path.abspath(getattr(args, "audio_root", None) or os.path.dirname(os.path.dirname(root)))
    raw = getattr(args, "raw_labels", False)
    skip_missing = getattr(args, "skip_missing", False)
    meta = os.path.join(root, f"{dataset}.jsonl")
    if not os.path.isfile(meta):
        raise LabelError(f"{meta} does not exist; ROOT must be EmoBox/data/<dataset> holding <dataset>.jsonl, "
                         f"label_map.json and fold_K/")
    label_map: Dict[str, str] = {}
    map_path = os.path.join(root, "label_map.json")
    if not raw:
        label_map = read_json(map_path, "EmoBox label map")
        if not isinstance(label_map, dict):
            raise LabelError(f"{map_path}: expected a JSON object {{code: unified name}}")
    entries = read_jsonl(meta)
    folds = fold_files(root, dataset)
    roles: Dict[str, List[str]] = {}
    for where, entry in entries:
        if entry["key"] in roles:
            raise LabelError(f"{where}: key {entry['key']!r} occurs twice in {meta}; keys must be unique")
        roles[entry["key"]] = [NONE] * len(folds)
    for k, files in sorted(folds.items()):
        for role, path in files.items():
            for where, entry in read_jsonl(path):
                if entry["key"] not in roles:
                    raise LabelError(f"{where}: key {entry['key']!r} is not in {meta}; the folds and the metadata "
                                     f"come from different EmoBox versions: re-download data/{dataset}")
                if roles[entry["key"]][k - 1] not in (NONE, role):
                    raise LabelError(f"{where}: key {entry['key']!r} is in both {roles[entry['key']][k - 1]} and {role} "
                                     f"of fold_{k}")
                roles[entry["key"]][k - 1] = role
    items: List[Item] = []
    unmatched: List[str] = []
    for where, entry in entries:
        emo = str(entry["emo"])
        if not raw:
            if emo not in label_map:
                raise LabelError(f"{where}: label {emo!r} is not in {map_path} (codes: {', '.join(sorted(label_map))}); "
                                 f"re-download data/{dataset} or pass --raw-labels to keep the codes")
            emo = str(label_map[emo])
        wav = os.path.join(audio_root, str(entry["wav"]))
        if skip_missing and not os.path.isfile(wav):
            unmatched.append(f"{where}\tno file {wav}")
            continue
        require_audio(wav, where, f"wav paths are relative to --audio-root ({audio_root}, by default the EmoBox root "
                                  f"two levels above ROOT); is the corpus downloaded there? (--skip-missing lists "
                                  f"such rows instead)")
        fold_roles = tuple(roles[entry["key"]])
        tested = [f"fold_{k + 1}" for k, r in enumerate(fold_roles) if r == "test"]
        items.append(Item(wav, emo, tested[0] if len(tested) == 1 else "none", where,
                          segment=_segment(where, entry), roles=fold_roles))
    notes = [f"{len(folds)} official fold(s)" + (", with valid sets" if any(VALID in f for f in folds.values()) else "")]
    if unmatched:
        notes.append(f"{len(unmatched)} row(s) without a file (--skip-missing)")
    return Corpus(items, folds=len(folds), notes=tuple(notes), unmatched=tuple(unmatched))
