"""Small generated video files for the extract-video, Dask and pipeline tests."""
from __future__ import annotations

import numpy as np


def colour_video(path, n_frames, fps, seed):
    """Random coloured blocks drifting over a 64x64 frame (the decode resizes to 128x171)."""
    from pipeline.footage import write_video

    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (8, 8, 3)).astype(np.float32)
    frames = []
    for t in range(n_frames):
        img = np.kron(np.roll(base, t // 4, axis=1), np.ones((8, 8, 1)))
        frames.append(np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8))
    return write_video(str(path), np.stack(frames), fps=fps)
