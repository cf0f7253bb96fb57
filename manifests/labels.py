"""``e2v-labels DATASET ROOT --dest DIR [--split NAME]``: labelled manifests for the downstream probe.

Writes, in the same utterance order:

* ``DIR/<split>.tsv``: a fairseq manifest (root on line 1, ``relpath<TAB>num_samples``, lengths
  read from the audio headers by the same checks as ``e2v-manifest``);
* ``DIR/<split>.emo``: one label per line;
* ``DIR/<split>.group``: one fold key per line (IEMOCAP: the session; others: the speaker/actor);
* ``DIR/<split>.skipped.tsv``: ``path<TAB>reason<TAB>detail`` for labelled files left out.

DATASET is one of (public layouts):

* ``iemocap``: ROOT is ``IEMOCAP_full_release``. Labels from
  ``Session{1..5}/dialog/EmoEvaluation/*.txt`` lines
  ``[6.2901 - 8.2357]<TAB>Ses01F_impro01_F000<TAB>neu<TAB>[2.5000, 2.5000, 2.5000]``, audio
  ``Session{1..5}/sentences/wav/<dialog>/<utterance>.wav``. The usual 4 classes: neu, hap
  (exc merged into hap), ang, sad; every other label (fru, sur, fea, dis, oth, xxx) is dropped.
  The full corpus gives 5531 utterances. Group: ``Session1`` .. ``Session5``.
* ``ravdess``: ``Actor_XX/MM-VV-EE-II-SS-RR-AA.wav`` (modality, vocal channel, emotion,
  intensity, statement, repetition, actor); emotion 01 neutral, 02 calm, 03 happy, 04 sad,
  05 angry, 06 fearful, 07 disgust, 08 surprised. Group: ``Actor_XX``. RAVDESS is 48 kHz:
  add ``--resample-to OUT``.
* ``cremad``: ``AudioWAV/SSSS_SEN_EMO_LVL.wav`` (speaker, sentence, emotion, level); emotions
  ANG, DIS, FEA, HAP, NEU, SAD, written lower-case. Group: the speaker id.
* ``esd``: ``<speaker 0001..0020>/<Angry|Happy|Neutral|Sad|Surprise>/[any subfolder/]<speaker>_<n>.wav``
  (the ``<speaker>.txt`` transcripts are ignored); labels lower-case. Group: the speaker id.
* ``csv``: ROOT is a CSV file with the header ``path,label[,group]``; paths are absolute or
  relative to the CSV's folder; without a group column every row is in group ``all``.

A label that points to a missing file, an unknown dataset or an empty result is an error naming
the file (and line) and the fix. Audio that is not 16 kHz mono is skipped as "needs resampling"
unless ``--resample-to OUT`` is given (then converted as by ``e2v-manifest``).
"""

import argparse
import csv
import io
import logging
import os
import re
from collections import Counter
from typing import Callable, Dict, List, NamedTuple, Optional

from emotion2vec_plugin.cli import run_main
from emotion2vec_plugin.data.manifest import TextFileError, read_utf8
from emotion2vec_plugin.errors import Emotion2vecError

from .audio_manifest import ManifestToolError, check_files, summarise, write_manifest, write_skipped

logger = logging.getLogger(__name__)


class LabelError(Emotion2vecError, ValueError):
    """A label source that cannot be used; the message names the file (and line) and the fix."""


class Item(NamedTuple):
    """One labelled utterance: absolute audio path, label, fold key and where the label came from."""

    path: str
    label: str
    group: str
    source: str


def _require_audio(path: str, source: str, hint: str) -> str:
    if not os.path.isfile(path):
        raise LabelError(f"{source}: the label points to {path}, which does not exist; {hint}")
    return path


# --------------------------------------------------------------------------------------------- IEMOCAP

IEMOCAP_CLASSES = {"neu": "neu", "hap": "hap", "exc": "hap", "ang": "ang", "sad": "sad"}
_IEMOCAP_LINE = re.compile(r"^\[\s*[\d.]+\s*-\s*[\d.]+\s*\]\t(\S+)\t(\S+)\t")


def iemocap(root: str) -> List[Item]:
    """IEMOCAP's EmoEvaluation labels, 4 classes (exc merged into hap), grouped by session."""
    sessions = sorted(d for d in os.listdir(root) if re.fullmatch(r"Session\d+", d)
                      and os.path.isdir(os.path.join(root, d)))
    items: List[Item] = []
    for session in sessions:
        evaluation = os.path.join(root, session, "dialog", "EmoEvaluation")
        if not os.path.isdir(evaluation):
            raise LabelError(f"{evaluation} does not exist; ROOT must be IEMOCAP_full_release with "
                             f"Session*/dialog/EmoEvaluation/*.txt")
        for txt in sorted(f for f in os.listdir(evaluation) if f.endswith(".txt")):
            txt_path = os.path.join(evaluation, txt)
            with open(txt_path, encoding="utf-8", errors="replace") as f:
                for lineno, line in enumerate(f, start=1):
                    m = _IEMOCAP_LINE.match(line)
                    if not m or m.group(2) not in IEMOCAP_CLASSES:
                        continue
                    utterance = m.group(1)
                    dialog = utterance.rsplit("_", 1)[0]
                    wav = os.path.join(root, session, "sentences", "wav", dialog, utterance + ".wav")
                    hint = (f"expected the audio of {utterance} at Session*/sentences/wav/{dialog}/{utterance}.wav; "
                            f"is the corpus complete and ROOT the IEMOCAP_full_release folder?")
                    _require_audio(wav, f"{txt_path}:{lineno}", hint)
                    items.append(Item(wav, IEMOCAP_CLASSES[m.group(2)], session, f"{txt_path}:{lineno}"))
    return items


# --------------------------------------------------------------------------------------------- RAVDESS

RAVDESS_EMOTIONS = {"01": "neutral", "02": "calm", "03": "happy", "04": "sad", "05": "angry", "06": "fearful",
                    "07": "disgust", "08": "surprised"}
_RAVDESS_NAME = re.compile(r"(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)")


def _wavs_under(folder: str) -> List[str]:
    """Sorted ``.wav`` files (any case) under ``folder``, recursively, symlinks followed."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames.sort()
        out.extend(os.path.join(dirpath, n) for n in filenames if n.lower().endswith(".wav"))
    return sorted(out)


def ravdess(root: str) -> List[Item]:
    """RAVDESS ``Actor_XX/03-01-EE-II-SS-RR-AA.wav``: 8 emotions from the name, grouped by actor."""
    items: List[Item] = []
    for wav in _wavs_under(root):
        if not os.path.basename(os.path.dirname(wav)).startswith("Actor_"):
            continue
        stem = os.path.splitext(os.path.basename(wav))[0]
        m = _RAVDESS_NAME.fullmatch(stem)
        if not m or m.group(3) not in RAVDESS_EMOTIONS:
            raise LabelError(f"{wav}: expected a RAVDESS name MM-VV-EE-II-SS-RR-AA.wav with emotion EE in 01..08, "
                             f"got {stem!r}; move files that are not RAVDESS out of the Actor_ folders")
        items.append(Item(wav, RAVDESS_EMOTIONS[m.group(3)], f"Actor_{m.group(7)}", wav))
    return items


# --------------------------------------------------------------------------------------------- CREMA-D

CREMAD_EMOTIONS = {"ANG": "ang", "DIS": "dis", "FEA": "fea", "HAP": "hap", "NEU": "neu", "SAD": "sad"}
_CREMAD_NAME = re.compile(r"(\d+)_([A-Z]+)_([A-Z]+)_([A-Z]+)")


def cremad(root: str) -> List[Item]:
    """CREMA-D ``AudioWAV/1001_DFA_ANG_XX.wav``: 6 emotions from the name, grouped by speaker."""
    folder = os.path.join(root, "AudioWAV") if os.path.isdir(os.path.join(root, "AudioWAV")) else root
    items: List[Item] = []
    for wav in _wavs_under(folder):
        stem = os.path.splitext(os.path.basename(wav))[0]
        m = _CREMAD_NAME.fullmatch(stem)
        if not m or m.group(3) not in CREMAD_EMOTIONS:
            raise LabelError(f"{wav}: expected a CREMA-D name SPEAKER_SENTENCE_EMOTION_LEVEL.wav with EMOTION one of "
                             f"{', '.join(CREMAD_EMOTIONS)}, got {stem!r}; point ROOT at the CREMA-D folder "
                             f"(AudioWAV/ inside it) and move other wavs out")
        items.append(Item(wav, CREMAD_EMOTIONS[m.group(3)], m.group(1), wav))
    return items


# --------------------------------------------------------------------------------------------- ESD

ESD_EMOTIONS = ("Angry", "Happy", "Neutral", "Sad", "Surprise")


def esd(root: str) -> List[Item]:
    """ESD ``<speaker>/<Emotion>/**/<speaker>_<n>.wav``: 5 emotions from the folder, grouped by speaker."""
    items: List[Item] = []
    speakers = sorted(d for d in os.listdir(root) if re.fullmatch(r"\d{4}", d) and os.path.isdir(os.path.join(root, d)))
    for speaker in speakers:
        for emotion in ESD_EMOTIONS:
            folder = os.path.join(root, speaker, emotion)
            if os.path.isdir(folder):
                items.extend(Item(wav, emotion.lower(), speaker, wav) for wav in _wavs_under(folder))
    return items


# --------------------------------------------------------------------------------------------- CSV

def from_csv(path: str) -> List[Item]:
    """A CSV with the header ``path,label[,group]``; relative paths are relative to the CSV's folder."""
    if not os.path.isfile(path):
        state = "is a directory" if os.path.isdir(path) else "does not exist"
        raise LabelError(f"{path} {state}; for the csv dataset ROOT is the CSV file itself "
                         f"(header path,label[,group])")
    base = os.path.dirname(os.path.abspath(path))
    items: List[Item] = []
    try:
        text = read_utf8(path, "CSV file (header path,label[,group])")  # drops a BOM from a spreadsheet export
    except TextFileError as e:
        raise LabelError(str(e)) from None
    if "\x00" in text:
        raise LabelError(f"{path}: holds NUL bytes, so it is not a CSV text file (header path,label[,group]); "
                         f"check that this is the right file")
    with io.StringIO(text, newline="") as f:
        reader = csv.reader(f)
        header = [h.strip().lower() for h in next(reader, [])]
        if "path" not in header or "label" not in header:
            raise LabelError(f"{path}:1: expected the header path,label[,group], got {','.join(header) or 'nothing'}")
        col_path, col_label = header.index("path"), header.index("label")
        col_group = header.index("group") if "group" in header else None
        if col_group is None:
            logger.warning("%s: no group column; every row is in group 'all' (add a speaker column named group "
                           "for leave-one-speaker-out probes)", path)
        for row in reader:
            lineno = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if len(row) < len(header):
                raise LabelError(f"{path}:{lineno}: expected {len(header)} columns ({','.join(header)}), "
                                 f"got {len(row)}: {row}")
            rel, label = row[col_path].strip(), row[col_label].strip()
            group = row[col_group].strip() if col_group is not None else "all"
            for what, value in (("path", rel), ("label", label), ("group", group)):
                if not value or any(c in value for c in "\t\n\r"):
                    raise LabelError(f"{path}:{lineno}: the {what} is empty or holds a tab/line break: {value!r}")
            wav = rel if os.path.isabs(rel) else os.path.join(base, rel)
            _require_audio(wav, f"{path}:{lineno}", "fix the path (relative paths are relative to the CSV's "
                                                    "folder) or remove the row")
            items.append(Item(os.path.abspath(wav), label, group, f"{path}:{lineno}"))
    return items


DATASETS: Dict[str, Callable[[str], List[Item]]] = {
    "iemocap": iemocap, "ravdess": ravdess, "cremad": cremad, "esd": esd, "csv": from_csv,
}


def read_items(dataset: str, root: str) -> List[Item]:
    """Labelled utterances of ``dataset`` under ``root``; raises :class:`LabelError` when unusable."""
    if dataset not in DATASETS:
        raise LabelError(f"unknown dataset {dataset!r}; expected one of {', '.join(sorted(DATASETS))} "
                         f"(csv: your own path,label[,group] file)")
    if dataset != "csv" and not os.path.isdir(root):
        raise LabelError(f"{root} is not a folder; for {dataset} ROOT is the corpus folder")
    items = DATASETS[dataset](root)
    if not items:
        raise LabelError(f"{root}: no labelled utterances found for {dataset}; check that ROOT is the corpus "
                         f"folder with the layout described in `e2v-labels --help`")
    first_seen: Dict[str, str] = {}
    for item in items:
        if item.path in first_seen:
            raise LabelError(f"{item.source}: {item.path} is labelled twice (first at {first_seen[item.path]}); "
                             f"keep one row per file")
        first_seen[item.path] = item.source
    return items


def get_parser() -> argparse.ArgumentParser:
    """Command-line options of ``e2v-labels``."""
    p = argparse.ArgumentParser(prog="e2v-labels", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", metavar="DATASET", help=f"one of {', '.join(sorted(DATASETS))}")
    p.add_argument("root", metavar="ROOT", help="corpus folder (for csv: the CSV file)")
    p.add_argument("--dest", required=True, help="output folder")
    p.add_argument("--split", default="all", help="output name: DEST/<split>.tsv, .emo, .group (default: %(default)s)")
    p.add_argument("--resample-to", default=None, metavar="OUT",
                   help="convert audio that is not 16 kHz mono into OUT (as e2v-manifest does)")
    p.add_argument("--workers", type=int, default=1, help="processes reading files (1: no pool)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(args: argparse.Namespace) -> Dict[str, object]:
    """Read the labels, check the audio, write ``<split>.tsv/.emo/.group``; return the summary.

    Raises:
        LabelError: unknown dataset, no labelled utterance, a label pointing to a missing file,
            or every file skipped.
    """
    items = read_items(args.dataset, args.root)
    paths = [os.path.abspath(item.path) for item in items]
    base = os.path.commonpath([os.path.dirname(p) for p in paths])
    rels = [os.path.relpath(p, base) for p in paths]
    try:
        results = check_files(base, rels, args.resample_to, workers=args.workers, progress=not args.quiet)
    except ManifestToolError as e:
        raise LabelError(str(e)) from None
    os.makedirs(args.dest, exist_ok=True)
    stem = os.path.join(args.dest, args.split)
    write_skipped(stem + ".skipped.tsv", base, results)
    kept = [(result, item) for result, item in zip(results, items) if result.ok]
    counts = summarise(results)
    if not kept:
        hint = " (RAVDESS is 48 kHz: add --resample-to OUT)" if "needs resampling" in counts["skipped"] else ""
        raise LabelError(f"all {len(items)} labelled files were skipped ({counts['skipped']}){hint}; "
                         f"reasons per file in {stem}.skipped.tsv")
    write_manifest(stem + ".tsv", args.resample_to or base, [(r.listed_rel, r.frames) for r, _ in kept])
    for ext, values in ((".emo", [i.label for _, i in kept]), (".group", [i.group for _, i in kept])):
        with open(stem + ext, "w", encoding="utf-8") as f:
            f.write("\n".join(values) + "\n")
    classes = Counter(i.label for _, i in kept)
    groups = Counter(i.group for _, i in kept)
    for reason, n in counts["skipped"].items():
        logger.warning("%d labelled file(s) skipped: %s (see %s.skipped.tsv)", n, reason, stem)
    return {
        "dataset": args.dataset, "utterances": len(kept), "classes": dict(sorted(classes.items())),
        "groups": dict(sorted(groups.items())), "converted": counts["converted"], "skipped": counts["skipped"],
        "hours": counts["hours"], "outputs": [stem + ext for ext in (".tsv", ".emo", ".group", ".skipped.tsv")],
    }


def format_summary(s: Dict[str, object]) -> str:
    """The CLI's closing lines: counts per class, groups, skips."""
    classes = ", ".join(f"{label} {n}" for label, n in s["classes"].items())
    skipped = ", ".join(f"{reason} {n}" for reason, n in s["skipped"].items()) or "none"
    return (f"e2v-labels {s['dataset']}: {s['utterances']} utterances ({s['hours']:.2f} h), "
            f"{len(s['groups'])} groups, converted {s['converted']}, skipped {sum(s['skipped'].values())} ({skipped})\n"
            f"  per class: {classes}\n"
            f"  wrote {', '.join(s['outputs'])}")


def cli_main(argv: Optional[List[str]] = None) -> None:
    """Console script ``e2v-labels``: bad input is one ``e2v-labels: error: ...`` line and exit 2."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", force=True)
    args = get_parser().parse_args(argv)
    summary = run_main("e2v-labels", main, args)  # OSError too: writing under --dest failed
    print(format_summary(summary))


if __name__ == "__main__":
    cli_main()
