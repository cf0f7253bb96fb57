from pathlib import Path

import pytest

from tests.helpers import write_corpus


@pytest.fixture
def corpus(tmp_path) -> Path:
    """A synthetic 16 kHz corpus with train.tsv (16 utterances) and valid.tsv (4), 0.5-1.5 s each."""
    return write_corpus(tmp_path / "data")
