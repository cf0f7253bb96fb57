"""The linear emotion probe run during pretraining (``task.probe_data``); no fairseq import.

At a validation the task calls :meth:`TrainingProbe.run` on every rank. Each rank extracts
mean-pooled per-block features for its shard of the probe set (utterance i goes to rank
``i % world_size``; padding-exact batches, eval mode, no grad), the shards are gathered with one
``all_gather_object``, rank 0 fits the linear probes
(:func:`~emotion2vec_plugin.evaluation.linear_probe.linear_probe_cv`) and one ``broadcast_object_list`` hands its numbers to every rank. Every rank makes the same two
collectives in the same order, so ranks cannot desynchronise, and every rank logs (and so picks
the best checkpoint or stops early from) the same numbers.

The probe set (``SPLIT.tsv`` + ``SPLIT.emo`` [+ ``SPLIT.group``], e2v-labels output) is read
once; each rank caches its shard's audio. A file that cannot be read, has the wrong rate or
channels, or is too short for the CNN is left out with one warning naming ``manifest:line``.

Records of every probe go to ``SAVE_DIR/probe.jsonl`` (rank 0): the update, the network, the
per-fold scores of every layer / normalisation, the time taken. ``e2v-curves`` reads them.
"""

import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.distributed as dist

from ..data.label_files import LabelFileError, read_column_file
from ..data.manifest import AudioReadError, read_manifest, read_mono
from ..evaluation.linear_probe import NORMALIZE_MODES, LinearProbeError, linear_probe_cv
from ..inference.batching import plan_batches
from ..inference.featurizer import FBANK_FRAMING, block_outputs, fbank_features, pooled_blocks, prepare_batch
from ..modules.clip_rules import clip_problem
from ..modules.layer_spec import combine_layers, parse_layer_specs

logger = logging.getLogger(__name__)

NETWORKS = ("student", "teacher", "both")


@dataclass
class ProbeSettings:
    """The task's ``probe_*`` fields (see the task config for their help)."""

    data: str
    split: str = "probe"
    interval: int = 0
    network: str = "student"
    layers: str = "last,mean"
    normalize: str = "both"
    folds: int = 5
    seed: int = 0
    batch_seconds: float = 160.0
    at_start: bool = True
    sample_rate: int = 16000
    normalize_audio: bool = True


class ProbeSet:
    """A labelled manifest: ``DIR/SPLIT.tsv`` + ``.emo`` (+ optional ``.group``), one line each."""

    def __init__(self, directory: str, split: str, sample_rate: int):
        stem = os.path.join(directory, split)
        self.manifest = read_manifest(stem + ".tsv")
        try:
            self.labels = read_column_file(stem + ".emo", "labels")
            self.groups = read_column_file(stem + ".group", "groups") if os.path.isfile(stem + ".group") else None
        except LabelFileError as e:
            raise LinearProbeError(f"task.probe_data: {e}") from None
        for what, values in (("labels", self.labels), ("groups", self.groups)):
            if values is not None and len(values) != len(self.manifest):
                ext = ".emo" if what == "labels" else ".group"
                raise LinearProbeError(f"task.probe_data: {stem}{ext} has {len(values)} {what} but {stem}.tsv lists "
                                       f"{len(self.manifest)} utterances; regenerate both with e2v-labels")
        self.sample_rate = sample_rate
        self._audio: Dict[int, Optional[np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.manifest)

    def audio(self, i: int, framing: List[Tuple[int, int, int]]) -> Optional[np.ndarray]:
        """Waveform of utterance ``i`` (cached), or None (warned once) when it cannot be used: not
        one frame of ``framing`` (a CNN spec), or NaN/inf samples (``clip_problem``)."""
        if i not in self._audio:
            where, path = self.manifest.where(i), self.manifest.full_path(i)
            try:
                wav = read_mono(path, where, self.sample_rate)
                reason = clip_problem(wav, framing)
                if reason is not None:
                    raise AudioReadError(f"{where}: {path}: {reason}")
                self._audio[i] = wav
            except AudioReadError as e:
                logger.warning("probe: skipping a bad file: %s", e)
                self._audio[i] = None
        return self._audio[i]


def _dist() -> Tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class TrainingProbe:
    """Runs the probe for a training task: :meth:`run` at validations (all ranks), :meth:`run_reference`
    once at update 0 (initial weights and the log-mel baseline)."""

    def __init__(self, settings: ProbeSettings, save_dir: Optional[str] = None, tensorboard_dir: Optional[str] = None):
        if settings.network not in NETWORKS:
            raise LinearProbeError(f"task.probe_network={settings.network!r}: expected one of {NETWORKS}")
        if settings.normalize not in NORMALIZE_MODES:
            raise LinearProbeError(f"task.probe_normalize={settings.normalize!r}: expected one of {NORMALIZE_MODES}")
        if settings.interval < 0 or settings.folds < 2 or settings.batch_seconds <= 0:
            raise LinearProbeError(f"task.probe_interval={settings.interval}, probe_folds={settings.folds}, "
                                   f"probe_batch_seconds={settings.batch_seconds}: expected >= 0, >= 2, > 0")
        self.s = settings
        self.data = ProbeSet(settings.data, settings.split, settings.sample_rate)
        self.save_dir = save_dir
        self.tensorboard_dir = tensorboard_dir
        self.last_update: Optional[int] = None
        self.last_metrics: Dict[str, float] = {}
        self.seconds_total = 0.0
        self.started = time.monotonic()
        modes = {"none": [False], "group": [True], "both": [False, True]}[settings.normalize]
        if self.data.groups is None and True in modes:
            logger.warning("probe: %s has no .group file, so no per-group normalisation (k-fold only)",
                           os.path.join(settings.data, settings.split))
            modes = [False]
        self.modes = modes
        logger.info("probe: %d utterances from %s (%s), network %s, layers %s, %s", len(self.data),
                    os.path.join(settings.data, settings.split + ".tsv"),
                    "leave-one-group-out" if self.data.groups and len(set(self.data.groups)) > 1 else
                    f"{settings.folds}-fold", settings.network, settings.layers,
                    "raw and per-group normalised" if len(modes) == 2 else
                    ("per-group normalised" if modes[0] else "no per-group normalisation"))

    def due(self, num_updates: int) -> bool:
        """Probe at this validation? Always with interval 0; else when ``interval`` updates have passed."""
        return self.s.interval <= 0 or self.last_update is None or num_updates - self.last_update >= self.s.interval

    # ------------------------------------------------------------------ features
    def _gather(self, featurize: Callable[[List[np.ndarray]], Dict[str, np.ndarray]],
                framing: List[Tuple[int, int, int]], max_batch: int) -> Tuple[np.ndarray, Dict[str, np.ndarray]]:
        """Features of every usable probe utterance: (kept indices [N'], {key: [N', D]}), the same on
        every rank. ``featurize`` maps a list of (at most ``max_batch``) waveforms to {key: [B, D]}."""
        rank, world = _dist()
        mine = [i for i in range(rank, len(self.data), world)]
        wavs = {i: self.data.audio(i, framing) for i in mine}
        usable = [i for i in mine if wavs[i] is not None]
        parts: Dict[str, List[np.ndarray]] = {}
        order: List[int] = []
        max_samples = int(self.s.batch_seconds * self.s.sample_rate)
        lengths = [len(wavs[i]) for i in usable]
        for batch in plan_batches(lengths, range(len(lengths)), max_batch, max_samples):
            idx = [usable[b] for b in batch]
            out = featurize([wavs[i] for i in idx])
            for k, v in out.items():
                parts.setdefault(k, []).append(v)
            order.extend(idx)
        local = (order, {k: np.concatenate(v) for k, v in parts.items()})
        shards = [local]
        if world > 1:
            shards = [None] * world
            dist.all_gather_object(shards, local)
        index = np.array([i for ids, _ in shards for i in ids], dtype=np.int64)
        keys = next((list(f) for ids, f in shards if ids), [])
        feats = {k: np.concatenate([f[k] for ids, f in shards if ids]) for k in keys}
        perm = np.argsort(index)
        return index[perm], {k: v[perm] for k, v in feats.items()}

    def _network_featurizer(self, model, specs) -> Callable[[List[np.ndarray]], Dict[str, np.ndarray]]:
        nets = ["student", "teacher"] if self.s.network == "both" else [self.s.network]

        @torch.no_grad()
        def featurize(wavs: List[np.ndarray]) -> Dict[str, np.ndarray]:
            batch = prepare_batch(model, wavs, self.s.normalize_audio)
            out = {}
            for net in nets:
                context = None  # the student
                if net == "teacher":  # the EMA teacher on the student's CNN features, as when it makes targets
                    model.teacher.to(batch.source.device)
                    context = model.teacher.module
                layers, frame_mask = block_outputs(model, batch, context)
                pooled = pooled_blocks(layers, frame_mask).cpu().numpy()  # [B, L, D]
                for name, v in combine_layers(pooled, specs).items():
                    out[f"{name}_{net}" if self.s.network == "both" else name] = v
            return out

        return featurize

    # ------------------------------------------------------------------ scoring
    def _score(self, index: np.ndarray, feats: Dict[str, np.ndarray]) -> Dict[str, dict]:
        labels = [self.data.labels[i] for i in index]
        groups = None if self.data.groups is None else [self.data.groups[i] for i in index]
        out = {}
        for key, x in feats.items():
            for per_group in self.modes:
                res = linear_probe_cv(x, labels, groups, self.s.folds, self.s.seed, per_group)
                out[key + ("_gnorm" if per_group else "")] = res
        return out

    def _finish(self, name: str, update: int, index: np.ndarray, scored: Optional[Dict[str, dict]],
                seconds: float) -> Dict[str, float]:
        """Rank 0's scores to every rank; metrics dict; log line and probe.jsonl record."""
        rank, world = _dist()
        if world > 1:
            box = [scored]
            dist.broadcast_object_list(box, src=0)
            scored = box[0]
        if "error" in scored:  # raised on every rank together
            raise LinearProbeError(f"{scored['error']} (task.probe_data={self.s.data}, split {self.s.split})")
        metrics: Dict[str, float] = {}
        for i, (key, res) in enumerate(scored.items()):
            for m in ("UA", "WA"):
                metrics[f"probe_{m.lower()}_{key}"] = res["summary"][m]["mean"]
                if i == 0:
                    metrics[f"probe_{m.lower()}"] = res["summary"][m]["mean"]
        skipped = len(self.data) - len(index)
        logger.info("probe (%s) at update %d: %s; %d utterances%s, %.1f s", name, update,
                    ", ".join(f"{k} {100 * v:.2f}" for k, v in metrics.items() if k.startswith("probe_ua_")),
                    len(index), f" ({skipped} skipped)" if skipped else "", seconds)
        if rank == 0 and self.save_dir:
            os.makedirs(self.save_dir, exist_ok=True)
            record = {"update": update, "features": name, "seconds": round(seconds, 3), "utterances": int(len(index)),
                      "skipped": int(skipped), "layers": self.s.layers, "seed": self.s.seed,
                      "results": {k: {"UA": r["summary"]["UA"]["mean"], "WA": r["summary"]["WA"]["mean"],
                                      "scheme": r["scheme"], "folds": r["folds"]} for k, r in scored.items()}}
            with open(os.path.join(self.save_dir, "probe.jsonl"), "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        return metrics

    def _probe(self, name: str, update: int, featurize, framing: List[Tuple[int, int, int]],
               max_batch: int = 16) -> Dict[str, float]:
        t0 = time.monotonic()
        index, feats = self._gather(featurize, framing, max_batch)
        scored = None
        if _dist()[0] == 0:
            # an error here still goes through the broadcast, so no rank is left waiting in it
            try:
                if len(index) == 0:
                    raise LinearProbeError(f"probe: every utterance of {self.data.manifest.path} was skipped "
                                           f"(warnings above say why)")
                scored = self._score(index, feats)
            except LinearProbeError as e:
                scored = {"error": str(e)}
        return self._finish(name, update, index, scored, time.monotonic() - t0)

    def run(self, model, update: int) -> Dict[str, float]:
        """Probe ``model`` (the unwrapped student with its teacher) at ``update``; call on every rank.

        Returns the metrics every rank logs: ``probe_ua``/``probe_wa`` (first layer, first
        normalisation), ``probe_{ua,wa}_<layer>[_<network>][_gnorm]``, ``probe_s`` (seconds this
        probe took) and ``probe_pct`` (all probes' time as % of the wall time since start).
        """
        specs = parse_layer_specs(self.s.layers, model.num_layers)
        was_training = model.training
        model.eval()
        try:
            t0 = time.monotonic()
            # one utterance per batch on CPU (batching is memory-bound there: 10.8 s vs 17.0 s for the
            # demo's probe set, recipes/RESULTS.md), 16 with exact padding masks on GPU
            on_cpu = next(model.parameters()).device.type == "cpu"
            metrics = self._probe(self.s.network, update, self._network_featurizer(model, specs),
                                  model.audio.local_encoder.layers_spec, 1 if on_cpu else 16)
            seconds = time.monotonic() - t0
        finally:
            model.train(was_training)
        self.seconds_total += seconds
        metrics["probe_s"] = seconds
        metrics["probe_pct"] = 100.0 * self.seconds_total / max(time.monotonic() - self.started, 1e-9)
        self.last_update, self.last_metrics = update, metrics
        return metrics

    def run_reference(self, model) -> None:
        """At update 0: the initial weights (random init or ``model.init_from``) and 80-dim log-mel
        filterbanks (``e2v-extract fbank``'s features) through the same probe, for the curves."""
        start = self.run(model, 0)
        self.last_update = None  # the first validation probes anyway
        reference = self.run_fbank()
        self._write_tensorboard({**{k: v for k, v in start.items() if k.startswith(("probe_ua", "probe_wa"))},
                                 **{k: v for k, v in reference.items() if k.startswith(("probe_ua_", "probe_wa_"))}})

    def run_fbank(self) -> Dict[str, float]:
        """The log-mel reference: 80-dim Kaldi filterbanks (``e2v-extract fbank``), time-mean pooled,
        same probe; keys ``probe_{ua,wa}_fbank[_gnorm]``. Call on every rank."""

        def fbank(wavs: List[np.ndarray]) -> Dict[str, np.ndarray]:
            return {"fbank": np.stack([f.mean(axis=0) for f in fbank_features(wavs, "frame")])}

        return self._probe("fbank", 0, fbank, FBANK_FRAMING)  # at least one 25 ms window

    def _write_tensorboard(self, values: Dict[str, float]) -> None:
        """Update-0 points under TENSORBOARD_DIR/valid (next to fairseq's own valid/ events), rank 0."""
        if not self.tensorboard_dir or _dist()[0] != 0:
            return
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            logger.warning("probe: tensorboardX is not installed; update-0 probe numbers are only in probe.jsonl")
            return
        # own file name: fairseq opens its valid/ writer within the same second, and the names carry only the time
        writer = SummaryWriter(os.path.join(self.tensorboard_dir, "valid"), filename_suffix=".probe_update0")
        for key, value in values.items():
            writer.add_scalar(key, value, 0)
        writer.close()
