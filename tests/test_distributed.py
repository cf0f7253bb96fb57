"""Distributed training on CPU (gloo) through fairseq's DDP path, via emotion2vec_plugin.launch.cpu_ddp."""

from pathlib import Path

import pytest
import torch

from tests.helpers import PLUGIN_DIR, RECIPES, hydra_train, run_logged, venv_bin

pytestmark = pytest.mark.slow

# randomness that differs between "rank 1's micro-batch" and "the 2nd micro-batch of one process"
# (dropout, LayerDrop, decoder noise) is switched off; masks and crops are seeded per utterance.
NO_STOCHASTIC = [f"model.{k}=0.0" for k in ("encoder_dropout", "attention_dropout", "post_mlp_drop", "prenet_dropout",
                                              "layerdrop", "prenet_layerdrop", "decoder_input_dropout", "mask_noise_std")]


def torchrun_train(workdir: Path, data: Path, nproc: int, *overrides: str, sync_dir: Path = None) -> str:
    workdir.mkdir(parents=True, exist_ok=True)
    env = {"E2V_SYNC_CHECK_DIR": str(sync_dir)} if sync_dir is not None else {}
    return run_logged([venv_bin("torchrun"), "--standalone", "--nproc_per_node", nproc,
                       "-m", "emotion2vec_plugin.launch.cpu_ddp", "--config-dir", RECIPES,
                       "--config-name", "emotion2vec_tiny", f"task.data={data}", f"common.user_dir={PLUGIN_DIR}",
                       f"distributed_training.distributed_world_size={nproc}", *overrides], cwd=workdir, **env)


def test_two_cpu_processes_stay_in_sync_and_match_one_process(tmp_path, corpus):
    common = ["optimization.max_update=3", "dataset.validate_interval_updates=0", "dataset.disable_validation=true",
              *NO_STOCHASTIC]
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
    for k, v in single.items():
        # same math, different summation order of the gradient all-reduce: fp32 rounding only
        torch.testing.assert_close(ddp[k], v, rtol=1e-4, atol=1e-5, msg=k)
