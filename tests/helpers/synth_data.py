"""The default synthetic dataset with one bad split entry of every kind, for the ingest and Dask tests."""
from __future__ import annotations

import json
import os

from pipeline import synth

BAD_ENTRIES = {
    "missing video": ({"id": "no_such_video", "label": 7, "location": [0, 5], "groundtruth": [1, 3]}, "not in the features file"),
    "past the end": (None, "past the end"),
    "empty window": (None, "empty window"),
    "gt outside": (None, "outside its window"),
    "malformed": ({"id": "x", "location": [0, 5], "groundtruth": [1, 3]}, "missing 'label'"),
}


def inject_bad_entries(splits_dir, n_feat):
    """Append one entry of every bad kind to train.json and one to val.json; return their (split, index, reason)."""
    with open(os.path.join(splits_dir, "train.json")) as fh:
        train = json.load(fh)
    vid = train[0]["id"]
    n = n_feat[vid]
    bad = [
        BAD_ENTRIES["missing video"][0],
        {"id": vid, "label": 1, "location": [n - 3, n + 4], "groundtruth": [0, 2]},
        {"id": vid, "label": 1, "location": [4, 4], "groundtruth": [0, 1]},
        {"id": vid, "label": 1, "location": [0, 6], "groundtruth": [3, 9]},
        BAD_ENTRIES["malformed"][0],
    ]
    reasons = [r for _, r in BAD_ENTRIES.values()]
    expected = [("train", len(train) + i, reasons[i]) for i in range(len(bad))]
    with open(os.path.join(splits_dir, "train.json"), "w") as fh:
        json.dump(train + bad, fh)
    with open(os.path.join(splits_dir, "val.json")) as fh:
        val = json.load(fh)
    expected.append(("val", len(val), "not in the features file"))
    with open(os.path.join(splits_dir, "val.json"), "w") as fh:
        json.dump(val + [dict(BAD_ENTRIES["missing video"][0], id="gone_too")], fh)
    return expected


def make_synth_with_bad(out: str, seed: int):
    """Default synthetic dataset at D=8 in ``out`` plus injected bad entries; returns (out, expected dead)."""
    synth.generate(out, seed=seed, dim=8)
    with open(os.path.join(out, "length.json")) as fh:
        n_feat = {k: v["n_feat"] for k, v in json.load(fh).items()}
    return out, inject_bad_entries(out, n_feat)
