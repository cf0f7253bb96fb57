"""What every ``e2v-*`` console script does with bad input: one ``PROG: error: ...`` line, exit 2.

:func:`run_main` calls a script's ``main(args)`` and turns the errors that mean "this input is
unusable" into a single line on stderr and exit status 2 (argparse's status for usage errors):
every :class:`~emotion2vec_plugin.errors.Emotion2vecError` (the package's input errors, which name
the file, the line and the fix), any extra classes a script lists, plus ``OSError``
(a missing file, a directory where a file was expected, an unwritable ``--out``) and text that
is not UTF-8, whatever module met them. Anything else is a bug and keeps its traceback.
"""

import os
import sys
from typing import Callable, Sequence, Tuple, Type, TypeVar

from .errors import Emotion2vecError, describe

T = TypeVar("T")

# errors any script may meet on bad input, besides its own classes
COMMON_INPUT_ERRORS: Tuple[Type[BaseException], ...] = (Emotion2vecError, OSError, UnicodeError)


class InputErrorExit(SystemExit):
    """Exit status 2 after ``PROG: error: MESSAGE`` was printed; ``str()`` is that line (for tests)."""

    def __init__(self, message: str):
        super().__init__(2)
        self.message = message

    def __str__(self) -> str:
        return self.message


def fail(prog: str, message: str) -> InputErrorExit:
    """Print ``PROG: error: MESSAGE`` to stderr and return the exit to raise."""
    line = f"{prog}: error: {message}"
    sys.stdout.flush()
    print(line, file=sys.stderr)
    return InputErrorExit(line)


def run_main(prog: str, main: Callable[..., T], args, errors: Sequence[Type[BaseException]] = ()) -> T:
    """``main(args)``; an error of ``errors`` or :data:`COMMON_INPUT_ERRORS` becomes one line and exit 2.

    Set ``E2V_TRACEBACK=1`` to get the traceback of such errors too.
    """
    try:
        return main(args)
    except (*errors, *COMMON_INPUT_ERRORS) as e:
        if os.environ.get("E2V_TRACEBACK"):
            raise
        raise fail(prog, describe(e)) from None
