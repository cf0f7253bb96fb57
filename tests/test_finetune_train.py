"""Real fairseq-hydra-train fine-tuning runs (recipes/finetune/emotion2vec_finetune_tiny.yaml) on synthetic tones.

One uninterrupted run (module fixture) serves several tests: it must learn the separable task,
and it is the reference the SIGKILL-and-resume run must equal bit for bit.
"""

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from tests.finetune_corpus import write_labelled_corpus
from tests.helpers import PLUGIN_DIR, REPO, run_logged, venv_bin

pytestmark = pytest.mark.slow

FINETUNE = REPO / "recipes" / "finetune"
CONFIG = "emotion2vec_finetune_tiny"
# every update checkpointed so a kill lands between two of them; validation every epoch (4 updates)
RUN_ARGS = ["optimization.max_update=24", "checkpoint.save_interval_updates=1", "checkpoint.keep_interval_updates=3"]


def tiny_encoder(data: Path) -> Path:
    """The recipe's model.init_from: a tiny encoder (recipes/pretrain/arch/tiny.yaml) with seeded random
    weights as an e2v-export plugin folder (what ``e2v-export --random-init`` writes), once per corpus."""
    from emotion2vec_plugin.checkpoint.model_record import InferenceSettings, ModelRecord
    from emotion2vec_plugin.formats import plugin
    from emotion2vec_plugin.modules.config import student_config_from
    from emotion2vec_plugin.modules.encoder import Emotion2vecEncoder
    from tests.helpers import tiny_model_cfg

    out = data / "init_encoder"
    if not out.is_dir():
        torch.manual_seed(1)
        cfg = student_config_from(tiny_model_cfg())
        plugin.write(ModelRecord(Emotion2vecEncoder(cfg).state_dict(), cfg, InferenceSettings(), "random"), str(out))
    return out


def finetune_cmd(data: Path, *overrides: str, launcher=None):
    head = launcher or [venv_bin("fairseq-hydra-train")]
    return [*head, "--config-dir", FINETUNE, "--config-name", CONFIG, f"task.data={data}",
            f"model.init_from={tiny_encoder(data)}", f"common.user_dir={PLUGIN_DIR}", *overrides]


def finetune(workdir: Path, data: Path, *overrides: str) -> str:
    workdir.mkdir(parents=True, exist_ok=True)
    return run_logged(finetune_cmd(data, *overrides), cwd=workdir)


def valid_scores(log: str):
    """(wa, ua, macro_f1) of every validation line of a fairseq log, in order."""
    return [tuple(float(m.group(k)) for k in ("wa", "ua", "f1")) for m in re.finditer(
        r"valid on 'valid' subset .*?\| wa (?P<wa>[\d.]+) \| ua (?P<ua>[\d.]+) \| macro_f1 (?P<f1>[\d.]+)", log)]


@pytest.fixture(scope="module")
def tones(tmp_path_factory) -> Path:
    return write_labelled_corpus(tmp_path_factory.mktemp("tones"), (("train", 8), ("valid", 6)))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tones):
    run = tmp_path_factory.mktemp("finetune_full")
    log = finetune(run, tones, *RUN_ARGS)
    return run, log


def test_separable_tones_reach_high_ua_and_keep_the_best_checkpoint(trained):
    run, log = trained
    scores = valid_scores(log)
    assert len(scores) == 24  # a validation at every checkpoint (every update here)
    assert scores[0][1] < 95.0 and scores[-1][1] >= 95.0, scores  # UA on 18 held-out utterances, learned
    for wa, _, _ in scores:  # every validation counts all 18 utterances: WA is a multiple of 1/18
        assert abs(wa * 18 / 100 - round(wa * 18 / 100)) < 0.01, wa
    best = max(s[1] for s in scores)
    assert float(re.findall(r"best_ua ([\d.]+)", log)[-1]) == best
    ckpt = torch.load(run / "checkpoints" / "checkpoint_best.pt", weights_only=False)
    assert ckpt["task_state"]["labels"] == ["high", "low", "mid"]  # sorted training labels
    assert (run / "checkpoints" / "labels.txt").read_text().split() == ["high", "low", "mid"]
    assert ckpt["model"]["proj.weight"].shape == (3, 64)
    # the recipe gives no shape: the one read from model.init_from is saved, so the checkpoint describes itself
    shape = {k: ckpt["cfg"]["model"][k] for k in ("embed_dim", "depth", "prenet_depth", "num_utterance_tokens")}
    assert shape == {"embed_dim": 64, "depth": 2, "prenet_depth": 1, "num_utterance_tokens": 2}
    assert not any(".decoder." in k or k.startswith("_ema") for k in ckpt["model"])


def test_shuffled_labels_stay_near_chance(tmp_path):
    data = write_labelled_corpus(tmp_path / "data", (("train", 8), ("valid", 10)), shuffle_labels=True, seed=3)
    log = finetune(tmp_path / "run", data, "optimization.max_update=24", "checkpoint.no_save=true")
    ua = [s[1] for s in valid_scores(log)]
    assert len(ua) >= 4  # one validation per epoch
    # 3 classes: chance is 33.3; 30 validation utterances give a binomial std of ~8.6 points
    assert max(ua[-3:]) < 60.0, ua


def test_sigkill_then_resume_equals_uninterrupted_run(tmp_path, tones, trained):
    full_run, _ = trained
    run = tmp_path / "killed"
    run.mkdir()
    proc = subprocess.Popen([str(c) for c in finetune_cmd(tones, *RUN_ARGS)], cwd=run,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300

    def saved_updates():
        return [int(m) for p in (run / "checkpoints").glob("checkpoint_*_*.pt")
                for m in re.findall(r"checkpoint_\d+_(\d+)\.pt$", p.name)]

    while time.time() < deadline and not [u for u in saved_updates() if u >= 6]:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert 6 <= max(saved_updates()) < 24

    log = finetune(run, tones, *RUN_ARGS)  # the same command again resumes from checkpoint_last.pt
    m = re.search(r"Loaded checkpoint .* \(epoch \d+ @ (\d+) updates\)", log)
    assert m and 6 <= int(m.group(1)) < 24
    full = torch.load(full_run / "checkpoints" / "checkpoint_last.pt", weights_only=False)
    resumed = torch.load(run / "checkpoints" / "checkpoint_last.pt", weights_only=False)
    assert resumed["optimizer_history"][-1]["num_updates"] == 24
    for k, v in full["model"].items():
        assert torch.equal(resumed["model"][k], v), k
    # the composite optimizer's per-group Adam states too
    flat = lambda s: {(g, i, k): torch.as_tensor(v) for g, st in s.items()  # noqa: E731
                      for i, p in st["state"].items() for k, v in p.items()}
    a, b = flat(full["last_optimizer_state"]), flat(resumed["last_optimizer_state"])
    assert a.keys() == b.keys() and len(a) > 0
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_two_gloo_processes_stay_in_sync(tmp_path, tones):
    sync = tmp_path / "sync"
    run = tmp_path / "ddp"
    run.mkdir()
    launcher = [venv_bin("torchrun"), "--standalone", "--nproc_per_node", "2", "-m", "emotion2vec_plugin.launch.cpu_ddp"]
    log = run_logged(finetune_cmd(tones, "optimization.max_update=6", "distributed_training.distributed_world_size=2",
                                  "checkpoint.no_save=true", launcher=launcher),
                     cwd=run, E2V_SYNC_CHECK_DIR=str(sync))
    assert "distributed init (rank 1)" in log and "done training" in log
    for update in range(1, 7):
        r0 = torch.load(sync / f"rank0_update{update}.pt")
        r1 = torch.load(sync / f"rank1_update{update}.pt")
        assert "proj.weight" in r0
        for k in r0:  # identical weights on both ranks after every update (dropout and masks differ per rank)
            assert torch.equal(r0[k], r1[k]), (update, k)
    # the validation metrics come from counts summed over both ranks' shards: all 18 utterances
    scores = valid_scores(log)
    assert scores
    for wa, _, _ in scores:
        assert abs(wa * 18 / 100 - round(wa * 18 / 100)) < 0.01, wa


# ------------------------------------------------------------------ export and e2v-predict of the trained classifier


def test_export_plugin_and_funasr_keep_head_and_labels(tmp_path, trained):
    import yaml

    from emotion2vec_plugin.checkpoint.model_record import ExportFormatError
    from emotion2vec_plugin.formats import export_cli as export
    from emotion2vec_plugin.formats.load import load_classifier, load_pretrained

    ckpt = trained[0] / "checkpoints" / "checkpoint_best.pt"
    for fmt in ("plugin", "funasr"):
        export.main(export.get_parser().parse_args([str(ckpt), "--out", str(tmp_path / fmt), "--format", fmt]))
    conf = yaml.safe_load((tmp_path / "funasr" / "config.yaml").read_text())
    assert conf["model"] == "Emotion2vec" and conf["model_conf"]["vocab_size"] == 3
    assert (tmp_path / "funasr" / "tokens.txt").read_text().split() == ["high", "low", "mid"]
    assert conf["tokenizer_conf"]["unk_symbol"] in ("high", "low", "mid")  # FunASR requires it in the list
    wav = torch.randn(1, 9000)
    logits = []
    for source in (ckpt, tmp_path / "plugin", tmp_path / "funasr"):
        model, labels, settings = load_classifier(str(source))
        assert labels == ["high", "low", "mid"] and settings.normalize
        with torch.no_grad():
            logits.append(model(wav))
    assert torch.equal(logits[0], logits[1]) and torch.equal(logits[0], logits[2])
    encoder, _ = load_pretrained(str(tmp_path / "plugin"))  # a classifier export still serves e2v-extract
    assert not hasattr(encoder, "proj")
    with pytest.raises(ExportFormatError, match="no classifier head: use --format plugin or --format funasr"):
        export.main(export.get_parser().parse_args([str(ckpt), "--out", str(tmp_path / "e"), "--format", "emotion2vec"]))
    (tmp_path / "funasr" / "tokens.txt").write_text("high\nlow\nmid\nsad\n")
    with pytest.raises(ExportFormatError, match="head has 3 outputs but the label list has 4 classes"):
        load_classifier(str(tmp_path / "funasr"))


def test_predict_batched_equals_one_by_one_and_skips_bad_files(tmp_path, tones, trained):
    import json

    import numpy as np
    import soundfile as sf

    from emotion2vec_plugin.inference import predict_cli as predict

    ckpt = str(trained[0] / "checkpoints" / "checkpoint_best.pt")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "garbage.wav").write_bytes(b"RIFF\x00\x00nothing")
    sf.write(bad / "nan.wav", np.full(8000, np.nan, np.float32), 16000, subtype="FLOAT")
    sf.write(bad / "short.wav", np.zeros(100, np.float32), 16000)
    sf.write(bad / "stereo.wav", np.zeros((8000, 2), np.float32), 16000)

    def run(*extra):
        return predict.main(predict.get_parser().parse_args([ckpt, str(tones / "valid.tsv"), *extra, "--quiet"]))

    one = run("--batch-size", "1", "--out", str(tmp_path / "one.json"), "--labels", str(tones / "valid.emo"))
    many = run("--batch-size", "8", "--out", str(tmp_path / "many.tsv"))
    assert one["predicted"] == many["predicted"] == 18 and not one["skipped"]
    for a, b in zip(one["predictions"], many["predictions"]):
        assert a["key"] == b["key"] and a["label"] == b["label"]
        assert max(abs(a["scores"][c] - b["scores"][c]) for c in a["scores"]) < 1e-5  # padding is exact
        assert abs(sum(a["scores"].values()) - 1) < 1e-5
    assert one["metrics"]["UA"] >= 0.95 and (tmp_path / "one.confusion.png").stat().st_size > 0
    assert json.loads((tmp_path / "one.json").read_text())["metrics"]["WA"] == one["metrics"]["WA"]
    rows = (tmp_path / "many.tsv").read_text().splitlines()
    assert rows[0] == "key\tlabel\tscore_high\tscore_low\tscore_mid" and len(rows) == 19
    # a folder with bad files mixed in: each named with its reason, the good ones predicted
    sf.write(bad / "good.wav", sf.read(tones / "wav" / "valid_low_000.wav", dtype="float32")[0], 16000)
    res = predict.main(predict.get_parser().parse_args([ckpt, str(bad), "--quiet", "--out", str(tmp_path / "b.json")]))
    assert [p["key"] for p in res["predictions"]] == ["good.wav"] and res["predictions"][0]["label"] == "low"
    reasons = "\n".join(res["skipped"])
    for name, why in (("garbage", "cannot read"), ("nan", "NaN/inf"), ("short", "shorter than the CNN"),
                      ("stereo", "expected mono")):
        assert re.search(rf"{name}\.wav.*{why}", reasons), (name, reasons)
    with pytest.raises(predict.PredictInputError, match=r"valid\.emo has 18 labels for 19 input files"):
        predict.main(predict.get_parser().parse_args([ckpt, str(tones / "valid.tsv"), str(bad / "good.wav"),
                                                      "--labels", str(tones / "valid.emo"), "--quiet"]))
