"""Decode a video file into C3D input clips, and write small videos for tests.

C3D (Tran et al. 2015) was trained on frames resized to 128x171 (H x W, aspect ratio
NOT preserved) and center-cropped to 112x112; the paper we implement feeds it clips of
16 consecutive frames without overlap. This module does exactly that with PyAV:

* every decoded frame is converted to RGB and resized to 128x171 by libswscale
  (bilinear), then cropped to rows 8:120 and columns 29:141 (the integer center, as
  Caffe C3D's data layer computes it; some Keras conversions use 30:142);
* frames are grouped into clips of ``clip_len`` (16) frames: clip ``i`` holds frames
  ``[16 i, 16 i + 16)``. A trailing partial clip is dropped, so a video of ``n`` frames
  gives ``n // 16`` clips and clip ``i`` starts at ``i * 16 / fps`` seconds;
* clips come out as uint8 RGB arrays ``[n, 16, 112, 112, 3]`` in batches of at most
  ``batch_clips`` clips, so memory stays bounded however long the video is.

Every failure to read a file is a :class:`VideoError` (an ``InputError``) whose
``reason`` says what is wrong, so Beam jobs can route the file to a dead-letter output
with that reason.
"""
from __future__ import annotations

import dataclasses
import math
import os
from typing import Iterator, Tuple

import av
import numpy as np

from vreloc_tf.contract import FRAMES_PER_FEATURE
from vreloc_tf.errors import InputError

CLIP_LEN = FRAMES_PER_FEATURE  # one C3D feature per clip, no overlap
RESIZE_HW = (128, 171)
CROP_SIZE = 112
# Integer center of the 128x171 frame, as Caffe computes it: (128-112)//2, (171-112)//2.
CROP_TOP = (RESIZE_HW[0] - CROP_SIZE) // 2
CROP_LEFT = (RESIZE_HW[1] - CROP_SIZE) // 2
DEFAULT_BATCH_CLIPS = 32

_AV_ERRORS = (av.FFmpegError, OSError, EOFError)


class VideoError(InputError):
    """A video that cannot become C3D clips; ``reason`` is the short human explanation."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason

    def __reduce__(self):  # picklable across Beam worker processes
        return (type(self), (self.path, self.reason))


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    """What the rest of the system needs to map clip indices to seconds."""

    fps: float  # the video stream's real average frame rate
    n_frames: int
    duration: float  # seconds
    width: int
    height: int

    def n_clips(self, clip_len: int = CLIP_LEN) -> int:
        """Number of whole non-overlapping clips (the trailing partial clip is dropped)."""
        return self.n_frames // clip_len


def _open(path: str):
    try:
        container = av.open(os.fspath(path))
    except _AV_ERRORS as e:
        raise VideoError(path, f"unreadable video file ({type(e).__name__}: {e})") from e
    if not container.streams.video:
        container.close()
        raise VideoError(path, "unreadable video file (no video stream)")
    return container


def _stream_fps(path: str, stream) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate or float(rate) <= 0:
        raise VideoError(path, "unreadable video file (no frame rate in the video stream)")
    return float(rate)


def probe(path: str) -> VideoInfo:
    """Read the container metadata of ``path`` (no decoding).

    The frame count comes from the stream header when the container records it (mp4,
    avi); otherwise (mkv, webm) the video packets are counted, which reads the file but
    decodes nothing.
    """
    container = _open(path)
    try:
        stream = container.streams.video[0]
        fps = _stream_fps(path, stream)
        n_frames = int(stream.frames or 0)
        if n_frames <= 0:
            try:
                n_frames = sum(1 for p in container.demux(stream) if p.size)
            except _AV_ERRORS as e:
                raise VideoError(path, f"unreadable video file ({type(e).__name__}: {e})") from e
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        else:
            duration = n_frames / fps
        width = int(stream.codec_context.width)
        height = int(stream.codec_context.height)
    finally:
        container.close()
    return VideoInfo(fps=fps, n_frames=n_frames, duration=duration, width=width, height=height)


def frame_to_c3d_input(frame: av.VideoFrame) -> np.ndarray:
    """One decoded frame -> uint8 RGB [112, 112, 3]: resize to 128x171, center crop."""
    image = frame.to_ndarray(
        format="rgb24",
        height=RESIZE_HW[0],
        width=RESIZE_HW[1],
        interpolation="BILINEAR",
    )
    return image[CROP_TOP:CROP_TOP + CROP_SIZE, CROP_LEFT:CROP_LEFT + CROP_SIZE]


def _too_short(path: str, n_frames: int, clip_len: int) -> VideoError:
    return VideoError(path, f"video has {n_frames} frames, fewer than one {clip_len}-frame clip")


def iter_clips(path: str, clip_len: int = CLIP_LEN, batch_clips: int = DEFAULT_BATCH_CLIPS,
               counts: dict | None = None, frames: Tuple[int, int | None] = (0, None)) -> Iterator[np.ndarray]:
    """Yield uint8 arrays ``[n, clip_len, 112, 112, 3]`` (n <= batch_clips), in video order.

    If ``counts`` is given, ``counts["frames"]`` holds the number of frames decoded so far
    (once exhausted: all of them, the dropped trailing partial clip included).
    ``frames = (first, stop)``: only frames ``[first, stop)`` of the video make clips (clip 0
    starts at frame ``first``), for a clip cut out of a longer video; ``counts["frames"]``
    then counts the frames in that range.

    Raises :class:`VideoError` (lazily, once iteration starts) when the file cannot be
    opened or decoded, or has fewer than ``clip_len`` frames. A file that breaks in the
    middle raises after the batches decoded before the damage have been yielded: callers
    that need all-or-nothing should use :func:`decode_clips` or collect before emitting.
    """
    _check_sizes(clip_len, batch_clips)
    first, stop = frames
    if first < 0 or (stop is not None and stop < first):
        raise ValueError(f"bad frame range [{first}, {stop})")
    return _iter_clips(path, clip_len, batch_clips, {} if counts is None else counts, first, stop)


def _check_sizes(clip_len: int, batch_clips: int) -> None:
    if clip_len < 1 or batch_clips < 1:
        raise ValueError(f"clip_len and batch_clips must be >= 1, got {clip_len}, {batch_clips}")


def _iter_clips(path: str, clip_len: int, batch_clips: int, counts: dict, first: int = 0,
                stop: int | None = None) -> Iterator[np.ndarray]:
    counts["frames"] = 0
    container = _open(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        batch = np.empty((batch_clips, clip_len, CROP_SIZE, CROP_SIZE, 3), np.uint8)
        n_frames = 0
        in_batch = 0  # whole clips in ``batch``
        try:
            for i, frame in enumerate(container.decode(stream)):
                if i < first:
                    continue
                if stop is not None and i >= stop:
                    break
                batch[in_batch, n_frames % clip_len] = frame_to_c3d_input(frame)
                n_frames += 1
                counts["frames"] = n_frames
                if n_frames % clip_len == 0:
                    in_batch += 1
                    if in_batch == batch_clips:
                        yield batch.copy()
                        in_batch = 0
        except _AV_ERRORS as e:
            raise VideoError(
                path, f"unreadable video file (decoding failed after {n_frames} frames: "
                      f"{type(e).__name__}: {e})") from e
        if n_frames < clip_len:
            raise _too_short(path, n_frames, clip_len)
        if in_batch:
            yield batch[:in_batch].copy()
    finally:
        container.close()


def sample_times(n_frames: int, fps: float, sample_fps: float, start: float = 0.0,
                 end: float | None = None) -> np.ndarray:
    """Frame numbers of the frames an image backbone sees: one per ``1 / sample_fps`` seconds.

    Sample ``k`` is the frame shown at the middle of its interval, time
    ``start + (k + 0.5) / sample_fps`` (frame ``j`` is shown during ``[j / fps, (j + 1) / fps)``);
    there are ``floor((end - start) * sample_fps)`` whole intervals, where ``end`` defaults to (and
    is clipped to) the video's length ``n_frames / fps``. Feature ``k`` therefore covers seconds
    ``[start + k / sample_fps, start + (k + 1) / sample_fps)``: the same index-to-seconds rule as
    C3D's 16-frame clips, with ``fps = sample_fps`` and one frame per feature.
    """
    if fps <= 0 or sample_fps <= 0:
        raise ValueError(f"frame rates must be positive, got fps={fps}, sample_fps={sample_fps}")
    length = n_frames / fps
    end = length if end is None else min(float(end), length)
    n = int(math.floor((end - start) * sample_fps + 1e-9)) if end > start else 0
    times = start + (np.arange(n) + 0.5) / sample_fps
    return np.minimum(np.floor(times * fps + 1e-9).astype(np.int64), max(n_frames - 1, 0))


def iter_sampled_frames(path: str, frame_numbers: np.ndarray, batch: int = 16,
                        counts: dict | None = None) -> Iterator[np.ndarray]:
    """Yield full-size uint8 RGB frames ``[n, H, W, 3]`` (n <= batch) at ``frame_numbers`` (sorted).

    Every frame is decoded (seeking is not frame-exact in every container) but only the
    sampled ones are converted to RGB. ``counts["frames"]``: frames decoded so far. Raises
    :class:`VideoError` when the file cannot be decoded or ends before the last sample.
    """
    wanted = np.asarray(frame_numbers, np.int64)
    counts = {} if counts is None else counts
    counts["frames"] = 0
    if len(wanted) == 0:
        return
    if batch < 1 or np.any(np.diff(wanted) < 0):
        raise ValueError("batch must be >= 1 and frame numbers sorted")
    container = _open(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        out, k = [], 0
        try:
            for i, frame in enumerate(container.decode(stream)):
                counts["frames"] = i + 1
                if i < wanted[k]:
                    continue
                image = frame.to_ndarray(format="rgb24")
                while k < len(wanted) and wanted[k] == i:  # a frame may serve two samples (fps > video fps)
                    out.append(image)
                    k += 1
                if len(out) >= batch:
                    yield np.stack(out)
                    out = []
                if k == len(wanted):
                    break
        except _AV_ERRORS as e:
            raise VideoError(path, f"unreadable video file (decoding failed after {counts['frames']} frames: "
                                   f"{type(e).__name__}: {e})") from e
        if k < len(wanted):
            raise VideoError(path, f"video ended after {counts['frames']} frames, before frame {int(wanted[k])} "
                                   f"(its header promised more)")
        if out:
            yield np.stack(out)
    finally:
        container.close()


def decode_clips(path: str, clip_len: int = CLIP_LEN,
                 batch_clips: int = DEFAULT_BATCH_CLIPS) -> Tuple[np.ndarray, VideoInfo]:
    """All clips of ``path`` at once: ``(uint8 [n_clips, clip_len, 112, 112, 3], info)``.

    ``info.n_frames`` is the number of frames actually decoded (container headers can be
    off by a few frames); fps and size come from :func:`probe`.
    """
    _check_sizes(clip_len, batch_clips)
    info = probe(path)
    counts: dict = {}
    batches = list(iter_clips(path, clip_len, batch_clips, counts=counts))
    clips = np.concatenate(batches, axis=0)
    return clips, dataclasses.replace(info, n_frames=counts["frames"])


def read_frames(path: str, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Full-resolution uint8 RGB frames ``[start, stop)`` of a (small) video: [T, H, W, 3].

    For tests and demos that cut a segment out of footage and splice it into other
    footage (then :func:`pipeline.footage.write_video`); everything requested is held in memory.
    """
    if start < 0 or (stop is not None and stop < start):
        raise ValueError(f"bad frame range [{start}, {stop})")
    container = _open(path)
    frames = []
    try:
        stream = container.streams.video[0]
        try:
            for i, frame in enumerate(container.decode(stream)):
                if stop is not None and i >= stop:
                    break
                if i >= start:
                    frames.append(frame.to_ndarray(format="rgb24"))
        except _AV_ERRORS as e:
            raise VideoError(path, f"unreadable video file ({type(e).__name__}: {e})") from e
    finally:
        container.close()
    if not frames:
        raise VideoError(path, f"no frames in [{start}, {stop})")
    return np.stack(frames)


def decoded_frame_count(path: str) -> int:
    """Frames a full decode of ``path`` yields (exact, but costs a decode)."""
    container = _open(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            return sum(1 for _ in container.decode(stream))
        except _AV_ERRORS as e:
            raise VideoError(path, f"unreadable video file ({type(e).__name__}: {e})") from e
    finally:
        container.close()
