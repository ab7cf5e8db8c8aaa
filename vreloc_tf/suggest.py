"""The closest valid spelling for a typo: one rule for flags, commands, choices, config keys and names.

Why one module: the command line, the Beam pass-through check, the config loader and the
backbone options all answer a misspelling with ``did you mean X?``; with one ``closest`` they
agree on what counts as close (difflib's ratio, flags compared without their dashes).
"""
from __future__ import annotations

import difflib
from typing import Iterable, Optional


def closest(word: str, candidates: Iterable[str], cutoff: float = 0.6) -> Optional[str]:
    """The candidate most like ``word`` (difflib), or None; flags are compared without their dashes."""
    by_bare = {c.lstrip("-"): c for c in candidates}
    match = difflib.get_close_matches(word.lstrip("-"), list(by_bare), n=1, cutoff=cutoff)
    return by_bare[match[0]] if match else None


def is_flag(token: str) -> bool:
    """A command-line token that names an option: ``-x``/``--x``, but not a negative number."""
    if not token.startswith("-") or len(token) < 2:
        return False
    try:
        float(token)
        return False
    except ValueError:
        return True
