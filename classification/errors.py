"""One exception type for every mistake a user can make, and the guard that reports it.

Entry points wrap their ``main`` with :func:`report_user_errors`: a :class:`UserInputError` becomes one
line on stderr and exit status 2 instead of a traceback (so does a PermissionError: a file or folder the user
may not read or write), and Ctrl-C one line and exit status 130 (the shell's convention for SIGINT).
"""
from __future__ import annotations

import functools
import sys
from typing import Callable, TypeVar

F = TypeVar("F", bound=Callable)


INTERRUPTED = 130  # exit status after Ctrl-C


class UserInputError(ValueError):
    """Bad input the user can fix: the message names the file/key/value and what to do."""


def report_user_errors(main: F) -> F:
    """Decorator for CLI ``main`` functions: print a :class:`UserInputError` as one sentence and exit 2;
    on Ctrl-C print one line and exit 130."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserInputError as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(2) from None
        except PermissionError as err:  # a file or folder of the user's that this user may not read or write
            where = err.filename or str(err).strip().splitlines()[-1]
            print(f"error: permission denied on {where}; give this user access to it or choose another path.",
                  file=sys.stderr)
            raise SystemExit(2) from None
        except KeyboardInterrupt:
            print("interrupted (Ctrl-C); finished output files are kept, partial ones removed.", file=sys.stderr)
            raise SystemExit(INTERRUPTED) from None

    return wrapper  # type: ignore[return-value]
