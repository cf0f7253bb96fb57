"""``e2v-labels DATASET ROOT --dest DIR``: labelled manifests for the downstream probe.

Writes ``DIR/<split>.tsv`` (a manifest), ``DIR/<split>.emo`` (one label per line) and
``DIR/<split>.group`` (the fold key per line: IEMOCAP session, otherwise the speaker), in the
same order. Public layouts read:

* ``iemocap``: ``Session{1-5}/dialog/EmoEvaluation/*.txt`` lines
  ``[start - end]<TAB>Ses01F_impro01_F000<TAB>neu<TAB>[v, a, d]``, audio in
  ``Session{1-5}/sentences/wav/<dialog>/<utt>.wav``; 4 classes neu, hap (+exc), ang, sad
  (5531 utterances for the full corpus); group = session.
* ``ravdess``: ``Actor_XX/03-01-EE-II-SS-RR-AA.wav`` (EE: 01 neutral 02 calm 03 happy 04 sad
  05 angry 06 fearful 07 disgust 08 surprised); group = actor.
* ``cremad``: ``AudioWAV/1001_DFA_ANG_XX.wav`` (speaker_sentence_emotion_level); group = speaker.
* ``esd``: ``<speaker>/<Angry|Happy|Neutral|Sad|Surprise>/**/<speaker>_<n>.wav``; group = speaker.
* ``csv``: ROOT is a CSV with header ``path,label[,group]``; relative paths are relative to the
  CSV's folder.

Audio must be 16 kHz mono, or converted with ``--resample-to OUT`` (the e2v-manifest machinery).
"""

import argparse
import csv
import glob
import os
import re
from collections import Counter
from typing import Dict, List, Tuple

from .audio_manifest import build, write_manifest

Item = Tuple[str, str, str]  # absolute path, label, group


class LabelError(ValueError):
    """A label source that cannot be used; names the file (and line) and the fix."""


def _require(path: str, where: str) -> str:
    if not os.path.isfile(path):
        raise LabelError(f"{where}: audio {path} does not exist; is ROOT the corpus root?")
    return path


def iemocap(root: str) -> List[Item]:
    merge = {"neu": "neu", "hap": "hap", "exc": "hap", "ang": "ang", "sad": "sad"}
    items = []
    pattern = re.compile(r"^\[[\d.]+ - [\d.]+\]\t(\S+)\t(\S+)\t")
    for session in sorted(glob.glob(os.path.join(root, "Session*"))):
        name = os.path.basename(session)
        for txt in sorted(glob.glob(os.path.join(session, "dialog", "EmoEvaluation", "*.txt"))):
            with open(txt, encoding="utf-8", errors="replace") as f:
                for lineno, line in enumerate(f, start=1):
                    m = pattern.match(line)
                    if not m or m.group(2) not in merge:
                        continue
                    utt = m.group(1)
                    wav = os.path.join(session, "sentences", "wav", utt.rsplit("_", 1)[0], utt + ".wav")
                    items.append((_require(wav, f"{txt}:{lineno}"), merge[m.group(2)], name))
    return items


RAVDESS = {"01": "neutral", "02": "calm", "03": "happy", "04": "sad", "05": "angry", "06": "fearful",
           "07": "disgust", "08": "surprised"}


def ravdess(root: str) -> List[Item]:
    items = []
    for wav in sorted(glob.glob(os.path.join(root, "**", "Actor_*", "*.wav"), recursive=True)):
        parts = os.path.splitext(os.path.basename(wav))[0].split("-")
        if len(parts) != 7 or parts[2] not in RAVDESS:
            raise LabelError(f"{wav}: not a RAVDESS name MM-VC-EE-II-SS-RR-AA with emotion 01-08")
        items.append((wav, RAVDESS[parts[2]], f"Actor_{parts[6]}"))
    return items


CREMAD = {"ANG": "ang", "DIS": "dis", "FEA": "fea", "HAP": "hap", "NEU": "neu", "SAD": "sad"}


def cremad(root: str) -> List[Item]:
    items = []
    for wav in sorted(glob.glob(os.path.join(root, "**", "*.wav"), recursive=True)):
        parts = os.path.splitext(os.path.basename(wav))[0].split("_")
        if len(parts) != 4 or parts[2] not in CREMAD:
            raise LabelError(f"{wav}: not a CREMA-D name SPEAKER_SENTENCE_EMOTION_LEVEL")
        items.append((wav, CREMAD[parts[2]], parts[0]))
    return items


ESD = ("Angry", "Happy", "Neutral", "Sad", "Surprise")


def esd(root: str) -> List[Item]:
    items = []
    for speaker in sorted(d for d in os.listdir(root) if re.fullmatch(r"\d{4}", d)):
        for emotion in ESD:
            for wav in sorted(glob.glob(os.path.join(root, speaker, emotion, "**", "*.wav"), recursive=True)):
                items.append((wav, emotion.lower(), speaker))
    return items


def from_csv(path: str) -> List[Item]:
    if not os.path.isfile(path):
        raise LabelError(f"{path} does not exist (for csv, ROOT is the CSV file)")
    base = os.path.dirname(os.path.abspath(path))
    items = []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"path", "label"} <= set(reader.fieldnames):
            raise LabelError(f"{path}:1: header must be path,label[,group], got {reader.fieldnames}")
        for lineno, row in enumerate(reader, start=2):
            wav = row["path"] if os.path.isabs(row["path"]) else os.path.join(base, row["path"])
            items.append((_require(wav, f"{path}:{lineno}"), row["label"], row.get("group") or "all"))
    return items


DATASETS = {"iemocap": iemocap, "ravdess": ravdess, "cremad": cremad, "esd": esd, "csv": from_csv}


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Labelled manifests (<split>.tsv/.emo/.group) for emotion corpora.")
    p.add_argument("dataset", choices=sorted(DATASETS))
    p.add_argument("root", help="corpus root folder (for csv: the CSV file)")
    p.add_argument("--dest", required=True)
    p.add_argument("--split", default="all", help="output name: DEST/<split>.tsv, .emo, .group")
    p.add_argument("--resample-to", default=None, help="convert non-16 kHz-mono audio into this folder")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--quiet", action="store_true")
    return p


def main(args) -> Dict[str, object]:
    items = DATASETS[args.dataset](args.root)
    if not items:
        raise LabelError(f"{args.root}: no labelled utterances found for {args.dataset}; check ROOT and the layout "
                         f"described in `e2v-labels --help`")
    paths = [os.path.abspath(p) for p, _, _ in items]
    root = os.path.commonpath(paths) if len(paths) > 1 else os.path.dirname(paths[0])
    if os.path.isfile(root):
        root = os.path.dirname(root)
    rels = [os.path.relpath(p, root) for p in paths]
    results = build(root, rels, args.resample_to, 0.0, None, args.workers, not args.quiet)
    rows, labels, groups, skipped = [], [], [], []
    for (rel, entry), (_, label, group) in zip(results, items):
        if entry.ok:
            rows.append((rel, entry.frames))
            labels.append(label)
            groups.append(group)
        else:
            skipped.append(f"{entry.path}: {entry.reason} ({entry.detail})")
    if not rows:
        raise LabelError("every file was skipped:\n  " + "\n  ".join(skipped[:10]))
    os.makedirs(args.dest, exist_ok=True)
    stem = os.path.join(args.dest, args.split)
    write_manifest(stem + ".tsv", args.resample_to or root, rows)
    for ext, values in ((".emo", labels), (".group", groups)):
        with open(stem + ext, "w", encoding="utf-8") as f:
            f.write("\n".join(values) + "\n")
    return {"utterances": len(rows), "classes": dict(sorted(Counter(labels).items())),
            "groups": len(set(groups)), "skipped": skipped}


def cli_main() -> None:
    args = get_parser().parse_args()
    try:
        s = main(args)
    except LabelError as e:
        raise SystemExit(f"e2v-labels: {e}")
    for line in s["skipped"]:
        print(f"skipped {line}")
    print(f"e2v-labels {args.dataset}: {s['utterances']} utterances, {s['groups']} groups, per class {s['classes']}, "
          f"skipped {len(s['skipped'])} -> {os.path.join(args.dest, args.split)}.tsv/.emo/.group")


if __name__ == "__main__":
    cli_main()
