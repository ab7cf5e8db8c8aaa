"""Where the first NaN or Inf of an array is, at the cost of one reduction when there is none.

Why one home: request checks (serving), search queries and index files all refuse non-finite
values and must name where they are, on arrays of up to tens of MB, where an element-wise
``np.isfinite`` costs a temporary as large as the array. A NaN or Inf anywhere makes the sum
non-finite, so one pass with no temporary clears the common case; only a non-finite sum (a
bad value, or an overflow of huge finite ones) pays for the scan that finds the position.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np


def first_non_finite(values) -> Optional[Tuple[int, ...]]:
    """The index of the first NaN/Inf in ``values`` (C order), or None when every value is finite."""
    values = np.asarray(values)
    if values.size == 0:
        return None
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(np.add.reduce(values, axis=None)):
            return None
    bad = ~np.isfinite(values)
    if not bad.any():
        return None  # the sum overflowed; every value is finite
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(bad)), values.shape))
