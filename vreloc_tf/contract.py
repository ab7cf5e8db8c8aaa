"""The benchmark's fixed numbers, defined once: every module that needs one imports it from here.

Why one home: the index space (one feature per 16 frames), the 300-feature window and
the 32-feature ground truth are properties of the data contract (Feng et al. 2018's
splits, the paper's Implementation Details), not tunable hyper-parameters; written in
several places they drift apart silently.
"""
from __future__ import annotations

from typing import List, Tuple

FRAMES_PER_FEATURE = 16  # one C3D feature per 16 frames, no overlap (paper, Implementation Details)
FRAMES_PER_HDF5_ROW = 8  # the ActivityNet C3D HDF5 file has one row every 8 frames ...
HDF5_ROW_STRIDE = FRAMES_PER_FEATURE // FRAMES_PER_HDF5_ROW  # ... so rows[::2] is the feature index space
MAX_WINDOW = 300  # a split entry's window is cut to at most 300 features (Feng et al. 2018 splits)
MAX_GROUNDTRUTH = 32  # a ground-truth segment is at most 32 features (Feng et al. 2018 splits)
FULL_DECODE_MAX_FRAMES = 1024  # longest predicted segment under full supervision (paper, Implementation Details)
FC7_DIM = 4096  # C3D fc7 width, before PCA
SUPERVISIONS = ("full", "weak")
# Decoding rules (vreloc_tf.decoding): Eq. 20, the weak threshold rule, Feng et al. 2018's decoding loop
DECODE_RULES = ("full", "weak", "feng")


def reference_windows(length: int, window: int) -> List[Tuple[int, int]]:
    """[start, end) windows of at most ``window`` steps, overlapping by half, covering [0, length).

    How a reference longer than the model's window is cut (`vreloc locate`, and the exhaustive
    reference of library search), so both see a long video the same way.
    """
    if length <= window:
        return [(0, length)]
    hop = max(1, window // 2)
    starts = list(range(0, length - window + 1, hop))
    if starts[-1] + window < length:
        starts.append(length - window)
    return [(s, s + window) for s in starts]
