"""EMA teacher: update formula, decay schedule, isolation from the optimizer."""

import pytest
import torch

from emotion2vec_plugin.models.emotion2vec_model import Emotion2vecModel
from emotion2vec_plugin.modules.ema import EMATeacher, ema_decay_at
from tests.helpers import tiny_model_cfg


def test_decay_anneals_linearly_between_end_points():
    assert ema_decay_at(0, 0.999, 0.99999, 20000) == pytest.approx(0.999)
    assert ema_decay_at(10000, 0.999, 0.99999, 20000) == pytest.approx((0.999 + 0.99999) / 2)
    assert ema_decay_at(20000, 0.999, 0.99999, 20000) == pytest.approx(0.99999)
    assert ema_decay_at(50000, 0.999, 0.99999, 20000) == pytest.approx(0.99999)


def test_update_equals_formula():
    torch.manual_seed(0)
    teacher = EMATeacher(torch.nn.Linear(3, 2))
    before = {k: v.clone() for k, v in teacher.module.named_parameters()}
    student = {k: torch.randn_like(v) for k, v in before.items()}
    teacher.update(student, 0.9)
    for k, v in teacher.module.named_parameters():
        torch.testing.assert_close(v, 0.9 * before[k] + 0.1 * student[k])


def test_model_ema_step_uses_annealed_decay_once_per_update():
    cfg = tiny_model_cfg(ema_decay=0.9, ema_end_decay=0.99, ema_anneal_end_step=10)
    model = Emotion2vecModel(cfg).train()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))  # student moves away from the teacher
    student = {k: v.detach().clone() for k, v in model.named_parameters()}
    teacher_before = {k: v.clone() for k, v in model.teacher.module.named_parameters()}
    model.set_num_updates(5)
    tau = 0.9 + (0.99 - 0.9) * 5 / 10
    for k, v in model.teacher.module.named_parameters():
        torch.testing.assert_close(v, tau * teacher_before[k] + (1 - tau) * student[k])
    after_first = {k: v.clone() for k, v in model.teacher.module.named_parameters()}
    model.set_num_updates(5)  # update_freq > 1 calls it again for the same update: no second step
    for k, v in model.teacher.module.named_parameters():
        torch.testing.assert_close(v, after_first[k], rtol=0, atol=0)
    assert model.teacher.step == 5


def test_teacher_is_fp32_outside_parameters_and_gets_no_gradient():
    model = Emotion2vecModel(tiny_model_cfg()).train()
    teacher_ids = {id(p) for p in model.teacher.module.parameters()}
    assert not teacher_ids & {id(p) for p in model.parameters()}
    assert all(not p.requires_grad for p in model.teacher.module.parameters())
    model.to(torch.bfloat16)  # what fairseq does for bf16 runs
    assert all(p.dtype == torch.float32 for p in model.teacher.module.parameters())
    model.float()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    teacher_before = {k: v.clone() for k, v in model.teacher.module.named_parameters()}
    out = model(torch.randn(2, 16000), id=torch.tensor([0, 1]))
    loss = out["frame_pred"].pow(2).mean() + out["utt_pred"].pow(2).mean()
    loss.backward()
    assert all(p.grad is None for p in model.teacher.module.parameters())
    opt.step()
    for k, v in model.teacher.module.named_parameters():
        torch.testing.assert_close(v, teacher_before[k], rtol=0, atol=0)
