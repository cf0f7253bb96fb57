"""Run fairseq-hydra-train as N CPU processes with gloo, through fairseq's own DDP code path.

fairseq's distributed launch assumes CUDA. Launched by ``torchrun``, this shim patches the four
places that need a GPU (docs/design.md §7) and then calls ``fairseq_cli.hydra_train.cli_main``
unchanged, so the run goes through ``distributed_utils.call_main`` -> ``distributed_init`` ->
``DistributedFairseqModel`` (torch DDP, ``ddp_backend=pytorch_ddp``) exactly as on GPUs:

(a) ``torch.cuda.device_count`` reports the local world size (fairseq sizes the job with it);
(b) ``torch.cuda.set_device`` is a no-op;
(c) torch DDP is built without ``device_ids`` / ``output_device`` for CPU modules;
(d) ``distributed_utils.all_gather_list`` uses CPU buffers (``all_gather_object``) instead of
    ``torch.cuda.ByteTensor``.

Usage (what the tests run)::

    torchrun --standalone --nproc_per_node 2 -m emotion2vec_plugin.launch.cpu_ddp \\
        --config-dir recipes/pretrain --config-name emotion2vec_tiny \\
        task.data=DATA common.user_dir=emotion2vec_plugin \\
        distributed_training.distributed_world_size=2 distributed_training.distributed_backend=gloo

With ``E2V_SYNC_CHECK_DIR`` set, every rank saves its student and teacher weights after every
update to ``$E2V_SYNC_CHECK_DIR/rank{R}_update{N}.pt`` so tests can compare ranks.
"""

import os
import sys

import torch


def _local_world_size() -> int:
    return int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))


def patch_fairseq_for_cpu() -> None:
    import torch.distributed as dist
    from fairseq.distributed import utils as distributed_utils
    from fairseq.models import distributed_fairseq_model

    torch.cuda.device_count = _local_world_size  # (a)
    torch.cuda.set_device = lambda device: None  # (b)

    ddp_class = distributed_fairseq_model.DistributedDataParallel

    class CpuDistributedDataParallel(ddp_class):  # (c)
        def __init__(self, module, device_ids=None, output_device=None, **kwargs):
            on_cpu = next(module.parameters()).device.type == "cpu"
            super().__init__(module, device_ids=None if on_cpu else device_ids,
                             output_device=None if on_cpu else output_device, **kwargs)

    distributed_fairseq_model.DistributedDataParallel = CpuDistributedDataParallel

    def all_gather_list_cpu(data, group=None, max_size=16384):  # (d)
        out = [None] * dist.get_world_size(group=group)
        dist.all_gather_object(out, data, group=group)
        return out

    distributed_utils.all_gather_list = all_gather_list_cpu


def install_sync_check(directory: str) -> None:
    """Save each rank's student + teacher after every successful update (test instrumentation)."""
    from fairseq.trainer import Trainer

    original = Trainer.train_step
    os.makedirs(directory, exist_ok=True)

    def train_step(self, samples, raise_oom=False):
        result = original(self, samples, raise_oom)
        model = self.get_model()
        rank = self.data_parallel_rank
        torch.save({k: v.detach().clone() for k, v in model.state_dict().items()},
                   os.path.join(directory, f"rank{rank}_update{self.get_num_updates()}.pt"))
        return result

    Trainer.train_step = train_step


def main() -> None:
    patch_fairseq_for_cpu()
    # this package was imported (as the launcher's parent) before fairseq, so fairseq's user-dir
    # import will find it in sys.modules and skip it: register the task, model and criterion here
    from emotion2vec_plugin import register

    register()
    if os.environ.get("E2V_SYNC_CHECK_DIR"):
        install_sync_check(os.environ["E2V_SYNC_CHECK_DIR"])
    from fairseq_cli.hydra_train import cli_main

    sys.argv[0] = "fairseq-hydra-train"
    cli_main()


if __name__ == "__main__":
    main()
