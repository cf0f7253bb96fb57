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


def describe(error: BaseException) -> str:
    """The message of an input error; ``OSError`` as ``path: reason`` (its ``str`` is ``[Errno N] ...``)."""
    if isinstance(error, OSError) and error.filename is not None:
        where = f"{error.filename} -> {error.filename2}" if error.filename2 else str(error.filename)
        hint = " (a file where a folder is expected?)" if isinstance(error, (FileExistsError, NotADirectoryError)) else ""
        return f"{where}: {error.strerror or error}{hint}"
    if isinstance(error, UnicodeDecodeError):
        return f"not UTF-8 text (byte {error.start}: {error.reason}); re-save the file as UTF-8"
    text = str(error)
    if isinstance(error, KeyError) and len(error.args) == 1 and isinstance(error.args[0], str):
        text = error.args[0]  # KeyError's str() would quote the message
    return text or type(error).__name__
