"""Manifests of millions of utterances (issue 21): flat buffers, the vectorised parser, the
bounded start-up check, and no copy-on-read growth in forked loader workers."""

import gc
import logging
import os

import numpy as np
import pytest
import torch

from emotion2vec_plugin.data.audio_dataset import Emotion2vecAudioDataset
from emotion2vec_plugin.data.columns import StringColumn
from emotion2vec_plugin.data.manifest import ManifestError, parse_lines, read_manifest
from emotion2vec_plugin.data.manifest_scan import scan_utterances
from emotion2vec_plugin.data.synthetic import write_fanout_manifest
from emotion2vec_plugin.data.worker_memory import freeze_gc_before_fork, memory_kib
from emotion2vec_plugin.tasks.startup_checks import check_audio_files


def test_string_column_behaves_like_a_list_of_str():
    words = ["a.wav", "", "dir/ümlaut é.flac", "x" * 300, "z"]
    col = StringColumn.from_strings(words)
    assert len(col) == 5 and list(col) == words and col == words
    assert [col[i] for i in range(-5, 5)] == words + words
    assert col[1:4] == words[1:4] and col[::2] == words[::2] and col[np.array([4, 0])] == ["z", "a.wav"]
    assert col.nbytes == len("".join(words).encode()) + 8 * 6  # the UTF-8 bytes plus one offset each (+1)
    with pytest.raises(IndexError):
        col[5]


def assert_same(a, b):
    assert a.root == b.root and list(a.names) == list(b.names)
    assert a.sizes.tolist() == b.sizes.tolist() and a.line_numbers.tolist() == b.line_numbers.tolist()


@pytest.mark.parametrize("block", [7, 40, 1 << 20])  # blocks smaller than a line, a few lines, the file
def test_fast_parser_equals_line_by_line_parser(tmp_path, block):
    path = tmp_path / "m.tsv"
    body = ("a/b.wav\t16000\r\n\n" "spaces in name.wav\t1\textra\tcolumns\n" "ünïcode/名前.wav\t123456789012\n"
            "\t5\n" "last.wav\t42")  # no final newline; an empty name is kept, as the line parser does
    path.write_bytes(b"\xef\xbb\xbf" + f"{tmp_path}\r\n{body}".encode())
    scanned = scan_utterances(str(path), len(f"\ufeff{tmp_path}\r\n".encode()), block_bytes=block)
    assert scanned is not None  # this layout takes the fast path
    names, sizes, lines = scanned
    assert list(names) == ["a/b.wav", "spaces in name.wav", "ünïcode/名前.wav", "", "last.wav"]
    assert sizes.tolist() == [16000, 1, 123456789012, 5, 42] and lines.tolist() == [2, 4, 5, 6, 7]
    assert_same(read_manifest(str(path)), parse_lines(str(path)))


@pytest.mark.parametrize("line, expect", [
    ("a.wav 100", r":3: expected 'relative/path<TAB>num_samples'"),
    ("a.wav\t0", r":3: length 0 must be positive"),
    ("a.wav\t-4", r":3: length -4 must be positive"),
    ("a.wav\t1e5", r":3: length '1e5' is not an integer"),
    ("a.wav\t", r":3: length '' is not an integer"),
])
def test_irregular_lines_fall_back_and_keep_their_messages(tmp_path, line, expect):
    path = tmp_path / "m.tsv"
    path.write_text(f"{tmp_path}\nok.wav\t10\n{line}\nok2.wav\t3\n")
    with pytest.raises(ManifestError, match=expect):
        read_manifest(str(path))


def test_fallback_accepts_what_int_accepts(tmp_path):
    path = tmp_path / "m.tsv"  # " 12 " and "+7" are not plain digits: the line parser takes them
    path.write_text(f"{tmp_path}\na.wav\t 12 \n   \nb.wav\t+7\n")
    m = read_manifest(str(path))
    assert m.sizes.tolist() == [12, 7] and m.line_numbers.tolist() == [2, 4]


def test_missing_root_fails_before_the_lines_are_read(tmp_path):
    path = tmp_path / "m.tsv"
    path.write_text("/no/such/root\na.wav 100\n")  # the bad line 2 is never reached
    with pytest.raises(ManifestError, match=r"m\.tsv:1: audio root '/no/such/root' is not a directory"):
        read_manifest(str(path))


def test_startup_check_samples_large_manifests(tmp_path, caplog):
    m = read_manifest(str(write_fanout_manifest(tmp_path / "root", tmp_path / "train.tsv", 5000, real_files=2)))
    with caplog.at_level(logging.INFO):
        check_audio_files(m, "the manifest", sample=100, seed=0)
    assert "checked 100 of 5000" in caplog.text and "e2v-validate-manifest --workers" in caplog.text
    os.remove(tmp_path / "root" / "real" / "utt01.wav")  # half of all paths now missing
    with pytest.raises(ManifestError, match=r"train\.tsv:\d+: .*utt01\.wav does not exist"):
        check_audio_files(m, "the manifest", sample=100, seed=0)


def test_worker_reading_a_million_utterance_manifest_does_not_copy_it(tmp_path):
    """A forked loader worker that reads 30,000 random utterances of a 1,000,000-line manifest,
    with a full garbage collection every 100 batches (as a busy worker runs them), must keep
    sharing the manifest and the trainer's Python heap. Before issue 21 each read dirtied about
    one 4 KiB page (names, sizes and line numbers were Python lists: ~85 MB here), and the first
    full collection copied the whole heap of this process into the worker (~65 MB at once)."""
    path = write_fanout_manifest(tmp_path / "root", tmp_path / "train.tsv", 1_000_000, real_files=4,
                                 min_len=1600, max_len=3200)
    dataset = Emotion2vecAudioDataset(read_manifest(str(path)), max_sample_size=1600, normalize=False)
    assert len(dataset) == 1_000_000
    order = np.random.default_rng(0).permutation(len(dataset))
    batches = [order[i:i + 50] for i in range(0, 32_000, 50)]  # 640 batches, 620 read below
    calls = [0]

    def collate(samples):  # in the worker: a full collection every 100 batches
        calls[0] += 1
        if calls[0] % 100 == 0:
            gc.collect()
        return dataset.collater(samples)

    loader = torch.utils.data.DataLoader(dataset, batch_sampler=batches, collate_fn=collate,
                                         num_workers=1, multiprocessing_context="fork", prefetch_factor=2)
    freeze_gc_before_fork()  # what the tasks turn on in setup_task
    try:
        it = iter(loader)
    finally:
        freeze_gc_before_fork(False)
        gc.unfreeze()  # this test process keeps collecting as before
    worker = it._workers[0].pid
    for _ in range(20):  # warm up: the worker's first batches touch its code and allocator once
        next(it)
    start = memory_kib(worker)["uss"]
    read = 0
    for _ in range(600):  # stop before the end: an exhausted loader ends its worker
        batch = next(it)
        read += len(batch["id"])
        assert batch["net_input"]["source"].shape[1] <= 1600
    end = memory_kib(worker)["uss"]
    del it
    growth_mb = (end - start) / 1024
    assert growth_mb < 8, f"the worker's private memory grew by {growth_mb:.1f} MB reading {read} utterances"
