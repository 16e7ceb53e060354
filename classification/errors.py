"""One exception type for every mistake a user can make, and the guard that reports it.

Entry points wrap their ``main`` with :func:`report_user_errors`: a :class:`UserInputError` becomes one
line on stderr and exit status 2 instead of a traceback (so does a PermissionError: a file or folder the user
may not read or write, and a full disk or exhausted quota), Ctrl-C one line and exit status 130 (the shell's
convention for SIGINT) and SIGTERM (``kill``, ``timeout``, job schedulers) one line and exit status 143.

Scripts call :func:`stop_quietly_on_signals` with their ``__name__`` before their heavy imports: from then on
SIGTERM unwinds the program like Ctrl-C (as :class:`Terminated`, so that the same clean-up runs: temporary
files removed, worker pools ended), and a stop signal that arrives outside ``main`` (during the imports, or
after ``main`` returned) prints the same one line and exits at once.
"""
from __future__ import annotations

import contextlib
import contextvars
import errno
import functools
import os
import signal
import sys
import threading
from typing import Callable, TypeVar

F = TypeVar("F", bound=Callable)

INTERRUPTED = 130  # exit status after Ctrl-C (128 + SIGINT)
TERMINATED = 143  # exit status after SIGTERM (128 + SIGTERM)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class UserInputError(ValueError):
    """Bad input the user can fix: the message names the file/key/value and what to do."""


_PYTHON_API = contextvars.ContextVar("python_api", default=False)


@contextlib.contextmanager
def python_api():
    """Within this block (torch.hub entry points) messages name options as the keyword arguments of a Python
    call, not as command-line flags (:func:`option`)."""
    token = _PYTHON_API.set(True)
    try:
        yield
    finally:
        _PYTHON_API.reset(token)


def option(flag: str, keyword: str) -> str:
    """How a message names an option: the command-line ``flag``, or ``keyword`` inside :func:`python_api`."""
    return keyword if _PYTHON_API.get() else flag


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C's KeyboardInterrupt so that the same clean-up runs."""


_state = {"handler_pid": None, "stopped_by": None, "in_main": 0}


def _stop_line(signum: int) -> str:
    what = "interrupted (Ctrl-C)" if signum == signal.SIGINT else "terminated (SIGTERM)"
    return f"{what}; finished output files are kept, partial ones removed."


def _stop_status(signum: int) -> int:
    return INTERRUPTED if signum == signal.SIGINT else TERMINATED


def _on_stop_signal(signum: int, frame) -> None:
    if os.getpid() != _state["handler_pid"]:  # a forked child (a data loader worker): as without this handler
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    _state["stopped_by"] = signum
    if not _state["in_main"]:  # importing, or main has returned: nothing is half-written
        sys.stdout.flush()
        print(_stop_line(signum), file=sys.stderr, flush=True)
        os._exit(_stop_status(signum))
    raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt


def stop_quietly_on_signals(module_name: str) -> None:
    """In a script run as ``__main__`` (``module_name``), handle Ctrl-C and SIGTERM as the module docstring says;
    a signal this process inherited as ignored (``nohup``, background jobs) stays ignored. Does nothing when
    the script is imported (tests, other scripts)."""
    if module_name != "__main__" or threading.current_thread() is not threading.main_thread():
        return
    _state["handler_pid"] = os.getpid()
    for signum in STOP_SIGNALS:
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, _on_stop_signal)


def _exit_after_stop(signum: int) -> None:
    print(_stop_line(signum), file=sys.stderr)
    raise SystemExit(_stop_status(signum)) from None


def report_user_errors(main: F) -> F:
    """Decorator for CLI ``main`` functions: print a :class:`UserInputError` as one sentence and exit 2;
    on Ctrl-C print one line and exit 130, on SIGTERM one line and exit 143."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        _state["in_main"] += 1
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
        except KeyboardInterrupt as err:
            _exit_after_stop(signal.SIGTERM if isinstance(err, Terminated) else signal.SIGINT)
        except OSError as err:
            if _state["stopped_by"] is not None:  # e.g. a loader worker that the same signal ended
                _exit_after_stop(_state["stopped_by"])
            if err.errno not in DISK_FULL:
                raise
            where = f" while writing {err.filename}" if err.filename else ""
            print(f"error: {err.strerror}{where}; free some space or choose another output folder, then run again "
                  f"(finished files are kept).", file=sys.stderr)
            raise SystemExit(2) from None
        except Exception:
            if _state["stopped_by"] is not None:
                _exit_after_stop(_state["stopped_by"])
            raise
        finally:
            _state["in_main"] -= 1

    return wrapper  # type: ignore[return-value]
