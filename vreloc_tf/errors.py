"""The one exception type for bad input, so every entry point can answer it the same way.

Why a base class: the command line (``vreloc``), the Beam launchers and the server all
need to tell "the user gave us something wrong" (answer with one line naming the file,
key or value at fault, and what to do; exit 2) from "the program is wrong" (a traceback
is useful). Library code raises :class:`InputError` (or a subclass) for the first kind.
"""
from __future__ import annotations


class InputError(ValueError):
    """Bad input: the message names what is wrong, where (file, key, value) and what to do."""


class DataError(InputError):
    """The data on disk is corrupt or inconsistent: the message names the file and offset (or record,
    row) at fault and what to do. A subclass of :class:`InputError` so every entry point answers it the
    same way (one line, exit 2): a flipped byte on disk is not a bug of the program."""
