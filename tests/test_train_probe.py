"""The emotion probe during pretraining (task.probe_data): real fairseq-hydra-train runs with 1 and
2 (gloo) processes log probe_ua to the log, TensorBoard and probe.jsonl, pick the best checkpoint
by it, skip a bad probe file, and give the same numbers as e2v-probe --probe linear offline."""

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from emotion2vec_plugin.formats import export_cli as export
from emotion2vec_plugin.inference import extract_cli as extract
from emotion2vec_plugin.evaluation import curves, curves_cli, probe_cli
from emotion2vec_plugin.evaluation.linear_probe import linear_probe_cv, make_folds, per_group_standardize
from emotion2vec_plugin.evaluation.mlp_probe import ProbeInputError
from emotion2vec_plugin.modules.layer_spec import combine_layers, parse_layer_specs
from emotion2vec_plugin.modules.pooling import masked_mean
from tests.helpers import hydra_train, write_corpus
from tests.probe_data import write_probe_set
from tests.test_distributed import torchrun_train

PROBE = ["dataset.validate_interval_updates=2", "checkpoint.save_interval_updates=2",
         "checkpoint.best_checkpoint_metric=probe_ua", "checkpoint.maximize_best_checkpoint_metric=true"]


def tensorboard_scalars(directory: Path) -> dict:
    """{tag: {step: value}} from every tfevents file in ``directory`` (TFRecord framing, Event protos)."""
    from tensorboardX.proto import event_pb2

    out: dict = {}
    for f in sorted(directory.glob("events.out.tfevents.*")):
        data, pos = f.read_bytes(), 0
        while pos < len(data):
            n = struct.unpack("<Q", data[pos:pos + 8])[0]
            event = event_pb2.Event()
            event.ParseFromString(data[pos + 12:pos + 12 + n])
            pos += 12 + n + 4
            for v in event.summary.value:
                out.setdefault(v.tag, {})[event.step] = v.simple_value
    return out


def probe_records(run: Path) -> list:
    return [json.loads(line) for line in (run / "checkpoints" / "probe.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def probe_run(tmp_path_factory):
    """One single-process run (4 updates, probes at 0, 2, 4) on a corpus plus a probe set with one
    corrupt file appended; returns (tmp root, probe dir, run dir, log)."""
    root = tmp_path_factory.mktemp("train_probe")
    data = write_corpus(root / "data")
    probe_dir = write_probe_set(root / "probe")
    (probe_dir / "wav" / "broken.wav").write_bytes(b"RIFF not really a wav file")
    for ext, line in ((".tsv", "broken.wav\t12000"), (".emo", "low"), (".group", "spk0")):
        with open(probe_dir / f"probe{ext}", "a") as f:
            f.write(line + "\n")
    log = hydra_train(root / "single", data, f"task.probe_data={probe_dir}", "optimization.max_update=4", *PROBE)
    return root, probe_dir, root / "single", log


@pytest.mark.slow
def test_single_process_logs_probe_everywhere_and_picks_best_by_it(probe_run):
    _, _, run, log = probe_run
    assert "done training" in log
    assert "probe: skipping a bad file" in log and "broken.wav" in log
    valid_lines = [line for line in log.splitlines() if "valid on 'valid' subset" in line]
    assert len(valid_lines) == 2 and all("| probe_ua " in line and "| probe_ua_last_gnorm " in line
                                         for line in valid_lines)
    records = probe_records(run)
    assert [(r["update"], r["features"]) for r in records] == [(0, "student"), (0, "fbank"), (2, "student"),
                                                               (4, "student")]
    assert all(r["utterances"] == 36 and r["skipped"] == 1 for r in records)
    assert set(records[2]["results"]) == {"last", "last_gnorm", "mean", "mean_gnorm"}
    assert records[1]["results"]["fbank"]["UA"] > 0.6  # the task is learnable from log-mel alone
    tb = tensorboard_scalars(run / "tb" / "valid")
    # update 0 (initial weights, log-mel) written by the task, 2 and 4 by fairseq's validation
    assert set(tb["probe_ua"]) == {0, 2, 4} and set(tb["probe_ua_fbank"]) == {0}
    for r in records[2:]:
        assert tb["probe_ua"][r["update"]] == pytest.approx(r["results"]["last"]["UA"], abs=1e-4)
        assert tb["probe_ua_mean_gnorm"][r["update"]] == pytest.approx(r["results"]["mean_gnorm"]["UA"], abs=1e-4)
    assert tb["probe_ua_fbank"][0] == pytest.approx(records[1]["results"]["fbank"]["UA"], abs=1e-6)
    # best checkpoint selected on probe_ua (maximised): its score is the best logged probe_ua
    for r in records[2:]:
        assert f"@ {r['update']} updates, score {round(r['results']['last']['UA'], 4)})" in log
    import torch

    best = torch.load(run / "checkpoints" / "checkpoint_best.pt", map_location="cpu", weights_only=False)
    assert best["extra_state"]["best"] == pytest.approx(max(r["results"]["last"]["UA"] for r in records[2:]), abs=1e-4)


@pytest.mark.slow
def test_offline_linear_probe_on_the_checkpoint_equals_the_training_probe(probe_run, tmp_path):
    _, probe_dir, run, _ = probe_run
    record = probe_records(run)[-1]
    assert record["update"] == 4
    # the probe set without its corrupt line (training skipped it), as a user would clean it
    clean = tmp_path / "clean"
    clean.mkdir()
    for ext in (".tsv", ".emo", ".group"):
        lines = (probe_dir / f"probe{ext}").read_text().splitlines()
        (clean / f"probe{ext}").write_text("\n".join(lines[:-1]) + "\n")
    export.main(export.get_parser().parse_args([str(run / "checkpoints" / "checkpoint_1_4.pt"), "--out",
                                                str(tmp_path / "export")]))
    for name, layers in (("last", ["-1"]), ("mean", ["1", "2", "3"])):  # tiny: 1 prenet + 2 blocks
        extract.main(extract.get_parser().parse_args([str(tmp_path / "export"), str(clean / "probe.tsv"), "--out",
                                                      str(tmp_path / name), "--layers", *layers, "--quiet"]))
        for gnorm in (False, True):
            args = [str(tmp_path / name / "probe"), str(clean / "probe.emo"), "--groups", str(clean / "probe.group"),
                    "--probe", "linear", *(["--normalize-per-group"] if gnorm else [])]
            offline = probe_cli.main(probe_cli.get_parser().parse_args(args))
            online = record["results"][name + ("_gnorm" if gnorm else "")]
            assert [f["group"] for f in offline["folds"]] == [f["group"] for f in online["folds"]]
            assert [f["UA"] for f in offline["folds"]] == [f["UA"] for f in online["folds"]], (name, gnorm)
            assert [f["WA"] for f in offline["folds"]] == [f["WA"] for f in online["folds"]], (name, gnorm)


@pytest.mark.slow
def test_curves_from_the_log_and_from_the_checkpoints(probe_run, tmp_path):
    _, probe_dir, run, _ = probe_run
    records = probe_records(run)
    from_log = curves_cli.main(curves_cli.get_parser().parse_args([str(run), "--out", str(tmp_path / "log.png")]))
    assert sorted(from_log["train"]) == [1, 2, 3, 4] and sorted(from_log["valid"]) == [2, 4]
    assert all(from_log["train"][u]["target_var"] > 0 for u in from_log["train"])
    assert curves.probe_series(from_log["probe"])["last"] == {r["update"]: r["results"]["last"]["UA"]
                                                              for r in records if r["features"] == "student"}
    assert (tmp_path / "log.png").stat().st_size > 10000
    # a run without the in-training probe: its saved checkpoints probed now give the same numbers
    # (update 0 is the architecture with other random weights, so it is not compared)
    from_ckpts = curves_cli.main(curves_cli.get_parser().parse_args([str(run), "--out", str(tmp_path / "ckpt.png"),
                                                             "--probe-data", str(probe_dir)]))
    now = curves.probe_series(from_ckpts["probe"])
    assert sorted(now["last"]) == [0, 2, 4]
    for r in records[2:]:
        for key in ("last", "mean_gnorm"):
            assert now[key][r["update"]] == r["results"][key]["UA"], (key, r["update"])
    assert curves.reference_lines(from_ckpts["probe"])["fbank"] == records[1]["results"]["fbank"]["UA"]


@pytest.mark.slow
def test_two_gloo_processes_probe_in_step_and_agree_with_one(probe_run):
    root, probe_dir, single, _ = probe_run
    run = root / "ddp"
    log = torchrun_train(run, root / "data", 2, f"task.probe_data={probe_dir}", "optimization.max_update=4",
                         "task.probe_interval=4", *PROBE)
    assert "distributed init (rank 1)" in log and "done training" in log
    records = probe_records(run)
    # interval 4: probes at 0 and 2 (first validation), not at 4 (only 2 updates later); the
    # validation at 4 repeats the last numbers because probe_ua picks the best checkpoint
    assert [(r["update"], r["features"]) for r in records] == [(0, "student"), (0, "fbank"), (2, "student")]
    assert records[0]["utterances"] == 36 and records[0]["skipped"] == 1
    valid_lines = [line for line in log.splitlines() if "valid on 'valid' subset" in line]
    assert valid_lines and all("| probe_ua " in line for line in valid_lines)
    assert "| probe_update 2 " in valid_lines[-1]
    assert set(tensorboard_scalars(run / "tb" / "valid")["probe_ua"]) >= {0, 2}
    # both ranks extracted half of the probe set each; gathered, the same numbers as one process
    # (same initial weights, same seed)
    for ours, theirs in zip(records[:2], probe_records(single)[:2]):
        for key, res in ours["results"].items():
            assert [f["UA"] for f in res["folds"]] == [f["UA"] for f in theirs["results"][key]["folds"]], key


# ---------------------------------------------------------------------------- the probe itself, fast
def test_per_group_standardize_gives_each_group_zero_mean_unit_std():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(5.0, 3.0, size=(7, 4)), rng.normal(-2.0, 0.5, size=(5, 4))])
    groups = ["a"] * 7 + ["b"] * 5
    z = per_group_standardize(x, groups)
    for sel in (slice(0, 7), slice(7, 12)):
        np.testing.assert_allclose(z[sel].mean(axis=0), 0.0, atol=1e-12)
        np.testing.assert_allclose(z[sel].std(axis=0), 1.0, atol=1e-12)
    np.testing.assert_allclose(z[0], (x[0] - x[:7].mean(0)) / x[:7].std(0))


def test_per_group_normalisation_removes_a_speaker_offset_that_defeats_the_raw_probe():
    """Class = sign of dim 0 relative to the speaker's own mean; each speaker shifts dim 0 by far
    more than the class gap. Leave-one-speaker-out: raw features fail on the shifted speakers,
    per-speaker z-scoring recovers the task."""
    rng = np.random.default_rng(1)
    x, labels, groups = [], [], []
    for s, offset in enumerate((-6.0, 0.0, 6.0, 12.0)):
        for c in range(2):
            for _ in range(10):
                x.append([offset + (1.0 if c else -1.0) + 0.3 * rng.standard_normal(), rng.standard_normal()])
                labels.append(f"c{c}")
                groups.append(f"spk{s}")
    raw = linear_probe_cv(np.array(x), labels, groups)
    norm = linear_probe_cv(np.array(x), labels, groups, per_group=True)
    assert raw["scheme"] == "leave-one-group-out" and len(raw["folds"]) == 4
    assert norm["summary"]["UA"]["mean"] >= 0.95
    assert raw["summary"]["UA"]["mean"] <= 0.75  # the outer speakers land entirely in one class


def test_k_fold_without_groups_is_stratified_and_seeded():
    rng = np.random.default_rng(2)
    y = np.repeat([0, 1, 2], 10)
    x = rng.normal(size=(30, 3)) + 3.0 * np.eye(3)[y]
    labels = [f"c{v}" for v in y]
    a = linear_probe_cv(x, labels, None, folds=5, seed=0)
    b = linear_probe_cv(x, labels, None, folds=5, seed=0)
    assert a["scheme"] == "k-fold" and [f["n_test"] for f in a["folds"]] == [6] * 5
    assert a == b and a["summary"]["UA"]["mean"] > 0.9
    folds0, folds1 = make_folds(y, None, 5, 0), make_folds(y, None, 5, 1)
    for _, test in folds0:
        assert np.bincount(y[test]).tolist() == [2, 2, 2]  # stratified: 2 per class per fold
    assert sorted(np.concatenate([t for _, t in folds0]).tolist()) == list(range(30))  # a partition
    assert any(not np.array_equal(t0, t1) for (_, t0), (_, t1) in zip(folds0, folds1))  # the seed shuffles


def test_pooling_is_padding_exact_and_layer_average_commutes_with_time_mean():
    rng = np.random.default_rng(3)
    import torch

    frames = torch.tensor([5, 3])
    layers = [torch.from_numpy(rng.normal(size=(2, 5, 4)).astype(np.float32)) for _ in range(3)]
    for h in layers:
        h[1, 3:] = 1e6  # padding garbage must not leak
    padding_mask = torch.arange(5).unsqueeze(0) >= frames.unsqueeze(1)  # [B, T], True = padded
    pooled = torch.stack([masked_mean(h, padding_mask) for h in layers], dim=1).numpy()  # [B, L, D]
    np.testing.assert_allclose(pooled[1, 0], layers[0][1, :3].mean(0).numpy(), rtol=1e-6)
    specs = parse_layer_specs("last,mean,2", 3)
    assert specs == [("last", [2]), ("mean", [0, 1, 2]), ("l2", [1])]
    combined = combine_layers(pooled, specs)
    mean_frames = torch.stack(layers).mean(0)[1, :3].mean(0).numpy()  # average the blocks, then time
    np.testing.assert_allclose(combined["mean"][1], mean_frames, rtol=1e-5)
    np.testing.assert_allclose(combined["l2"], pooled[:, 1])
    with pytest.raises(ValueError, match="block 1..3"):
        parse_layer_specs("last,4", 3)


def test_e2v_probe_linear_cli_equals_the_library_and_runs_k_fold_without_groups(tmp_path, capsys):
    from emotion2vec_plugin.data.feature_store import save_stacked

    rng = np.random.default_rng(4)
    labels = ["a", "b"] * 12
    feats = [(rng.normal(size=(int(rng.integers(2, 9)), 6)) + (1.5 if v == "a" else -1.5)).astype(np.float32)
             for v in labels]
    groups = [f"g{i % 3}" for i in range(24)]
    save_stacked(feats, str(tmp_path / "f"))
    (tmp_path / "x.emo").write_text("\n".join(labels) + "\n")
    (tmp_path / "x.group").write_text("\n".join(groups) + "\n")
    means = np.stack([f.astype(np.float64).mean(0) for f in feats]).astype(np.float32)
    got = probe_cli.main(probe_cli.get_parser().parse_args([str(tmp_path / "f"), str(tmp_path / "x.emo"), "--groups",
                                                            str(tmp_path / "x.group"), "--probe", "linear",
                                                            "--normalize-per-group"]))
    want = linear_probe_cv(means, labels, groups, per_group=True)
    assert got["folds"] == want["folds"] and got["probe"] == "linear" and got["normalize_per_group"]
    kfold = probe_cli.main(probe_cli.get_parser().parse_args([str(tmp_path / "f"), str(tmp_path / "x.emo"),
                                                              "--probe", "linear", "--folds", "4"]))
    assert kfold["scheme"] == "k-fold" and len(kfold["folds"]) == 4
    with pytest.raises(ProbeInputError, match="--groups is required"):
        probe_cli.main(probe_cli.get_parser().parse_args([str(tmp_path / "f"), str(tmp_path / "x.emo")]))


def test_batched_probe_features_equal_one_by_one_and_teacher_differs_from_student(tmp_path):
    """The probe's extraction in padded batches of 16 (GPU path) equals one utterance per batch
    (CPU path); the teacher features go through the EMA teacher, not the student."""
    import torch

    from emotion2vec_plugin.tasks.training_probe import ProbeSettings, TrainingProbe
    from emotion2vec_plugin.models.emotion2vec_model import Emotion2vecModel
    from tests.helpers import tiny_model_cfg

    torch.manual_seed(0)
    model = Emotion2vecModel(tiny_model_cfg()).eval()
    with torch.no_grad():  # make the teacher differ from the student, as after some EMA steps
        for p in model.teacher.module.parameters():
            p.add_(0.05 * torch.randn_like(p))
    probe = TrainingProbe(ProbeSettings(data=str(write_probe_set(tmp_path / "p", per_class=3)), network="both"))
    specs = parse_layer_specs("last,mean", model.num_layers)
    featurize = probe._network_featurizer(model, specs)
    index1, one = probe._gather(featurize, model.audio.local_encoder.layers_spec, 1)
    index16, batched = probe._gather(featurize, model.audio.local_encoder.layers_spec, 16)
    assert index1.tolist() == index16.tolist() == list(range(18))
    assert set(one) == {"last_student", "mean_student", "last_teacher", "mean_teacher"}
    for key in one:
        assert one[key].shape == (18, 64)
        np.testing.assert_allclose(batched[key], one[key], atol=2e-5, rtol=1e-4, err_msg=key)
    assert np.abs(one["last_teacher"] - one["last_student"]).max() > 1e-2


def _two_rank_worker(rank: int, init: str, good: str, bad: str, out: str) -> None:
    """One gloo rank: probe a tiny model on ``good`` then on ``bad`` (a set no probe can fit)."""
    import datetime

    import torch
    import torch.distributed as dist

    from emotion2vec_plugin.evaluation.linear_probe import LinearProbeError
    from emotion2vec_plugin.tasks.training_probe import ProbeSettings, TrainingProbe
    from emotion2vec_plugin.models.emotion2vec_model import Emotion2vecModel
    from tests.helpers import tiny_model_cfg

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=60))
    torch.manual_seed(0)
    model = Emotion2vecModel(tiny_model_cfg())
    result = {"metrics": TrainingProbe(ProbeSettings(data=good, normalize="none")).run(model, 7)}
    try:
        TrainingProbe(ProbeSettings(data=bad, normalize="none")).run(model, 8)
    except LinearProbeError as e:
        result["error"] = str(e)
    torch.save(result, f"{out}.{rank}")
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_share_one_result_and_fail_together_without_hanging(tmp_path):
    """Two gloo ranks (spawned directly, no fairseq): the same numbers on both; a probe set that
    cannot be fitted (each speaker holds one class, so every leave-one-speaker-out training set
    has a single class) raises the same error on both ranks instead of leaving one waiting."""
    import torch.multiprocessing as mp

    good = write_probe_set(tmp_path / "good", per_class=3)
    bad = tmp_path / "bad"
    bad.mkdir()
    lines = (good / "probe.tsv").read_text().splitlines()
    emo = (good / "probe.emo").read_text().split()
    (bad / "probe.tsv").write_text("\n".join(lines) + "\n")
    (bad / "probe.emo").write_text("\n".join(emo) + "\n")
    (bad / "probe.group").write_text("\n".join(emo) + "\n")  # group = class
    out = str(tmp_path / "result")
    mp.spawn(_two_rank_worker, args=(f"file://{tmp_path / 'rendezvous'}", str(good), str(bad), out), nprocs=2,
             join=True)
    import torch

    r0, r1 = torch.load(out + ".0"), torch.load(out + ".1")
    assert r0["metrics"]["probe_ua"] == r1["metrics"]["probe_ua"] and 0.0 <= r0["metrics"]["probe_ua"] <= 1.0
    assert {k for k in r0["metrics"] if k.startswith("probe_ua")} == {"probe_ua", "probe_ua_last", "probe_ua_mean"}
    assert "single class" in r0["error"] and r0["error"] == r1["error"]
