"""Progress bars for long work (decoding and backbones per video, locate's windows), from tqdm.

Why one helper: every long loop should show the same thing -- done / total, rate and time
left -- and none of them should write carriage-return noise into a log file. A bar is drawn
on stderr when stderr is a terminal, or when ``VRELOC_PROGRESS=1`` (tests, and users who
want bars in a captured log); ``VRELOC_PROGRESS=0`` turns them off everywhere. Work that
finishes says so in one summary line of its own (logged by the caller), bar or not.
"""
from __future__ import annotations

import os
import sys
from typing import Optional

ENV = "VRELOC_PROGRESS"


def enabled() -> bool:
    forced = os.environ.get(ENV)
    if forced is not None:
        return forced.strip() not in ("", "0", "false", "no")
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def bar(total: Optional[int], desc: str, unit: str = "it", leave: bool = False):
    """A tqdm bar on stderr (a no-op object when progress is off); use as a context manager."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, leave=leave, disable=not enabled(), file=sys.stderr,
                dynamic_ncols=True, mininterval=0.5, smoothing=0.1)
