"""Long runs as the GPU recipes run them: loader workers across epochs, resume in epoch 2 with
workers, several corpora through the README's own command, files that vanish, validation that
does not depend on the loader."""

import os
import re
import shlex
import signal
import subprocess
import time

import pytest
import torch
from omegaconf import OmegaConf

from emotion2vec_plugin.tasks.emotion2vec_pretraining import Emotion2vecPretrainingTask
from tests.helpers import PLUGIN_DIR, RECIPES, REPO, hydra_train, venv_bin, write_corpus
from tests.test_survive import checkpoint_updates

TINY_CONV = "[(64, 10, 5)] + [(64, 3, 2)] * 4 + [(64, 2, 2)] * 2"


def epoch_batches(corpus, num_workers: int, epochs: int = 3) -> list:
    """Batches of ``epochs`` epochs as fairseq's train loop gets them (fairseq_cli/train.py asks
    the trainer for the iterator again after every epoch): [{ids: (source, mask)}] per epoch."""
    task = Emotion2vecPretrainingTask(OmegaConf.create({
        "data": str(corpus), "train_subset": "train", "sample_rate": 16000, "normalize": True,
        "max_sample_size": 32000, "min_sample_size": 4000, "check_files": True, "precompute_mask": True,
        "mask_prob": 0.5, "mask_length": 5, "mask_prob_adjust": 0.05, "clone_batch": 2, "seed": 1,
        "conv_feature_layers": TINY_CONV}))
    task.load_dataset("train")
    ds = task.dataset("train")
    itr = task.get_batch_iterator(ds, max_tokens=64000, seed=1, num_workers=num_workers, epoch=1)
    out = []
    for _ in range(epochs):
        batches = {}
        for b in itr.next_epoch_itr(shuffle=True):
            batches[tuple(b["id"].tolist())] = (b["net_input"]["source"], b["net_input"]["precomputed_mask"])
        out.append(batches)
        itr = task.get_batch_iterator(ds, max_tokens=64000, seed=1, num_workers=num_workers, epoch=itr.next_epoch_idx)
    return out


def test_loader_workers_draw_new_crops_and_masks_every_epoch(corpus):
    with_workers = epoch_batches(corpus, num_workers=2)
    in_process = epoch_batches(corpus, num_workers=0)
    for epoch, (a, b) in enumerate(zip(with_workers, in_process), start=1):
        assert a.keys() == b.keys(), epoch
        for ids in a:  # the same batches whatever the number of workers
            assert torch.equal(a[ids][0], b[ids][0]) and torch.equal(a[ids][1], b[ids][1]), (epoch, ids)
    # epochs 2 and 3 draw new crops and masks for the same utterances (the workers see the epoch)
    for later in with_workers[1:]:
        same = [ids for ids in later if ids in with_workers[0]]
        assert same, "no batch of the same utterances in two epochs to compare"
        for ids in same:
            src0, mask0 = with_workers[0][ids]
            src, mask = later[ids]
            assert not torch.equal(mask, mask0), ids
            # utterances longer than the crop get new offsets
            assert src.shape != src0.shape or not torch.equal(src, src0) or src.shape[1] == 32000, ids


def valid_losses(log: str) -> list:
    return re.findall(r"\| valid on 'valid' subset \| loss ([\d.]+)", log)


@pytest.mark.slow
def test_workers_and_sigkill_in_epoch_two_match_the_uninterrupted_run(tmp_path, corpus):
    """The 1-GPU recipe's loader (workers) with validation on: 3 epochs (5 + 5 + 2 updates); a
    run killed in epoch 2 and started again ends bit-identical to the uninterrupted run, which is
    bit-identical to the same run without workers."""
    common = ["optimization.max_update=12", "checkpoint.save_interval_updates=1", "checkpoint.keep_interval_updates=3",
              "task.precompute_mask=true"]
    args = [*common, "dataset.num_workers=2"]
    full_log = hydra_train(tmp_path / "full", corpus, *args)
    assert len(re.findall(r"end of epoch \d+", full_log)) == 3
    no_workers_log = hydra_train(tmp_path / "no_workers", corpus, *common, "dataset.num_workers=0")
    # validation runs every epoch; its loss does not depend on the loader or on global random state
    assert len(valid_losses(full_log)) >= 3 and valid_losses(full_log) == valid_losses(no_workers_log)

    run = tmp_path / "killed"
    run.mkdir()
    cmd = [venv_bin("fairseq-hydra-train"), "--config-dir", str(RECIPES),
           "--config-name", "emotion2vec_tiny", f"task.data={corpus}", f"common.user_dir={PLUGIN_DIR}", *args]
    proc = subprocess.Popen(cmd, cwd=run, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and not [u for u in checkpoint_updates(run) if u >= 7]:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the loader workers die with it
    assert proc.wait() == -signal.SIGKILL
    killed_at = max(checkpoint_updates(run))
    assert 7 <= killed_at < 10  # in epoch 2 (updates 6-10), with at least one update of it to redo
    log = hydra_train(run, corpus, *args)
    m = re.search(r"Loaded checkpoint .* \(epoch (\d+) @ (\d+) updates\)", log)
    # fairseq writes checkpoint_2_N.pt, then copies it to checkpoint_last.pt: a kill in between
    # resumes from update N - 1, still inside epoch 2
    assert m and m.group(1) == "2" and killed_at - 1 <= int(m.group(2)) <= killed_at

    final = {name: torch.load(tmp_path / name / "checkpoints" / "checkpoint_last.pt", weights_only=False)
             for name in ("full", "no_workers", "killed")}
    for name in ("no_workers", "killed"):
        assert final[name]["optimizer_history"][-1]["num_updates"] == 12
        for k, v in final["full"]["model"].items():  # student, teacher and EMA step, bit for bit
            assert torch.equal(final[name]["model"][k], v), (name, k)


def readme_multi_corpus_overrides() -> list:
    """The task overrides of the README's several-corpora command, exactly as written there."""
    text = (REPO / "README.md").read_text()
    m = re.search(r"```bash\n([^`]*task\.data=/data/iemocap:[^`]*)```", text)
    assert m, "README lost its several-corpora command"
    tokens = shlex.split(m.group(1).replace("\\\n", " "))
    overrides = [t for t in tokens if t.startswith("task.")]
    assert overrides == ["task.data=/data/iemocap:/data/meld:/data/mosei", "task.data_weights=1:1:2"]
    return overrides


@pytest.mark.slow
def test_readme_several_corpora_command_with_and_without_weights(tmp_path):
    roots = {"iemocap": write_corpus(tmp_path / "iemocap", (("train", 16), ("valid", 2)), seed=1),
             "meld": write_corpus(tmp_path / "meld", (("train", 8), ("valid", 2)), seed=2),
             "mosei": write_corpus(tmp_path / "mosei", (("train", 8),), seed=3)}  # no valid.tsv
    overrides = [t.replace("/data/", f"{tmp_path}/") for t in readme_multi_corpus_overrides()]
    common = ["common.log_interval=1", "dataset.num_workers=2"]

    log = hydra_train(tmp_path / "weighted", roots["iemocap"], "optimization.max_update=16", *common, *overrides)
    draws = [list(map(int, m.split(","))) for m in re.findall(r"epoch \d+ draws \[([\d, ]+)\] utterances", log)]
    assert len(draws) >= 2 and all(sum(d) == 32 for d in draws)
    total = [sum(col) for col in zip(*draws)]
    shares = [t / sum(total) for t in total]
    # weights 1:1:2 -> 1/4, 1/4, 1/2, although the corpora hold 1/2, 1/4, 1/4 of the utterances
    assert shares[0] < 0.38 and shares[2] > 0.38, shares
    assert "no valid.tsv in" in log and len(valid_losses(log)) >= 1  # validation on the two corpora that have one

    plain = [o for o in overrides if not o.startswith("task.data_weights")]
    log = hydra_train(tmp_path / "plain", roots["iemocap"], "optimization.max_update=4",
                      "dataset.validate_interval_updates=4", *common, *plain)
    assert "train: 3 corpora, [16, 8, 8] utterances" in log and "draws [" not in log
    assert "valid: 2 corpora, [2, 2] utterances" in log and len(valid_losses(log)) >= 1


@pytest.mark.slow
def test_longest_files_vanishing_mid_run_are_counted_and_training_ends(tmp_path, corpus):
    """The longest files make fairseq's dummy batch (the first batch of every epoch); with all of
    them gone the run used to die with 'Invalid dummy batch'."""
    lines = (corpus / "train.tsv").read_text().split("\n")[1:]
    sizes = sorted(((int(n), name) for name, n in (ln.split("\t") for ln in lines if ln)), reverse=True)
    for _, name in sizes[:3]:
        (corpus / "wav" / name).unlink()  # gone after the start-up check (which is off here)
    log = hydra_train(tmp_path / "run", corpus, "optimization.max_update=10", "dataset.num_workers=2",
                      "task.check_files=false", "common.log_interval=1")
    assert "done training" in log and "Invalid dummy batch" not in log
    per_epoch = [int(n) for n in re.findall(r"\[train\]\[INFO\] - epoch \d+ \|.*? bad_files (\d+)", log)]
    assert per_epoch == [3, 3]  # every vanished file counted once per epoch, none lost
    assert "every file of its batches was bad" in log  # that update was skipped, not stepped on silence
    m = re.search(r"num_updates (\d+)", log.split("end of epoch 2")[-1])
    assert m and int(m.group(1)) == 10
