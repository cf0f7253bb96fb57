"""Distributed training on CPU (gloo) through fairseq's DDP path, via emotion2vec_plugin.launch.cpu_ddp.

The runs use plain SGD without clipping and a constant teacher decay of 0.5, so that the scale of
the gradient and the teacher's movement show in the weights: Adam and clip_norm would hide a
gradient scaled by any constant, and the released decay (0.999) moves the teacher by ~1e-7 in a
few updates, below any useful tolerance.
"""

import os
import subprocess
import textwrap
from pathlib import Path

import pytest
import soundfile as sf
import torch

from tests.helpers import PLUGIN_DIR, RECIPES, hydra_train, run_logged, tiny_model_cfg, venv_bin, write_corpus

pytestmark = pytest.mark.slow

# randomness that differs between "rank 1's micro-batch" and "the 2nd micro-batch of one process"
# (dropout, LayerDrop, decoder noise) is switched off; masks and crops are seeded per utterance.
NO_STOCHASTIC = [f"model.{k}=0.0" for k in ("encoder_dropout", "attention_dropout", "post_mlp_drop", "prenet_dropout",
                                              "layerdrop", "prenet_layerdrop", "decoder_input_dropout", "mask_noise_std")]


LR = 1e-4  # SGD step ~ LR * gradient (the data2vec-reduced loss has gradient norms ~1e3)
SGD_VISIBLE = ["optimizer._name=sgd", "~optimizer.adam_betas", "~optimizer.adam_eps", "optimizer.weight_decay=0",
               "+optimizer.momentum=0.0", "+optimizer.lr=${optimization.lr}", f"optimization.lr=[{LR}]",
               "lr_scheduler._name=fixed", "~lr_scheduler.warmup_updates", "optimization.clip_norm=0",
               "model.ema_decay=0.5", "model.ema_end_decay=0.5"]


def torchrun_train(workdir: Path, data: Path, nproc: int, *overrides: str, sync_dir: Path = None,
                   entry=("-m", "emotion2vec_plugin.launch.cpu_ddp")) -> str:
    workdir.mkdir(parents=True, exist_ok=True)
    env = {"E2V_SYNC_CHECK_DIR": str(sync_dir)} if sync_dir is not None else {}
    return run_logged([venv_bin("torchrun"), "--standalone", "--nproc_per_node", nproc,
                       *entry, "--config-dir", RECIPES,
                       "--config-name", "emotion2vec_tiny", f"task.data={data}", f"common.user_dir={PLUGIN_DIR}",
                       f"distributed_training.distributed_world_size={nproc}", *overrides], cwd=workdir, **env)


def test_two_cpu_processes_stay_in_sync_and_match_one_process(tmp_path, corpus):
    common = ["optimization.max_update=3", "dataset.validate_interval_updates=0", "dataset.disable_validation=true",
              *NO_STOCHASTIC, *SGD_VISIBLE]
    log = torchrun_train(tmp_path / "ddp", corpus, 2, *common, sync_dir=tmp_path / "sync")
    assert "distributed init (rank 1)" in log and "done training" in log
    for update in (1, 2, 3):
        r0 = torch.load(tmp_path / "sync" / f"rank0_update{update}.pt")
        r1 = torch.load(tmp_path / "sync" / f"rank1_update{update}.pt")
        assert any(k.startswith("_ema.") for k in r0)
        for k in r0:  # students and teachers identical across ranks, bit for bit
            assert torch.equal(r0[k], r1[k]), (update, k)
    # one process seeing the same two batches per update (update_freq 2)
    hydra_train(tmp_path / "single", corpus, *common, "optimization.update_freq=[2]")
    single = torch.load(tmp_path / "single" / "checkpoints" / "checkpoint_last.pt", weights_only=False)["model"]
    ddp = torch.load(tmp_path / "ddp" / "checkpoints" / "checkpoint_last.pt", weights_only=False)["model"]
    first = torch.load(tmp_path / "sync" / "rank0_update1.pt")
    for k, v in single.items():
        # same math, different summation order of the gradient all-reduce: fp32 rounding only,
        # measured against how far the weights moved in updates 2 and 3 (SGD, teacher decay 0.5)
        moved = (ddp[k].double() - first[k].double()).norm()
        if k != "_ema_step":
            assert moved > 0, k
            assert (ddp[k].double() - v.double()).norm() <= 1e-3 * moved, k
        else:
            assert torch.equal(ddp[k], v)


# Test-side instrumentation: the criterion returns NaN on rank 1 at its 3rd training forward only.
NAN_ON_RANK1 = textwrap.dedent("""
    import os
    import sys

    from emotion2vec_plugin.criterions import emotion2vec_criterion as C
    from emotion2vec_plugin.launch import cpu_ddp

    original, calls = C.Emotion2vecCriterion.forward, []

    def forward(self, model, sample, reduce=True):
        loss, n, log = original(self, model, sample, reduce)
        if model.training:
            calls.append(1)
            if os.environ["RANK"] == "1" and len(calls) == 3:
                loss = loss * float("nan")
        return loss, n, log

    C.Emotion2vecCriterion.forward = forward
    sys.exit(cpu_ddp.main())
""")


@pytest.fixture(scope="module")
def ddp_nan_run(tmp_path_factory):
    """Two ranks, one utterance each per update (the corpus has two, so every update's global batch
    is both utterances whichever rank gets which), SGD, teacher decay 0.5, NaN loss on rank 1 at
    update 3. Returns (exit status, log, data folder, sync-dump folder); the dumps of updates 1 and
    2 are written whether or not update 3 goes through."""
    tmp = tmp_path_factory.mktemp("ddp_nan")
    data = write_corpus(tmp / "data", splits=(("train", 2), ("valid", 1)))
    (tmp / "nan_on_rank1.py").write_text(NAN_ON_RANK1)
    cmd = [venv_bin("torchrun"), "--standalone", "--nproc_per_node", "2", str(tmp / "nan_on_rank1.py"),
           "--config-dir", str(RECIPES), "--config-name", "emotion2vec_tiny", f"task.data={data}",
           f"common.user_dir={PLUGIN_DIR}", "distributed_training.distributed_world_size=2", "optimization.max_update=3",
           "dataset.batch_size=1", "dataset.disable_validation=true", *NO_STOCHASTIC, *SGD_VISIBLE]
    (tmp / "run").mkdir()
    proc = subprocess.run(cmd, cwd=tmp / "run", capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "E2V_SYNC_CHECK_DIR": str(tmp / "sync")})
    return proc.returncode, proc.stdout + proc.stderr, data, tmp / "sync"


def test_ddp_sgd_step_equals_in_process_step_and_teacher_is_the_ema(ddp_nan_run):
    """The DDP step from update 1 to 2 equals a plain in-process SGD step on (L_0 + L_1) / (n_0 + n_1)
    and the teacher is the 0.5-EMA: a gradient scaled by any constant on the DDP path shows."""
    _, log, data, sync = ddp_nan_run
    assert (sync / "rank1_update2.pt").exists(), log[-3000:]
    s1, s2 = torch.load(sync / "rank0_update1.pt"), torch.load(sync / "rank0_update2.pt")
    for k, v in torch.load(sync / "rank1_update2.pt").items():
        assert torch.equal(v, s2[k]), k
    from emotion2vec_plugin.criterions.emotion2vec_criterion import Emotion2vecCriterion, Emotion2vecCriterionConfig
    from emotion2vec_plugin.models.emotion2vec_model import Emotion2vecModel

    fields = {o.split("=")[0][len("model."):]: float(o.split("=")[1]) for o in NO_STOCHASTIC}
    model = Emotion2vecModel(tiny_model_cfg(**fields, ema_decay=0.5, ema_end_decay=0.5)).train()
    model.load_state_dict(s1)
    assert model.teacher.step == 0
    model.set_num_updates(1)  # what the trainer does before update 2: fold the student into the teacher
    crit = Emotion2vecCriterion(Emotion2vecCriterionConfig(alpha=1.0, loss_reduction="data2vec"), task=None)
    lines = (data / "train.tsv").read_text().splitlines()
    total, n_total = 0.0, 0
    for i, line in enumerate(lines[1:]):
        wav, _ = sf.read(str(Path(lines[0]) / line.split("\t")[0]), dtype="float32")
        src = torch.nn.functional.layer_norm(torch.from_numpy(wav), (len(wav),))[None]  # task.normalize
        loss, n, _ = crit(model, {"net_input": {"source": src, "id": torch.tensor([i])}})
        total, n_total = total + loss, n_total + n
    (total / n_total).backward()
    visible = 0
    for k, p in model.named_parameters():
        expected = p.detach().double() - LR * p.grad.double()
        step = LR * p.grad.double().norm()
        ulp = (p.detach().double().abs() * 2.0**-23).norm()  # fp32 spacing of the weights themselves
        # rounding only: a different summation order (1e-3 of the step) and the fp32 weight (2 ulp);
        # a loss scaled by c on the DDP path misses by |1 - c| of the step
        err = (s2[k].double() - expected).norm()
        assert err <= 1e-3 * step + 2 * ulp, (k, float(err / step))
        visible += bool(step > 100 * ulp)
    assert visible >= 2 / 3 * len(list(model.parameters())), visible  # steps far above fp32 resolution (measured 59 of 75)
    moved = 0.0
    for k, t in model.teacher.module.named_parameters():  # teacher = 0.5 * teacher_1 + 0.5 * student_1
        torch.testing.assert_close(s2["_ema." + k], t, rtol=0, atol=1e-6, msg=k)
        moved = max(moved, float((s2["_ema." + k] - s1["_ema." + k]).abs().max()))
    assert moved > 1e-3  # the teacher moved by far more than the tolerance


def test_nonfinite_loss_on_one_rank_skips_the_update_on_both(ddp_nan_run):
    code, log, _, sync = ddp_nan_run
    assert code == 0, log[-3000:]
    assert "skipping update 3: non-finite loss on 1 worker(s)" in log
    s2 = torch.load(sync / "rank0_update2.pt")
    s3 = {r: torch.load(sync / f"rank{r}_update3.pt") for r in (0, 1)}
    for k, v in s3[0].items():
        assert torch.equal(v, s3[1][k]), k  # ranks still identical
        if not k.startswith("_ema"):
            assert torch.equal(v, s2[k]), k  # student not stepped on either rank
    for k in (k for k in s3[0] if k.startswith("_ema.")):  # the teacher folds in student 2 as usual
        torch.testing.assert_close(s3[0][k], 0.5 * s2[k] + 0.5 * s2[k[len("_ema."):]], rtol=0, atol=1e-6, msg=k)
    assert int(s3[0]["_ema_step"]) == 2


class CountingOptimizer:
    def __init__(self):
        self.steps = self.zeroed = 0

    def step(self):
        self.steps += 1

    def zero_grad(self):
        self.zeroed += 1


def _skip_agreement_worker(rank: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    from emotion2vec_plugin.tasks.emotion2vec_pretraining import Emotion2vecPretrainingTask

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    task = Emotion2vecPretrainingTask.__new__(Emotion2vecPretrainingTask)  # optimizer_step needs no config
    opt, model = CountingOptimizer(), torch.nn.Linear(2, 2)
    for update, nan_rank in ((0, None), (1, 1), (2, 0)):
        task._skip_update = rank == nan_rank
        task._update_utterances = 1
        task.optimizer_step(opt, model, update)
    torch.save({"steps": opt.steps, "zeroed": opt.zeroed}, f"{out_dir}/rank{rank}.pt")
    dist.destroy_process_group()


def test_a_nonfinite_loss_on_one_rank_is_skipped_by_every_rank(tmp_path):
    """The task's optimizer_step in two gloo processes: a flagged non-finite loss on either rank
    makes both skip that update (in-process, without fairseq's trainer)."""
    torch.multiprocessing.spawn(_skip_agreement_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    for r in (0, 1):
        assert torch.load(tmp_path / f"rank{r}.pt") == {"steps": 1, "zeroed": 2}, r
