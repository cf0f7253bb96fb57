"""The one base class of this package's input errors.

Every error class that means "this input is unusable" (a manifest line, a checkpoint, a feature
file, an export folder, a labels file ...) derives from :class:`Emotion2vecError` (and keeps its
``ValueError``/``OSError`` parent where callers catch that). The console scripts' common layer
(``cli.run_main``) catches this one class and prints its message as one ``PROG: error: ...`` line,
so a script does not have to list every module's error classes.
"""


class Emotion2vecError(Exception):
    """Bad input to emotion2vec_plugin: the message names the file (and line), what was expected,
    what was found and how to fix it."""
