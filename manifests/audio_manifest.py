"""``e2v-manifest``: a folder of audio in whatever shape -> clean fairseq train/valid manifests.

    e2v-manifest ROOT --dest DIR [--ext wav,flac,...,mp4,m4a] [--valid-percent 0.01] [--seed 42]
                 [--min-seconds S] [--max-seconds S] [--resample-to OUT] [--workers N] [--quiet]

Scans ROOT recursively (symlinked files are listed under their own name; symlinked folders are
followed, each real folder once, see :func:`scan`), checks every file with
:func:`manifests.audio_info.inspect` (for wav one header read, the same work as fairseq's
``wav2vec_manifest.py``) in ``--workers`` processes, and writes

* ``DIR/train.tsv`` and ``DIR/valid.tsv``: fairseq's format, the audio root on line 1, then
  ``relpath<TAB>num_samples`` at 16 kHz. Files are sorted before a seeded split, so the same
  folder and seed give the same manifests whatever ``--workers`` is;
* ``DIR/skipped.tsv``: ``path<TAB>reason<TAB>detail`` for every file left out, reason one of
  unreadable, empty, too short, too long, unsupported, needs resampling.

Audio that is not 16 kHz mono is never listed with a wrong length:

* without ``--resample-to`` it is skipped as "needs resampling" and the root is ROOT;
* with ``--resample-to OUT``, OUT becomes a complete 16 kHz mono mirror of ROOT and is the
  manifests' root: files that need it are converted to ``OUT/<relpath with .wav>`` (if that
  name is taken by another file, the old extension is kept: ``a.flac`` -> ``a.flac.wav``);
  files already 16 kHz mono are symlinked as ``OUT/<relpath>`` -> the original. Every listed
  path then resolves under one root, originals are never copied or modified, and a re-run
  reuses conversions that are newer than their source.

Compressed and video media (mp4, m4a, webm, avi, mkv, mov, opus; MELD is mp4, MEAD m4a) are
found by default and decoded with PyAV (FFmpeg inside its wheel, no system ffmpeg): they are
always converted (fairseq reads audio with soundfile), multichannel audio is mixed to the mean
of its channels, and the summary counts the downmixed files. A file FFmpeg cannot open or
decode is skipped as unreadable with FFmpeg's reason (MELD's ``train/dia125_utt3.mp4``: "moov
atom not found").
"""

import argparse
import functools
import logging
import os
import random
from collections import Counter
from typing import Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

from emotion2vec_plugin.cli import run_main
from emotion2vec_plugin.errors import Emotion2vecError

from .audio_info import (NEEDS_RESAMPLING, PYAV, REASONS, TARGET_RATE, TOO_LONG, TOO_SHORT, UNSUPPORTED, Probe,
                         Segment, convert, frames_at_target, inspect, map_chunked)

logger = logging.getLogger(__name__)

DEFAULT_EXTENSIONS = "wav,flac,ogg,opus,mp3,m4a,mp4,webm,avi,mkv,mov"


class ManifestToolError(Emotion2vecError, ValueError):
    """A run that cannot go on; the message says what, where and how to fix it."""


class Job(NamedTuple):
    """One scanned file: its path relative to the root and, with --resample-to, where a conversion goes.

    ``segment`` (start, end) in seconds: only that span of the file is wanted (cut into its own wav).
    """

    rel: str
    converted_rel: Optional[str] = None
    segment: Optional[Segment] = None


class Result(NamedTuple):
    """What happened to one file: ``action`` is listed, linked, converted, reused or skipped.

    ``listed_rel`` is the path in the manifest (relative to the manifest root), ``frames`` the
    16 kHz length; skipped files carry ``reason`` and ``detail``. ``downmixed``: a converted
    (or reused) file whose source had more than one channel.
    """

    rel: str
    action: str
    listed_rel: str = ""
    frames: int = 0
    reason: Optional[str] = None
    detail: str = ""
    downmixed: bool = False

    @property
    def ok(self) -> bool:
        return self.reason is None


class Settings(NamedTuple):
    """What every worker needs to know about the run (pickled once per chunk)."""

    root: str
    resample_to: Optional[str] = None
    min_seconds: float = 0.0
    max_seconds: Optional[float] = None


def parse_extensions(text: str) -> Tuple[str, ...]:
    """``"wav, .FLAC"`` -> ``(".wav", ".flac")``."""
    exts = tuple(sorted({"." + e.strip().lower().lstrip(".") for e in text.split(",") if e.strip().lstrip(".")}))
    if not exts:
        raise ManifestToolError(f"--ext {text!r} names no extension; give a comma-separated list like "
                                f"{DEFAULT_EXTENSIONS}")
    return exts


def scan(root: str, extensions: Iterable[str]) -> List[str]:
    """Sorted paths relative to ``root`` of the files whose extension (any case) is in ``extensions``.

    Symlinked files are listed under the link's own path. Symlinked folders are followed when
    they lead outside ``root``; one that leads back inside is not (its files are listed under
    their real path), and no real folder is walked twice, which also stops symlink loops.
    """
    wanted = {e.lower() for e in extensions}
    real_root = os.path.realpath(root)
    found: List[str] = []
    seen = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            logger.debug("%s: already scanned as another path to %s; not scanned twice", dirpath, real)
            dirnames[:] = []
            continue
        seen.add(real)
        kept = []
        for d in sorted(dirnames):
            full = os.path.join(dirpath, d)
            if os.path.islink(full):
                target = os.path.realpath(full)
                if target == real_root or target.startswith(real_root + os.sep):
                    logger.debug("%s: a link to %s inside the root; its files are listed under their real path",
                                 full, target)
                    continue
            kept.append(d)
        dirnames[:] = kept
        prefix = os.path.relpath(dirpath, root)
        prefix = "" if prefix == "." else prefix + os.sep
        for name in filenames:
            if os.path.splitext(name)[1].lower() in wanted:
                found.append(prefix + name)
    found.sort()
    return found


def plan_conversions(rels: Sequence[str]) -> Dict[str, str]:
    """Name under --resample-to for each file in case it must be converted (always a ``.wav``).

    ``a.flac`` -> ``a.wav`` unless another scanned file (or an earlier conversion) has that name;
    then ``a.flac.wav`` (then ``a.flac.1.wav``...). Deterministic: ``rels`` are taken in sorted order.
    """
    taken = set(rels)
    plan: Dict[str, str] = {}
    for rel in sorted(rels):
        stem, ext = os.path.splitext(rel)
        if ext.lower() == ".wav":
            plan[rel] = rel  # converted in place of itself: its own name is already its
            continue
        candidates = [stem + ".wav", rel + ".wav"] + [f"{rel}.{i}.wav" for i in range(1, 1000)]
        name = next(c for c in candidates if c not in taken)
        taken.add(name)
        plan[rel] = name
    return plan


# fairseq's FileAudioDataset passes paths with other suffixes through parse_path, which splits them at ':'
_FAIRSEQ_PLAIN_SUFFIXES = (".npy", ".wav", ".flac", ".ogg")


def manifest_path_problem(path: str, rel: str) -> Optional[str]:
    """Why ``rel`` (full path ``path``) cannot be a manifest line that fairseq reads back, or None."""
    if any(c in rel for c in "\t\n\r"):
        return "the path contains a tab or line break, which a manifest line cannot hold; rename it"
    if rel != rel.lstrip():
        return "the path starts with whitespace, which fairseq's manifest reader strips; rename it"
    if ":" in path and not path.endswith(_FAIRSEQ_PLAIN_SUFFIXES):
        return ("the path holds ':' and fairseq reads such paths as zip slices unless they end in "
                ".wav/.flac/.ogg; rename it")
    return None


def _link(target: str, link: str) -> None:
    """Make ``link`` a symlink to ``target``, replacing whatever an earlier run left there."""
    if os.path.islink(link):
        if os.readlink(link) == target:
            return
        os.remove(link)
    elif os.path.isfile(link):
        os.remove(link)  # a conversion from a run when the source was not 16 kHz mono
    os.makedirs(os.path.dirname(link) or ".", exist_ok=True)
    os.symlink(target, link)


def check_file(settings: Settings, job: Job) -> Result:
    """Inspect one file and decide: list it, link or convert it into --resample-to, or skip it.

    Runs in pool workers; returns a :class:`Result` and raises only when writing under
    --resample-to fails (a full disk should stop the run, not skip every file).
    """
    rel = job.rel
    path = os.path.join(settings.root, rel)
    problem = manifest_path_problem(path, rel)
    if problem:
        return Result(rel, "skipped", reason=UNSUPPORTED, detail=problem)
    probe = inspect(path)
    if not probe.ok:
        return Result(rel, "skipped", reason=probe.reason, detail=probe.detail)
    exact = probe.decoder != PYAV and job.segment is None  # else the length is known after decoding
    if exact:
        problem = length_problem(frames_at_target(probe.frames, probe.samplerate), settings)
        if problem:
            return Result(rel, "skipped", reason=problem[0], detail=problem[1])
    if settings.resample_to is None:
        if probe.native and job.segment is None:
            return Result(rel, "listed", rel, probe.frames)
        if probe.decoder == PYAV:
            detail = (f"{probe.subtype} audio ({probe.samplerate} Hz, {probe.channels} channel(s)) is decoded by PyAV, "
                      f"not by fairseq's soundfile; re-run with --resample-to OUT to convert it")
        elif job.segment is not None:
            detail = "a span of a longer file must be cut into its own wav; re-run with --resample-to OUT"
        else:
            detail = (f"{probe.samplerate} Hz, {probe.channels} channel(s), expected {TARGET_RATE} Hz mono; "
                      f"re-run with --resample-to OUT to convert")
        return Result(rel, "skipped", reason=NEEDS_RESAMPLING, detail=detail)
    if probe.native and job.segment is None:
        _link(os.path.abspath(path), os.path.join(settings.resample_to, rel))
        return Result(rel, "linked", rel, probe.frames)
    target_rel = job.converted_rel or os.path.splitext(rel)[0] + ".wav"
    written: Probe = convert(path, os.path.join(settings.resample_to, target_rel), probe, segment=job.segment)
    if not written.ok:
        return Result(rel, "skipped", reason=written.reason, detail=written.detail)
    if not exact:
        problem = length_problem(written.frames, settings)
        if problem:
            return Result(rel, "skipped", reason=problem[0], detail=problem[1])
    return Result(rel, "reused" if written.detail == "reused" else "converted", target_rel, written.frames,
                  downmixed=probe.channels > 1)


def length_problem(frames: int, settings: Settings) -> Optional[Tuple[str, str]]:
    """(reason, detail) when a 16 kHz length is outside --min-seconds / --max-seconds, else None."""
    seconds = frames / TARGET_RATE
    if seconds < settings.min_seconds:
        return TOO_SHORT, f"{seconds:.3f} s < --min-seconds {settings.min_seconds}"
    if settings.max_seconds is not None and seconds > settings.max_seconds:
        return TOO_LONG, f"{seconds:.3f} s > --max-seconds {settings.max_seconds}"
    return None


def segment_name(rel: str, segment: Segment) -> str:
    """Mirror name of a span of ``rel``: ``dir/stem_<start ms>_<end ms>.wav`` (a negative start is 0)."""
    start_ms = max(0, int(round(segment[0] * 1000)))
    end_ms = max(start_ms, int(round(segment[1] * 1000)))
    return f"{os.path.splitext(rel)[0]}_{start_ms:07d}_{end_ms:07d}.wav"


def check_files(root: str, rels: Sequence[str], resample_to: Optional[str] = None, min_seconds: float = 0.0,
                max_seconds: Optional[float] = None, workers: int = 1, progress: bool = True,
                segments: Optional[Sequence[Optional[Segment]]] = None) -> List[Result]:
    """:func:`check_file` for every path in ``rels`` (relative to ``root``), in the same order.

    ``segments`` (parallel to ``rels``, None for a whole file): spans cut into their own wav
    under ``resample_to`` (named by :func:`segment_name`); the same file may then appear in
    ``rels`` once per span. With ``resample_to`` the folder is created; no link or conversion
    may land on a file in ``rels`` (checked before anything is written).
    """
    root = os.path.abspath(root)
    segments = list(segments) if segments is not None else [None] * len(rels)
    if resample_to is not None:
        resample_to = os.path.abspath(resample_to)
        plan = plan_conversions(sorted({rel for rel, seg in zip(rels, segments) if seg is None}))
        jobs = [Job(rel, plan[rel]) if seg is None else Job(rel, segment_name(rel, seg), seg)
                for rel, seg in zip(rels, segments)]
        sources = {os.path.join(root, rel) for rel in rels}
        for job in jobs:
            for dest in (os.path.join(resample_to, job.rel), os.path.join(resample_to, job.converted_rel)):
                if dest in sources:
                    raise ManifestToolError(f"--resample-to {resample_to} would write {dest}, which is one of the "
                                            f"source files; choose a folder outside the audio")
        os.makedirs(resample_to, exist_ok=True)
    else:
        jobs = [Job(rel, segment=seg) for rel, seg in zip(rels, segments)]
    settings = Settings(root, resample_to, min_seconds, max_seconds)
    return map_chunked(functools.partial(check_file, settings), jobs, workers=workers, progress=progress,
                       desc="checking audio")


def split_rows(rows: Sequence[Tuple[str, int]], valid_fraction: float,
               seed: int) -> Tuple[List[Tuple[str, int]], List[Tuple[str, int]]]:
    """Sort ``rows`` by path, then move a seeded random ``round(n * valid_fraction)`` of them to valid.

    With a fraction in (0, 1) and at least 2 rows, valid and train each get at least one row.
    Both parts keep the sorted order.
    """
    rows = sorted(rows)
    n = len(rows)
    n_valid = int(round(n * valid_fraction))
    if n >= 2 and 0 < valid_fraction < 1:
        n_valid = min(max(n_valid, 1), n - 1)
    chosen = set(random.Random(seed).sample(range(n), n_valid))
    train = [r for i, r in enumerate(rows) if i not in chosen]
    valid = [r for i, r in enumerate(rows) if i in chosen]
    return train, valid


def write_manifest(path: str, root: str, rows: Iterable[Tuple[str, int]]) -> None:
    """fairseq wav manifest: absolute ``root`` on line 1, then ``relpath<TAB>num_samples``."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(os.path.abspath(root) + "\n")
        for rel, frames in rows:
            f.write(f"{rel}\t{frames}\n")


def write_skipped(path: str, root: str, results: Iterable[Result]) -> None:
    """``DIR/skipped.tsv``: absolute source path, reason, detail; one line per skipped file."""
    with open(path, "w", encoding="utf-8") as f:
        for r in results:
            if not r.ok:
                where = os.path.join(root, r.rel).replace("\t", " ").replace("\n", " ").replace("\r", " ")
                f.write(f"{where}\t{r.reason}\t{r.detail}\n")


def log_unreadable(root: str, results: Sequence[Result], listed_in: str, limit: int = 20) -> None:
    """One warning per file the decoder could not read (its reason), the first ``limit`` of them."""
    bad = [r for r in results if r.reason in ("unreadable", "empty")]
    for r in bad[:limit]:
        logger.warning("%s: skipped (%s): %s; re-download or re-extract it", os.path.join(root, r.rel), r.reason,
                       r.detail)
    if len(bad) > limit:
        logger.warning("... and %d more unreadable or empty file(s), all in %s", len(bad) - limit, listed_in)


def summarise(results: Sequence[Result]) -> Dict[str, object]:
    """Counts for a summary: found, kept, linked, converted (reused), skipped per reason, hours kept."""
    actions = Counter(r.action for r in results)
    reasons = Counter(r.reason for r in results if not r.ok)
    return {
        "found": len(results),
        "kept": sum(1 for r in results if r.ok),
        "linked": actions["linked"],
        "converted": actions["converted"] + actions["reused"],
        "reused": actions["reused"],
        "downmixed": sum(1 for r in results if r.downmixed),
        "skipped": {reason: reasons[reason] for reason in REASONS if reasons[reason]},
        "hours": sum(r.frames for r in results if r.ok) / TARGET_RATE / 3600,
    }


def get_parser() -> argparse.ArgumentParser:
    """Command-line options of ``e2v-manifest``."""
    p = argparse.ArgumentParser(
        prog="e2v-manifest",
        description="Write fairseq train/valid manifests (16 kHz lengths) for a folder of audio; "
                    "every file left out is listed in DEST/skipped.tsv with its reason.")
    p.add_argument("root", help="folder scanned recursively (symlinks followed)")
    p.add_argument("--dest", required=True, help="output folder for train.tsv, valid.tsv and skipped.tsv")
    p.add_argument("--ext", default=DEFAULT_EXTENSIONS, help="comma-separated extensions, any case "
                                                             "(default: %(default)s)")
    p.add_argument("--valid-percent", type=float, default=0.01, metavar="FRACTION",
                   help="fraction (0-1) of files for valid.tsv, as in fairseq's script: 0.01 = 1%% "
                        "(default: %(default)s)")
    p.add_argument("--seed", type=int, default=42, help="seed of the train/valid split (default: %(default)s)")
    p.add_argument("--min-seconds", type=float, default=0.0, help="skip files shorter than this (\"too short\")")
    p.add_argument("--max-seconds", type=float, default=None, help="skip files longer than this (\"too long\")")
    p.add_argument("--resample-to", default=None, metavar="OUT",
                   help="convert audio that is not 16 kHz mono into OUT (same relative paths, .wav), symlink the "
                        "rest there, and use OUT as the manifests' root; without it such audio is skipped")
    p.add_argument("--workers", type=int, default=1, help="processes reading files (1: no pool)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(args: argparse.Namespace) -> Dict[str, object]:
    """Scan, check, split and write; return the summary (see :func:`summarise`, plus train/valid/root/dest).

    Raises:
        ManifestToolError: ROOT is not a folder, bad options, or no usable file at all
            (skipped.tsv is written first so that the reasons can be read).
    """
    root = os.path.abspath(args.root)
    if not os.path.isdir(root):
        raise ManifestToolError(f"audio root {args.root} is not a folder; give the folder that holds the audio")
    if not 0.0 <= args.valid_percent <= 1.0:
        raise ManifestToolError(f"--valid-percent {args.valid_percent} must be a fraction between 0 and 1 "
                                f"(0.01 means 1%, as in fairseq's wav2vec_manifest.py)")
    if args.max_seconds is not None and args.max_seconds < args.min_seconds:
        raise ManifestToolError(f"--max-seconds {args.max_seconds} is below --min-seconds {args.min_seconds}")
    if args.resample_to is not None:
        out = os.path.abspath(args.resample_to)
        if os.path.commonpath([root, out]) in (root, out):
            raise ManifestToolError(f"--resample-to {out} and the audio root {root} contain one another; choose a "
                                    f"folder outside the root (else a later scan would list the converted copies)")
    extensions = parse_extensions(args.ext)
    rels = scan(root, extensions)
    logger.info("found %d files (%s) under %s", len(rels), ",".join(extensions), root)
    if not rels:
        raise ManifestToolError(f"no files ending in {', '.join(extensions)} under {root}; check ROOT or --ext")
    results = check_files(root, rels, args.resample_to, args.min_seconds, args.max_seconds, args.workers,
                          progress=not getattr(args, "quiet", False))
    os.makedirs(args.dest, exist_ok=True)
    skipped_path = os.path.join(os.path.abspath(args.dest), "skipped.tsv")
    write_skipped(skipped_path, root, results)
    summary = summarise(results)
    if not summary["kept"]:
        raise ManifestToolError(f"none of the {len(rels)} files under {root} can be listed "
                                f"({summary['skipped']}); reasons per file in {skipped_path}")
    manifest_root = os.path.abspath(args.resample_to) if args.resample_to else root
    train, valid = split_rows([(r.listed_rel, r.frames) for r in results if r.ok], args.valid_percent, args.seed)
    write_manifest(os.path.join(args.dest, "train.tsv"), manifest_root, train)
    write_manifest(os.path.join(args.dest, "valid.tsv"), manifest_root, valid)
    for reason, count in summary["skipped"].items():
        logger.info("skipped %d file(s): %s", count, reason)
    log_unreadable(root, results, skipped_path)
    summary.update(train=len(train), valid=len(valid), root=manifest_root, dest=os.path.abspath(args.dest),
                   skipped_list=skipped_path)
    return summary


def format_summary(s: Dict[str, object]) -> str:
    """The CLI's closing lines."""
    skipped = s["skipped"]
    by_reason = ", ".join(f"{reason} {count}" for reason, count in skipped.items()) or "none"
    converted = f"converted {s['converted']}" + (f" ({s['reused']} reused from an earlier run)" if s["reused"] else "")
    converted += f", downmixed {s['downmixed']} multichannel file(s) to the mean of their channels"
    return (f"e2v-manifest: found {s['found']} files, kept {s['kept']} ({s['hours']:.2f} h: train {s['train']}, "
            f"valid {s['valid']}), {converted}, linked {s['linked']}, skipped {sum(skipped.values())} ({by_reason})\n"
            f"  manifests: {s['dest']}/train.tsv, valid.tsv (root {s['root']})\n"
            f"  skipped files and reasons: {s['skipped_list']}")


def cli_main(argv: Optional[List[str]] = None) -> None:
    """Console script ``e2v-manifest``: bad input is one ``e2v-manifest: error: ...`` line and exit 2."""
    # force=True: importing fairseq elsewhere may already have set the root logger up at DEBUG
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", force=True)
    args = get_parser().parse_args(argv)
    # OSError (handled by run_main too): writing under --dest or --resample-to failed
    summary = run_main("e2v-manifest", main, args)
    print(format_summary(summary))


if __name__ == "__main__":
    cli_main()
