"""The ``e2v-labels`` readers of the paper's corpora and EmoBox: one module per public layout.

Each module has ``read(root, args) -> Corpus`` (see :mod:`manifests.corpora.base`).
"""

from . import emobox, mead, meld, mosei, msppodcast

READERS = {"meld": meld.read, "msppodcast": msppodcast.read, "mosei": mosei.read, "mead": mead.read,
           "emobox": emobox.read}
