"""Errors a user can fix, and the guard that prints them as one line (a leaf module: it imports no rainmer code).

Every such error subclasses :class:`UserError`; its message is one line that names the file or option and says
what to do. Commands run their work through :func:`run_guarded`, which prints ``error: <message>`` on stderr
(no traceback) and returns exit status 2. With ``RAINMER_TRACEBACK=1`` in the environment the error propagates
with its traceback instead (for bug reports).
"""
import os
import sys
from collections.abc import Callable
from typing import Any


class UserError(Exception):
    """An error the user can fix (a file, an option, an installed package); the message says which and how."""


class OptionError(UserError, ValueError):
    """A YAML option or command-line flag that cannot work, with the option named."""


# Also user errors, although not ours: a path given in the options or on the command line that is not there.
USER_ERRORS: tuple[type[BaseException], ...] = (UserError, FileNotFoundError, NotADirectoryError)


def run_guarded(pipeline: Callable[[Any], Any], args: Any, returns_code: bool = True) -> int:
    """Run ``pipeline(args)``; a user error prints ``error: <message>`` on stderr (no traceback) and returns 2.

    Otherwise returns the pipeline's result as the exit status (``returns_code``) or 0.
    """
    try:
        result = pipeline(args)
    except USER_ERRORS as error:
        if os.environ.get('RAINMER_TRACEBACK', '') not in ('', '0'):
            raise
        print_user_error(error)
        return 2
    return int(result) if returns_code else 0


def print_user_error(error: BaseException) -> None:
    """``error: <message>`` on stderr, on one line (a multi-line message is joined)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if lines and lines[0].startswith('Caught ') and 'DataLoader worker' in lines[0]:
        # Raised in a loader worker: PyTorch puts the worker's traceback into the message; keep its last line.
        lines = [lines[-1].split(': ', 1)[-1]]
    message = ' '.join(lines)
    print(f'error: {message}', file=sys.stderr)


def install_one_line_excepthook() -> None:
    """Print an uncaught :class:`UserError` as one line (exit status 1) instead of a traceback.

    For errors raised while ``import rainmer`` itself runs (a BasicSR or torchvision that cannot work), before any
    command's guard exists; installed only then. ``RAINMER_TRACEBACK=1`` keeps the traceback.
    """
    if os.environ.get('RAINMER_TRACEBACK', '') not in ('', '0'):
        return
    previous = sys.excepthook

    def hook(kind, value, traceback):
        if issubclass(kind, UserError):
            print_user_error(value)
        else:
            previous(kind, value, traceback)

    sys.excepthook = hook
