from pathlib import Path

import pytest

from tests.helpers import write_corpus


@pytest.fixture
def corpus(tmp_path) -> Path:
    """A synthetic 16 kHz corpus with train.tsv (16 utterances) and valid.tsv (4), 0.5-1.5 s each."""
    return write_corpus(tmp_path / "data")


def pytest_configure(config):
    """Under pytest-xdist (the README's ``-n 2``) each worker computes with one thread: two
    workers then fill the two cores without OpenMP threads spinning against each other."""
    import os

    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)
