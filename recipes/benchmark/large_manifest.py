"""Memory and start-up of pretraining on a manifest of millions of utterances (issue 21).

Suppose there is room under ``/tmp/large_manifest``; run::

    .venv/bin/python recipes/benchmark/large_manifest.py --utterances 2000000 --work /tmp/large_manifest

What it does, for ``--utterances N``:

1. writes ``work/N/train.tsv``: N distinct paths that resolve to a few real short wavs through
   directory symlinks (``data/synthetic.py: write_fanout_manifest``, no millions of files);
2. **load**: times ``read_manifest`` plus the dataset in a fresh process;
3. **training**: runs the tiny recipe through ``fairseq-hydra-train`` with ``--workers`` loader
   workers for ``--updates`` updates (batches of ``--max-tokens`` samples of 0.25-0.5 s crops, so
   that workers read many utterances), and samples USS, PSS and RSS of the trainer and every
   worker from ``/proc/<pid>/smaps_rollup`` every ``--interval`` seconds. The same run with
   ``--baseline`` utterances gives the trainer's memory without the corpus; the difference of
   the trainer's RSS at the first update (its USS misses pages shared with the workers), divided
   by the extra utterances, is the trainer's dataset memory per utterance (manifest, dataset
   arrays, fairseq's batches). A worker's growth is its USS at
   the end minus after the first quarter of the updates (its first batches allocate buffers
   once), per 100,000 utterances it read in between (fairseq's ``bsz`` of those updates divided
   by the workers);
4. **reference** (``--reference``): the same per-utterance and per-worker numbers outside
   fairseq-hydra-train, for fairseq's own ``FileAudioDataset`` (its names in a pyarrow array when
   pyarrow is installed, else a list) and for this plugin's dataset (with the garbage collector
   frozen before the fork, as the emotion2vec tasks do) on the same manifest: a fresh process
   builds the dataset, forks a DataLoader with the same workers and reads a quarter of
   ``--reference-reads`` random utterances as warm-up, then ``--reference-reads`` more; growth is
   measured over the latter (peaks of its first and last third, ``envelope_growth``), and the
   warm-up's growth is reported apart.

Prints a summary and writes everything to ``work/N/result.json``.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

REPO = Path(__file__).resolve().parents[2]
RECIPES = REPO / "recipes" / "pretrain"
PLUGIN = REPO / "emotion2vec_plugin"
UPDATE = re.compile(r"num_updates=(\d+)")
BSZ = re.compile(r"\bbsz=([\d.]+)")


def make_data(work: Path, n: int) -> Path:
    """``work/N/{train,valid}.tsv`` (valid: the first 200 utterances) over the shared fan-out in ``work/root``."""
    from emotion2vec_plugin.data.synthetic import write_fanout_manifest

    data = work / str(n)
    train = data / "train.tsv"
    if not train.is_file():
        write_fanout_manifest(work / "root", train, n, real_files=8, min_len=4000, max_len=8000)
    if not (data / "valid.tsv").is_file():
        with open(train) as f:
            head = [next(f) for _ in range(min(n, 200) + 1)]
        (data / "valid.tsv").write_text("".join(head))
    return data


class Sampler(threading.Thread):
    """Samples the memory of a process and its children every ``interval`` s while it lives."""

    def __init__(self, pid: int, interval: float):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.samples: List[Dict[str, object]] = []
        self.progress = {"update": 0, "utterances": 0}
        self.stop = False

    def snapshot(self) -> Dict[str, object]:
        from emotion2vec_plugin.data.worker_memory import child_pids, memory_kib

        mem = {}
        for pid in [self.pid] + child_pids(self.pid):
            try:
                mem[pid] = memory_kib(pid)
            except (FileNotFoundError, ProcessLookupError):
                continue
        return {"t": time.perf_counter(), **self.progress, "mem": mem}

    def run(self) -> None:
        while not self.stop:
            self.samples.append(self.snapshot())
            time.sleep(self.interval)


def train_run(data: Path, out: Path, args: argparse.Namespace, updates: int) -> Dict[str, object]:
    """One fairseq-hydra-train run of the tiny recipe, sampled; returns timings and memory."""
    out.mkdir(parents=True, exist_ok=True)
    cmd = [str(Path(sys.executable).with_name("fairseq-hydra-train")), "--config-dir", str(RECIPES),
           "--config-name", "emotion2vec_tiny", f"task.data={data}", f"common.user_dir={PLUGIN}",
           f"dataset.num_workers={args.workers}", f"dataset.max_tokens={args.max_tokens}",
           f"optimization.max_update={updates}", "common.log_interval=1", "checkpoint.no_save=true",
           "dataset.disable_validation=true", "task.min_sample_size=4000", "task.max_sample_size=8000",
           "common.tensorboard_logdir=null", "lr_scheduler.warmup_updates=1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=out, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sampler = Sampler(proc.pid, args.interval)
    sampler.start()
    first_update: Optional[Dict[str, object]] = None
    loaded_s = None
    log = []
    for line in proc.stdout:
        log.append(line)
        if loaded_s is None and "loaded" in line and "utterances from" in line and "train.tsv" in line:
            loaded_s = time.perf_counter() - start
        m = UPDATE.search(line)
        if m:  # a train_inner line of the simple log format (summaries say "num_updates N")
            b = BSZ.search(line)
            sampler.progress = {"update": int(m.group(1)),
                                "utterances": sampler.progress["utterances"] + (float(b.group(1)) if b else 0)}
            if first_update is None:
                first_update = {**sampler.snapshot(), "seconds": time.perf_counter() - start}
    proc.wait()
    sampler.stop = True
    sampler.join()
    (out / "train.log").write_text("".join(log))
    if proc.returncode != 0 or first_update is None:
        raise SystemExit(f"fairseq-hydra-train failed ({proc.returncode}); log: {out / 'train.log'}\n"
                         + "".join(log[-30:]))
    return {"loaded_s": loaded_s, "first_update": first_update, "samples": sampler.samples,
            "trainer": proc.pid, "updates": sampler.progress["update"], "utterances": sampler.progress["utterances"]}


def envelope_growth(points: List[tuple]) -> tuple:
    """(growth in MB, utterances read) between the first and the last third of ``points``
    [(utterances read, USS KiB)], each third taken at its peak USS: a worker trims its heap every
    50 batches, so its USS is a sawtooth, and only a rise of the peaks is growth."""
    k = max(1, len(points) // 3)
    head, tail = points[:k], points[-k:]
    grow = (max(u for _, u in tail) - max(u for _, u in head)) / 1024
    read = (tail[len(tail) // 2][0] - head[len(head) // 2][0])
    return grow, read


def worker_growth(run: Dict[str, object], workers: int, warm: float = 0.25) -> List[Dict[str, float]]:
    """Per worker: USS at the first update and at the end, and its growth per 100k utterances
    read (:func:`envelope_growth`) from ``warm`` of the updates (its first batches allocate
    buffers once) to its last sample before the final update (fairseq's teardown after it
    rewrites the trainer's pages, which shows up in the workers)."""
    first = run["first_update"]
    trainer = run["trainer"]
    out = []
    for pid in [p for p in first["mem"] if p != trainer]:
        warmed = [s for s in run["samples"] if pid in s["mem"] and s["t"] >= first["t"]
                  and warm * run["updates"] <= s["update"] < run["updates"]]
        if len(warmed) < 3:
            continue
        grow, read = envelope_growth([(s["utterances"] / workers, s["mem"][pid]["uss"]) for s in warmed])
        out.append({"pid": pid, "uss_first_update_mb": first["mem"][pid]["uss"] / 1024,
                    "uss_end_mb": warmed[-1]["mem"][pid]["uss"] / 1024, "read": read, "growth_mb": grow,
                    "mb_per_100k": grow / read * 1e5 if read > 0 else float("nan")})
    return out


def totals(run: Dict[str, object]) -> Dict[str, float]:
    """USS and PSS summed over the trainer and its workers, at the last sample holding all of them."""
    samples = [s for s in run["samples"] if len(s["mem"]) == max(len(x["mem"]) for x in run["samples"])]
    last = samples[-1]["mem"]
    return {"processes": len(last), "uss_mb": sum(m["uss"] for m in last.values()) / 1024,
            "pss_mb": sum(m["pss"] for m in last.values()) / 1024, "rss_mb": sum(m["rss"] for m in last.values()) / 1024}


def child_load(manifest: str) -> None:
    """``--child-load``: seconds and USS growth of read_manifest + the dataset, as one JSON line."""
    from emotion2vec_plugin.data.audio_dataset import Emotion2vecAudioDataset
    from emotion2vec_plugin.data.manifest import read_manifest
    from emotion2vec_plugin.data.worker_memory import memory_kib

    before = memory_kib()["uss"]  # after the imports: only the manifest and dataset count
    t = time.perf_counter()
    m = read_manifest(manifest)
    read_s = time.perf_counter() - t
    ds = Emotion2vecAudioDataset(m, max_sample_size=8000, min_sample_size=4000)
    total_s = time.perf_counter() - t
    print(json.dumps({"read_s": read_s, "load_s": total_s, "utterances": len(ds),
                      "uss_mb": (memory_kib()["uss"] - before) / 1024, "manifest_bytes": m.nbytes}))


def child_reference(kind: str, manifest: str, workers: int, reads: int) -> None:
    """``--child-reference``: one dataset (``fairseq`` FileAudioDataset or ``emotion2vec``) built
    in this fresh process, then ``workers`` forked loader workers read ``reads`` random
    utterances; one JSON line with the build time, USS per utterance and worker growth."""
    import numpy as np
    import torch

    from fairseq.data import FileAudioDataset

    from emotion2vec_plugin.data.audio_dataset import Emotion2vecAudioDataset
    from emotion2vec_plugin.data.manifest import read_manifest
    from emotion2vec_plugin.data.worker_memory import freeze_gc_before_fork, memory_kib

    before = memory_kib()["uss"]  # after the imports: only the dataset counts
    t = time.perf_counter()
    if kind == "fairseq":
        ds = FileAudioDataset(manifest, sample_rate=16000, max_sample_size=8000, min_sample_size=4000, pad=False,
                              normalize=True)
        backend = type(ds.fnames).__module__.split(".")[0]
    else:
        ds = Emotion2vecAudioDataset(read_manifest(manifest), max_sample_size=8000, min_sample_size=4000)
        backend = "numpy"
        freeze_gc_before_fork()  # as the emotion2vec tasks do in setup_task; fairseq's trainer does not
    build_s = time.perf_counter() - t
    built = memory_kib()["uss"]
    batch = 64
    warm = reads // 4
    order = np.random.default_rng(0).permutation(len(ds))[: warm + reads + 4 * workers * batch]
    batches = [order[i:i + batch] for i in range(0, len(order), batch)]
    loader = torch.utils.data.DataLoader(ds, batch_sampler=batches, collate_fn=ds.collater, num_workers=workers,
                                         multiprocessing_context="fork", prefetch_factor=2)
    it = iter(loader)
    pids = [w.pid for w in it._workers]
    first = {p: memory_kib(p)["uss"] for p in pids}
    n = 0
    while n < warm:  # warm-up: each worker's allocator grows to its working set once
        n += len(next(it)["id"])
    start = {p: memory_kib(p)["uss"] for p in pids}
    n = 0
    trace = {p: [] for p in pids}
    while n < reads:
        n += len(next(it)["id"])
        for p in pids:
            trace[p].append((n / workers, memory_kib(p)["uss"]))
    del it
    growth, spans = zip(*(envelope_growth(trace[p]) for p in pids))
    print(json.dumps({"kind": kind, "names": backend, "build_s": build_s, "utterances": len(ds),
                      "bytes_per_utt": (built - before) * 1024 / len(ds), "reads_per_worker": n / workers,
                      "warmup_growth_mb": [(start[p] - first[p]) / 1024 for p in pids],
                      "worker_growth_mb": growth,
                      "mb_per_100k": [g / r * 1e5 for g, r in zip(growth, spans)]}))


def child(argv: List[str]) -> Dict[str, object]:
    """Run this script's ``argv`` in a fresh interpreter; its last stdout line as JSON."""
    proc = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{proc.stdout}{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--utterances", type=int, required=True, help="manifest lines N")
    p.add_argument("--work", type=Path, required=True, help="folder for the fan-out, manifests and runs")
    p.add_argument("--workers", type=int, default=6, help="loader workers (the GPU recipes ship 6)")
    p.add_argument("--updates", type=int, default=200, help="updates of the training run")
    p.add_argument("--max-tokens", type=int, default=400000, help="samples per batch (0.25-0.5 s crops: ~50-100)")
    p.add_argument("--baseline", type=int, default=10000, help="utterances of the baseline training run")
    p.add_argument("--interval", type=float, default=0.5, help="seconds between memory samples")
    p.add_argument("--no-train", action="store_true", help="skip the fairseq-hydra-train runs")
    p.add_argument("--reference", action="store_true",
                   help="also measure fairseq's FileAudioDataset and this plugin's dataset outside the trainer")
    p.add_argument("--reference-reads", type=int, default=120000, help="utterances the reference workers read")
    p.add_argument("--child-load", help=argparse.SUPPRESS)
    p.add_argument("--child-reference", nargs=2, metavar=("KIND", "MANIFEST"), help=argparse.SUPPRESS)
    return p


def main(args: argparse.Namespace) -> Dict[str, object]:
    if args.child_load:
        child_load(args.child_load)
        return {}
    if args.child_reference:
        child_reference(args.child_reference[0], args.child_reference[1], args.workers, args.reference_reads)
        return {}
    work = args.work.resolve()
    t = time.perf_counter()
    data = make_data(work, args.utterances)
    result: Dict[str, object] = {"utterances": args.utterances, "workers": args.workers,
                                 "write_manifest_s": time.perf_counter() - t,
                                 "manifest_mb": (data / "train.tsv").stat().st_size / 2**20}
    result["load"] = child(["--child-load", str(data / "train.tsv"), "--utterances", "0", "--work", str(work)])
    print(f"load: read_manifest {result['load']['read_s']:.2f} s, with the dataset {result['load']['load_s']:.2f} s, "
          f"{result['load']['uss_mb'] * 2**20 / args.utterances:.1f} B/utt", flush=True)
    if not args.no_train:
        base = train_run(make_data(work, args.baseline), work / f"run_{args.baseline}", args, 3)
        run = train_run(data, work / f"run_{args.utterances}", args, args.updates)
        # RSS, not USS: the dataset's pages are shared with the workers, so the trainer's USS misses them
        trainer_extra = (run["first_update"]["mem"][run["trainer"]]["rss"]
                         - base["first_update"]["mem"][base["trainer"]]["rss"]) * 1024
        growth = worker_growth(run, args.workers)
        result["train"] = {
            "loaded_s": run["loaded_s"], "first_update_s": run["first_update"]["seconds"],
            "baseline_first_update_s": base["first_update"]["seconds"], "updates": run["updates"],
            "utterances_read": run["utterances"],
            "trainer_rss_mb": run["first_update"]["mem"][run["trainer"]]["rss"] / 1024,
            "baseline_trainer_rss_mb": base["first_update"]["mem"][base["trainer"]]["rss"] / 1024,
            "trainer_bytes_per_utt": trainer_extra / (args.utterances - args.baseline),
            "workers": growth, "worst_worker_mb_per_100k": max((g["mb_per_100k"] for g in growth), default=None),
            "totals_end": totals(run)}
        tr = result["train"]
        print(f"train: manifest loaded at {tr['loaded_s']:.1f} s, first update at {tr['first_update_s']:.1f} s "
              f"(baseline {tr['baseline_first_update_s']:.1f} s); trainer dataset memory "
              f"{tr['trainer_bytes_per_utt']:.1f} B/utt; worker growth per 100k read: "
              + ", ".join(f"{g['mb_per_100k']:.2f}" for g in growth) + f" MB (each read ~{growth[0]['read']:.0f}); "
              f"total at end: USS {tr['totals_end']['uss_mb']:.0f} MB, PSS {tr['totals_end']['pss_mb']:.0f} MB "
              f"over {tr['totals_end']['processes']} processes", flush=True)
        result["raw"] = {"baseline": base, "run": run}
    if args.reference:
        result["reference"] = {}
        for kind in ("fairseq", "emotion2vec"):
            r = child(["--child-reference", kind, str(data / "train.tsv"), "--utterances", "0", "--work", str(work),
                       "--workers", str(args.workers), "--reference-reads", str(args.reference_reads)])
            result["reference"][kind] = r
            print(f"reference {kind} ({r['names']} names): build {r['build_s']:.1f} s, {r['bytes_per_utt']:.1f} B/utt, "
                  f"worker growth per 100k read: {', '.join(f'{g:.2f}' for g in r['mb_per_100k'])} MB "
                  f"(each read {r['reads_per_worker']:.0f} after a warm-up that grew each by "
                  f"{', '.join(f'{g:.1f}' for g in r['warmup_growth_mb'])} MB)", flush=True)
    (data / "result.json").write_text(json.dumps(result, indent=1, default=str))
    return result


if __name__ == "__main__":
    main(get_parser().parse_args())
