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
* ``meld`` (ROOT = ``MELD.Raw``), ``msppodcast``, ``mosei``, ``mead``, ``emobox`` (ROOT =
  ``EmoBox/data/<dataset>``): the paper's other corpora and any of EmoBox's 32 datasets, each
  from its public layout; see the modules of ``manifests/corpora/`` for the layouts and their
  variants. MELD is mp4 and MEAD m4a (decoded with PyAV); MOSEI's labels, and EmoBox entries
  with ``start_time``/``end_time``, are spans of longer files, each cut into its own wav:
  these need ``--resample-to OUT``.

Official partitions and folds (IEMOCAP's five sessions, MELD's and MSP-Podcast's
train/dev/test, MOSEI's standard fold with ``--folds-file``, EmoBox's ``fold_K``) are written as
``DIR/<split>.folds/fold_K/{train,valid,test}.{tsv,emo,group}`` (``valid`` only where the corpus
has one): the layout ``e2v-split-labels`` writes and fine-tuning reads, so
``task.data=DIR/<split>.folds/fold_1`` fine-tunes on an official fold.

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
from typing import Callable, Dict, List, Optional

from emotion2vec_plugin.cli import run_main
from emotion2vec_plugin.data.label_files import write_text_atomic
from emotion2vec_plugin.data.manifest import TextFileError, read_utf8

from .audio_manifest import (ManifestToolError, check_files, log_unreadable, summarise, write_manifest,
                             write_skipped)
from .corpora import READERS
from .corpora.base import Corpus, Item, LabelError, require_audio as _require_audio
from .folds import plan_folds, remove_stale, write_folds

logger = logging.getLogger(__name__)


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


def _iemocap_sessions(root: str, args) -> Corpus:
    """IEMOCAP with its five sessions as folds: fold K tests SessionK and trains on the others (no valid)."""
    items = iemocap(root)
    sessions = sorted({i.group for i in items}, key=lambda s: int(s[len("Session"):]))
    if len(sessions) < 2:
        return Corpus(items, notes=(f"one session ({', '.join(sessions)}): no leave-one-session-out folds",))
    items = [i._replace(roles=tuple("test" if i.group == s else "train" for s in sessions)) for i in items]
    return Corpus(items, folds=len(sessions), notes=(f"{len(sessions)} folds, one per session "
                                                     f"({', '.join(sessions)} tested in turn)",))


def _plain(reader: Callable[[str], List[Item]]) -> Callable[[str, argparse.Namespace], Corpus]:
    return lambda root, args: Corpus(reader(root))


DATASETS: Dict[str, Callable[[str, argparse.Namespace], Corpus]] = {
    "iemocap": _iemocap_sessions, "ravdess": _plain(ravdess), "cremad": _plain(cremad), "esd": _plain(esd),
    "csv": _plain(from_csv), **READERS,
}
# dataset-specific options -> the datasets that read them
OPTION_DATASETS = {"target": ("meld", "mosei"), "folds_file": ("mosei",), "csd": ("mosei",),
                   "audio_root": ("emobox",), "raw_labels": ("emobox",), "keep_other": ("msppodcast",),
                   "skip_missing": ("msppodcast", "mosei", "emobox")}
# datasets whose labels address spans of longer files, or whose media fairseq cannot read
NEED_RESAMPLE_TO = {"mosei": "its labels are spans of the full-video wavs, each cut into its own wav",
                    "meld": "its clips are mp4 (AAC, 48 kHz, up to 6 channels)", "mead": "its audio is AAC in m4a"}


def read_corpus(dataset: str, root: str, args: Optional[argparse.Namespace] = None) -> Corpus:
    """Labelled utterances of ``dataset`` under ``root``; raises :class:`LabelError` when unusable."""
    if dataset not in DATASETS:
        raise LabelError(f"unknown dataset {dataset!r}; expected one of {', '.join(sorted(DATASETS))} "
                         f"(csv: your own path,label[,group] file)")
    if dataset != "csv" and not os.path.isdir(root):
        raise LabelError(f"{root} is not a folder; for {dataset} ROOT is the corpus folder")
    corpus = DATASETS[dataset](root, args if args is not None else argparse.Namespace())
    if not corpus.items:
        raise LabelError(f"{root}: no labelled utterances found for {dataset}; check that ROOT is the corpus "
                         f"folder with the layout described in `e2v-labels --help`")
    first_seen: Dict[tuple, str] = {}
    for item in corpus.items:
        key = (item.path, item.segment)
        if key in first_seen:
            what = item.path + (f" [{item.segment[0]}, {item.segment[1]}] s" if item.segment else "")
            raise LabelError(f"{item.source}: {what} is labelled twice (first at {first_seen[key]}); "
                             f"keep one row per file")
        first_seen[key] = item.source
    return corpus


def read_items(dataset: str, root: str, args: Optional[argparse.Namespace] = None) -> List[Item]:
    """The items of :func:`read_corpus`."""
    return read_corpus(dataset, root, args).items


def get_parser() -> argparse.ArgumentParser:
    """Command-line options of ``e2v-labels``."""
    p = argparse.ArgumentParser(prog="e2v-labels", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", metavar="DATASET", help=f"one of {', '.join(sorted(DATASETS))}")
    p.add_argument("root", metavar="ROOT", help="corpus folder (for csv: the CSV file)")
    p.add_argument("--dest", required=True, help="output folder")
    p.add_argument("--split", default="all", help="output name: DEST/<split>.tsv, .emo, .group (default: %(default)s)")
    p.add_argument("--resample-to", default=None, metavar="OUT",
                   help="convert audio that is not 16 kHz mono (and cut spans) into OUT (as e2v-manifest does)")
    p.add_argument("--target", default=None,
                   help="meld: emotion (7, default) or sentiment (3); mosei: sentiment (2 classes, default), "
                        "sentiment3, sentiment7 or emotion (argmax of the six scores)")
    p.add_argument("--folds-file", default=None, metavar="FILE",
                   help="mosei: the standard folds, the SDK's cmu_mosei_std_folds.py or JSON {train, valid, test}")
    p.add_argument("--csd", default=None, metavar="PATH", help="mosei: CMU_MOSEI_Labels.csd (default: found under ROOT)")
    p.add_argument("--audio-root", default=None, metavar="DIR",
                   help="emobox: the folder its wav paths are relative to (default: the EmoBox root, ROOT/../..)")
    p.add_argument("--raw-labels", action="store_true", help="emobox: keep the dataset's codes, not label_map.json's")
    p.add_argument("--keep-other", action="store_true", help="msppodcast: keep the O (other) and X (no agreement) rows")
    p.add_argument("--skip-missing", action="store_true",
                   help="msppodcast, mosei, emobox: list label rows whose audio is missing in DEST/<split>.unmatched.tsv "
                        "instead of stopping (MELD always lists them)")
    p.add_argument("--workers", type=int, default=1, help="processes reading files (1: no pool)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(args: argparse.Namespace) -> Dict[str, object]:
    """Read the labels, check the audio, write ``<split>.tsv/.emo/.group`` and the folds; return the summary.

    Raises:
        LabelError: unknown dataset, no labelled utterance, a label pointing to a missing file,
            a bad labels file (named with its line), or every file skipped.
    """
    for option, datasets in OPTION_DATASETS.items():
        value = getattr(args, option, None)
        if value not in (None, False) and args.dataset not in datasets:
            raise LabelError(f"--{option.replace('_', '-')} is for {', '.join(datasets)}, not {args.dataset}; leave it out")
    if args.resample_to is None and args.dataset in NEED_RESAMPLE_TO:
        raise LabelError(f"{args.dataset} needs --resample-to OUT: {NEED_RESAMPLE_TO[args.dataset]}")
    corpus = read_corpus(args.dataset, args.root, args)
    items = corpus.items
    if args.resample_to is None and any(i.segment for i in items):
        raise LabelError(f"{args.root}: the labels address spans of longer files; add --resample-to OUT to cut each "
                         f"into its own wav")
    paths = [os.path.abspath(item.path) for item in items]
    base = os.path.commonpath([os.path.dirname(p) for p in paths])
    rels = [os.path.relpath(p, base) for p in paths]
    try:
        results = check_files(base, rels, args.resample_to, workers=args.workers, progress=not args.quiet,
                              segments=[i.segment for i in items])
    except ManifestToolError as e:
        raise LabelError(str(e)) from None
    os.makedirs(args.dest, exist_ok=True)
    stem = os.path.join(args.dest, args.split)
    write_skipped(stem + ".skipped.tsv", base, results)
    if corpus.unmatched:
        write_text_atomic(stem + ".unmatched.tsv", "".join(line + "\n" for line in corpus.unmatched))
    elif os.path.isfile(stem + ".unmatched.tsv"):
        os.remove(stem + ".unmatched.tsv")
    kept = [(result, item) for result, item in zip(results, items) if result.ok]
    counts = summarise(results)
    log_unreadable(base, results, stem + ".skipped.tsv")
    if not kept:
        hint = (" (for audio that is not 16 kHz mono wav, e.g. RAVDESS's 48 kHz or EmoBox's downloads, "
                "add --resample-to OUT)" if "needs resampling" in counts["skipped"] else "")
        raise LabelError(f"all {len(items)} labelled files were skipped ({counts['skipped']}){hint}; "
                         f"reasons per file in {stem}.skipped.tsv")
    root = os.path.abspath(args.resample_to or base)
    rows = [{"name": r.listed_rel, "size": str(r.frames), "label": i.label, "group": i.group} for r, i in kept]
    folds_dir = stem + ".folds"
    parts = plan_folds(folds_dir, rows, [i.roles for _, i in kept], corpus.folds) if corpus.folds else None
    write_manifest(stem + ".tsv.tmp", root, [(r.listed_rel, r.frames) for r, _ in kept])
    os.replace(stem + ".tsv.tmp", stem + ".tsv")
    for ext, values in ((".emo", [i.label for _, i in kept]), (".group", [i.group for _, i in kept])):
        write_text_atomic(stem + ext, "\n".join(values) + "\n")
    fold_counts = write_folds(folds_dir, root, parts) if parts is not None else {}
    if parts is None and remove_stale(folds_dir):
        logger.warning("removed %s, left by an earlier run: this run has no official folds", folds_dir)
    classes = Counter(i.label for _, i in kept)
    groups = Counter(i.group for _, i in kept)
    for reason, n in counts["skipped"].items():
        logger.warning("%d labelled file(s) skipped: %s (see %s.skipped.tsv)", n, reason, stem)
    return {
        "dataset": args.dataset, "utterances": len(kept), "classes": dict(sorted(classes.items())),
        "groups": dict(sorted(groups.items())), "converted": counts["converted"], "skipped": counts["skipped"],
        "hours": counts["hours"], "downmixed": counts["downmixed"], "notes": list(corpus.notes),
        "folds": fold_counts, "unmatched": len(corpus.unmatched),
        "outputs": [stem + ext for ext in (".tsv", ".emo", ".group", ".skipped.tsv")]
                   + ([stem + ".unmatched.tsv"] if corpus.unmatched else []) + ([folds_dir] if fold_counts else []),
    }


def format_summary(s: Dict[str, object]) -> str:
    """The CLI's closing lines: counts per class, groups, skips."""
    classes = ", ".join(f"{label} {n}" for label, n in s["classes"].items())
    skipped = ", ".join(f"{reason} {n}" for reason, n in s["skipped"].items()) or "none"
    lines = [f"e2v-labels {s['dataset']}: {s['utterances']} utterances ({s['hours']:.2f} h), "
             f"{len(s['groups'])} groups, converted {s['converted']} (downmixed {s.get('downmixed', 0)} multichannel "
             f"to the mean of their channels), skipped {sum(s['skipped'].values())} ({skipped})",
             f"  per class: {classes}"]
    lines += [f"  {note}" for note in s.get("notes", ())]
    for fold, parts in s.get("folds", {}).items():
        lines.append(f"  {fold}: " + ", ".join(f"{role} {n}" for role, n in parts.items()))
    lines.append(f"  wrote {', '.join(s['outputs'])}")
    return "\n".join(lines)


def cli_main(argv: Optional[List[str]] = None) -> None:
    """Console script ``e2v-labels``: bad input is one ``e2v-labels: error: ...`` line and exit 2."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", force=True)
    args = get_parser().parse_args(argv)
    summary = run_main("e2v-labels", main, args)  # OSError too: writing under --dest failed
    print(format_summary(summary))


if __name__ == "__main__":
    cli_main()
