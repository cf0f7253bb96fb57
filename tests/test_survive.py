"""Long-run survival: non-finite losses, broken files during training, SIGKILL and resume."""

import glob
import os
import re
import time

import numpy as np
import pytest
import soundfile as sf
import torch
from omegaconf import OmegaConf

from emotion2vec_plugin.criterions.emotion2vec_criterion import Emotion2vecCriterion, Emotion2vecCriterionConfig
from emotion2vec_plugin.models.emotion2vec_model import Emotion2vecModel
from emotion2vec_plugin.tasks.emotion2vec_pretraining import Emotion2vecPretrainingTask
from tests.helpers import hydra_train, tiny_model_cfg


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


def test_all_bad_placeholder_batch_is_counted_and_its_update_skipped():
    task = Emotion2vecPretrainingTask(OmegaConf.create({"data": "unused"}))
    model = Emotion2vecModel(tiny_model_cfg())
    crit = Emotion2vecCriterion(Emotion2vecCriterionConfig(), task)
    opt = PlainOptimizer(model.parameters())
    good = {"net_input": {"source": torch.randn(2, 12000), "id": torch.tensor([0, 1])}, "bad_files": 0}
    placeholder = {"net_input": {"source": torch.zeros(1, 16000), "id": torch.tensor([-1])}, "bad_files": 3,
                   "all_bad": True}
    _, _, good_log = task.train_step(good, model, crit, opt, update_num=0)
    task.optimizer_step(opt, model, update_num=0)
    opt.zero_grad()
    loss, n, log = task.train_step(placeholder, model, crit, opt, update_num=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert set(log) == set(good_log) and n == 0 and float(loss.detach()) == 0.0
    assert log["bad_files"] == 3 and all(v == 0 for k, v in log.items() if k != "bad_files")
    task.optimizer_step(opt, model, update_num=1)  # no real utterance in this update: Adam must not move
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    # a placeholder next to a real batch in the same update (update_freq 2) does not block the step
    task.train_step(placeholder, model, crit, opt, update_num=1)
    task.train_step(good, model, crit, opt, update_num=1)
    task.optimizer_step(opt, model, update_num=1)
    assert not torch.equal(model.state_dict()["blocks.0.mlp.fc1.weight"], before["blocks.0.mlp.fc1.weight"])
    _, n, log = task.valid_step(placeholder, model, crit)
    assert n == 0 and log["bad_files"] == 3 and log["loss"] == 0


def test_validation_loss_does_not_depend_on_global_random_state():
    task = Emotion2vecPretrainingTask(OmegaConf.create({"data": "unused"}))
    model = Emotion2vecModel(tiny_model_cfg(mask_noise_std=0.5))
    crit = Emotion2vecCriterion(Emotion2vecCriterionConfig(), task)
    sample = {"net_input": {"source": torch.randn(3, 12000), "id": torch.tensor([4, 7, 9])}}
    losses = []
    for seed, num_updates in ((0, 10), (123, 10), (5, 500)):
        torch.manual_seed(seed)  # what ran before validation (loader workers, training steps) differs
        model.set_num_updates(num_updates)  # and so does the checkpoint's update count
        losses.append(task.valid_step(sample, model, crit)[0])
    assert losses[0] == losses[1] == losses[2]
    # training still draws new masks and noise per update
    model.train()
    model.set_num_updates(11)
    out_a = model(**sample["net_input"])
    model.set_num_updates(12)
    out_b = model(**sample["net_input"])
    assert out_a["frame_pred"].shape != out_b["frame_pred"].shape or not torch.equal(out_a["frame_pred"], out_b["frame_pred"])
