"""The two kinds of error, and the one error path every entry point answers them by.

Why two kinds: the command line (``vreloc``), the ``python -m`` entry points, the Beam
launchers and the server all need to tell "the user gave us something wrong" from "the
program is wrong", and to say which it is:

* :class:`InputError` (and its subclasses: ``DataError``, ``ConfigError``, ...): the user's
  input -- a flag, a config value, a file or folder, the content of the data. Library code
  raises it where the value at fault comes from the user and this is the check that sees it
  (the message names the file, key or value at fault, and what to do). Answered with one line,
  ``PROG: error: MESSAGE``, exit 2 (:data:`EXIT_INPUT`).
* Everything else (``ValueError``, ``KeyError``, ``RuntimeError``, ``AssertionError``, ...): an
  invariant of the program broke, i.e. a bug. Answered with one line that says so, names the
  exception type and asks for a report, exit 1 (:data:`EXIT_BUG`); ``--debug`` shows the traceback.

Why :class:`InputError` subclasses ``ValueError``: library callers (and code in this repository
that dead-letters a bad record, or rewords a bad value) catch ``ValueError`` for a bad value;
they keep working when a check moves from ``ValueError`` to ``InputError``. The CLI therefore
never treats a plain ``ValueError`` as input: only the class says it.

OSErrors are the one case decided by kind rather than class (:func:`is_input_error`): a path
the user named that is missing, unreadable, of the wrong kind or already taken
(``FileNotFoundError``, ``PermissionError``, ``IsADirectoryError``, ``NotADirectoryError``,
``FileExistsError``), or the user's disk full or read-only (``ENOSPC``, ``EDQUOT``, ``EROFS``,
``ENAMETOOLONG``) is the user's to fix: exit 2, the line naming the path. Any other OSError
(a broken pipe, an I/O error, a socket error of ours) is reported as a bug.

:func:`run_guarded` is the path itself; :func:`run_entry_point` puts a ``python -m`` module's
``main(argv)`` on it (``--debug`` anywhere before ``--`` turns the one line into the traceback).
"""
from __future__ import annotations

import errno
import sys
from typing import Callable, List, Optional, Sequence, Union


class InputError(ValueError):
    """Bad input: the message names what is wrong, where (file, key, value) and what to do."""


class DataError(InputError):
    """The data on disk is corrupt or inconsistent: the message names the file and offset (or record,
    row) at fault and what to do. A subclass of :class:`InputError` so every entry point answers it the
    same way (one line, exit 2): a flipped byte on disk is not a bug of the program."""


EXIT_BUG = 1  # anything but the user's input: the program is wrong
EXIT_INPUT = 2  # the user's input (argparse uses 2 for a bad command line too)
EXIT_INTERRUPTED = 130  # Ctrl-C, as a shell reports SIGINT

# OSErrors about a path the user named (missing, unreadable, wrong kind, taken) ...
USER_OS_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError)
# ... or about the user's file system (full, over quota, read-only, a name too long for it)
USER_ERRNOS = frozenset(e for e in (errno.ENOSPC, getattr(errno, "EDQUOT", None), errno.EROFS, errno.ENAMETOOLONG)
                        if e is not None)

BUG_ADVICE = "this is a bug, please report it (rerun with --debug for the traceback)"


def is_input_error(exc: BaseException) -> bool:
    """True for the user's input (exit 2): an :class:`InputError`, or an OSError about the user's
    path or file system (see the module docstring); False for a bug (exit 1)."""
    if isinstance(exc, InputError):
        return True
    if isinstance(exc, OSError):
        return isinstance(exc, USER_OS_ERRORS) or exc.errno in USER_ERRNOS
    return False


def one_line(exc: BaseException) -> str:
    """The error message on one line (multi-line messages are joined). An OSError from the system
    (errno and file name set) reads ``PATH: REASON`` (``PATH -> PATH2: REASON`` for a rename)."""
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        where = f"{exc.filename}" + (f" -> {exc.filename2}" if exc.filename2 is not None else "")
        text = f"{where}: {exc.strerror}"
    elif isinstance(exc, KeyError) and len(exc.args) == 1:
        text = str(exc.args[0])
    else:
        text = str(exc)
    text = " ".join(part.strip() for part in text.splitlines() if part.strip())
    return text or type(exc).__name__


def error_line(exc: BaseException, prog: str) -> str:
    """The one line that answers ``exc`` for program ``prog`` (e.g. ``vreloc train``)."""
    if is_input_error(exc):
        return f"{prog}: error: {one_line(exc)}"
    return f"{prog}: internal error: {type(exc).__name__}: {one_line(exc)} -- {BUG_ADVICE}"


def exit_code(exc: BaseException) -> int:
    return EXIT_INPUT if is_input_error(exc) else EXIT_BUG


Lazy = Union[str, bool, Callable[[], object]]


def _value(x: Lazy):
    return x() if callable(x) else x


def run_guarded(body: Callable[[], Optional[int]], prog: Lazy, debug: Lazy = False) -> int:
    """``body()``'s exit code (None = 0), through the one error path: an exception becomes one line
    on stderr (:func:`error_line`) and exit 2 (the user's input) or 1 (a bug); Ctrl-C becomes
    ``PROG: interrupted`` and 130. With ``debug`` the exception propagates (its traceback shows).
    ``SystemExit`` (argparse's usage errors, ``--help``) passes through untouched.

    ``prog`` and ``debug`` may be zero-argument callables, read when an error arrives (the CLI
    knows its command and ``--debug`` for sure only once its arguments are parsed)."""
    try:
        return int(body() or 0)
    except KeyboardInterrupt:
        print(f"{_value(prog)}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # the one error path
        if _value(debug):
            raise
        print(error_line(exc, _value(prog)), file=sys.stderr)
        return exit_code(exc)


def wants_debug(argv: Sequence[str]) -> bool:
    """``--debug`` among the arguments (before a ``--``)."""
    for token in argv:
        if token == "--":
            return False
        if token == "--debug":
            return True
    return False


def add_debug_option(parser) -> None:
    """``--debug`` in an entry point's argparse parser, so its help lists the flag (and parsing accepts
    it); :func:`run_entry_point` reads it from the raw arguments."""
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")


def run_entry_point(main: Callable[[List[str]], Optional[int]], prog: str,
                    argv: Optional[Sequence[str]] = None) -> int:
    """Run a ``python -m`` module's ``main(argv)`` on the one error path (:func:`run_guarded`):

        if __name__ == "__main__":
            sys.exit(run_entry_point(main, "python -m vreloc.bench.c3d"))
    """
    args = list(sys.argv[1:] if argv is None else argv)
    return run_guarded(lambda: main(args), prog, wants_debug(args))
