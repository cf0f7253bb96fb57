"""Long-run survival: non-finite losses, broken files during training, SIGKILL and resume."""

import glob
import os
import re
import signal
import subprocess
import time

import numpy as np
import pytest
import soundfile as sf
import torch
from omegaconf import OmegaConf

from emotion2vec_plugin.criterions.emotion2vec_criterion import Emotion2vecCriterion, Emotion2vecCriterionConfig
from emotion2vec_plugin.models.emotion2vec_model import Emotion2vecModel
from emotion2vec_plugin.tasks.emotion2vec_pretraining import Emotion2vecPretrainingTask
from tests.helpers import PLUGIN_DIR, RECIPES, hydra_train, tiny_model_cfg, venv_bin


class PlainOptimizer:
    """The three calls fairseq's task hooks make on a FairseqOptimizer."""

    def __init__(self, params):
        self.opt = torch.optim.Adam(params, lr=1e-2)

    def backward(self, loss):
        loss.backward()

    def step(self):
        self.opt.step()

    def zero_grad(self):
        self.opt.zero_grad()


def test_nonfinite_loss_skips_the_update_and_keeps_teacher_clean():
    task = Emotion2vecPretrainingTask(OmegaConf.create({"data": "unused"}))
    model = Emotion2vecModel(tiny_model_cfg())
    crit = Emotion2vecCriterion(Emotion2vecCriterionConfig(), task)
    opt = PlainOptimizer(model.parameters())
    sample = {"net_input": {"source": torch.randn(2, 12000), "id": torch.tensor([0, 1])}}

    class NanCriterion(Emotion2vecCriterion):
        def forward(self, model, sample, reduce=True):
            loss, n, log = super().forward(model, sample, reduce)
            return loss * float("nan"), n, log

    _, _, good_log = task.train_step(sample, model, crit, opt, update_num=0)
    opt.zero_grad()
    loss, n, log = task.train_step(sample, model, NanCriterion(Emotion2vecCriterionConfig(), task), opt, update_num=1)
    # train_step began with the (legitimate) EMA step for update 1; from here nothing may change
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert set(log) == set(good_log)  # same keys on every rank: fairseq all-reduces them as one dict
    assert log["nonfinite_loss"] == 1 and n == 0 and torch.isfinite(loss)
    assert all(p.grad is None or torch.all(p.grad == 0) for p in model.parameters())
    task.optimizer_step(opt, model, update_num=1)
    for k, v in model.state_dict().items():  # student and teacher untouched, and finite
        assert torch.equal(v, before[k]), k
        assert torch.isfinite(v.float()).all(), k
    # the next finite update steps normally
    task.train_step(sample, model, crit, opt, update_num=1)
    task.optimizer_step(opt, model, update_num=1)
    assert not torch.equal(model.state_dict()["blocks.0.mlp.fc1.weight"], before["blocks.0.mlp.fc1.weight"])


@pytest.mark.slow
def test_manifest_with_broken_files_trains_to_the_end(tmp_path, corpus):
    wav = corpus / "wav"
    (wav / "train_001.wav").write_bytes(b"RIFF\x00\x00garbage")  # unreadable
    x = sf.read(wav / "train_002.wav", dtype="float32")[0]
    x[50] = np.nan
    sf.write(wav / "train_002.wav", x, 16000, subtype="FLOAT")  # NaN sample
    sf.write(wav / "train_003.wav", np.zeros(200, np.float32), 16000)  # too short for the CNN
    log = hydra_train(tmp_path / "run", corpus, "optimization.max_update=8", "common.log_interval=1")
    assert "done training" in log
    for name, reason in (("train_001", "cannot read"), ("train_002", "NaN/inf"), ("train_003", "shorter than the CNN")):
        assert re.search(rf"skipping .*train\.tsv:\d+: .*{reason}", log) or re.search(rf"{name}.*{reason}", log), name
    skipped = sum(int(m) for m in re.findall(r"bad_files=(\d+)", log))
    assert skipped >= 3  # every bad file met in the 8 updates is counted in the training log


def checkpoint_updates(run_dir) -> list:
    return sorted(int(m) for p in glob.glob(str(run_dir / "checkpoints" / "checkpoint_*_*.pt"))
                  for m in re.findall(r"checkpoint_\d+_(\d+)\.pt$", p))


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted_run(tmp_path, corpus):
    args = ["optimization.max_update=12", "checkpoint.save_interval_updates=1", "checkpoint.keep_interval_updates=3",
            "dataset.validate_interval_updates=0", "dataset.disable_validation=true"]
    hydra_train(tmp_path / "full", corpus, *args)

    run = tmp_path / "killed"
    run.mkdir()
    cmd = [venv_bin("fairseq-hydra-train"), "--config-dir", str(RECIPES),
           "--config-name", "emotion2vec_tiny", f"task.data={corpus}", f"common.user_dir={PLUGIN_DIR}", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=run, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and not [u for u in checkpoint_updates(run) if u >= 4]:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    killed_at = max(checkpoint_updates(run))
    assert 4 <= killed_at < 12

    log = hydra_train(run, corpus, *args)  # same command again: resumes from checkpoint_last.pt
    m = re.search(r"Loaded checkpoint .* \(epoch \d+ @ (\d+) updates\)", log)
    assert m and 4 <= int(m.group(1)) < 12
    full = torch.load(tmp_path / "full" / "checkpoints" / "checkpoint_last.pt", weights_only=False)
    resumed = torch.load(run / "checkpoints" / "checkpoint_last.pt", weights_only=False)
    assert resumed["optimizer_history"][-1]["num_updates"] == 12
    for k, v in full["model"].items():
        assert torch.equal(resumed["model"][k], v), k  # student, teacher and EMA step, bit for bit
    for group_full, group_res in zip(full["last_optimizer_state"]["state"].values(),
                                     resumed["last_optimizer_state"]["state"].values()):
        for k in group_full:
            assert torch.equal(torch.as_tensor(group_full[k]), torch.as_tensor(group_res[k]))


def test_truncated_checkpoint_last_is_replaced_by_newest_intact(tmp_path, caplog):
    from emotion2vec_plugin.checkpoint.repair import repair_last_checkpoint

    old, new = tmp_path / "checkpoint_1_2.pt", tmp_path / "checkpoint_1_3.pt"
    torch.save({"step": 2}, old)
    torch.save({"step": 3}, new)
    os.utime(old, (time.time() - 60, time.time() - 60))
    assert repair_last_checkpoint(str(tmp_path)) is None  # no checkpoint_last.pt: nothing to do
    full = new.read_bytes()
    (tmp_path / "checkpoint_last.pt").write_bytes(full[: len(full) // 2])  # killed mid-copy
    with caplog.at_level("WARNING"):
        assert repair_last_checkpoint(str(tmp_path)) == str(new)
    assert "truncated" in caplog.text
    assert torch.load(tmp_path / "checkpoint_last.pt")["step"] == 3
    assert repair_last_checkpoint(str(tmp_path)) is None  # intact now
    for p in (old, new):
        p.write_bytes(b"")
    (tmp_path / "checkpoint_last.pt").write_bytes(full[:10])
    with pytest.raises(RuntimeError, match="no intact checkpoint"):
        repair_last_checkpoint(str(tmp_path))
