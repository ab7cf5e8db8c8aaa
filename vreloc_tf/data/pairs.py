"""The fixed evaluation pair list: every model and baseline is scored on identical pairs.

Rule (README protocol): each entry of the split with a known ground truth serves once
as the query (its trimmed ground-truth segment); its reference is another entry of the
**same class**, from a **different source video**, whose **window is at least as long
as the query**. Among the entries that satisfy this, the choice is random with a fixed
seed and *balanced*: queries are visited in a seeded random order and each takes,
uniformly at random, one of the valid references that have served least often so far.
So every entry is a reference about once, and the references of the pair list follow
the split's own distribution instead of the luck of the draw — which is what makes a
baseline such as the statistical prior reproducible to a few tenths of a point across
seeds (independent draws move it by +-1.5 points on the test split). Queries that have
no valid reference are left out and counted (``"skipped"`` in the JSON).

JSON file::

    {"split": "test", "seed": 0, "count": 978, "skipped": 0,
     "pairs": [{"query": 12, "reference": 407, "query_video": "...", "reference_video": "..."}, ...]}

``query``/``reference`` are ``entry_index`` values (positions in the split file).

:func:`swap_queries` makes the *swapped-query control* of a pair list (`vreloc evaluate
--control swapped-query`): each query is replaced by one of another class, the reference
and its ground truth unchanged, so a model that reads the query should collapse on it.
"""
from __future__ import annotations

from collections import defaultdict
from typing import List, Optional

import numpy as np

from vreloc_tf import contract
from vreloc_tf.data.entry_index import EntryIndex, load_index
from vreloc_tf.errors import InputError
from vreloc_tf.files import read_json, write_json_atomic


def pairs_from_index(index: EntryIndex, seed: int) -> dict:
    """The pair list of an index (see the module docstring); returns the JSON-ready dict."""
    rng = np.random.default_rng(seed)
    n = len(index)
    has_gt = index.has_groundtruth
    query_len = np.where(has_gt, index.groundtruth[:, 1] - index.groundtruth[:, 0], 0)
    by_label = defaultdict(list)
    for row in range(n):
        if has_gt[row]:  # a reference must have ground truth to be scored
            by_label[int(index.label[row])].append(row)
    by_label = {k: np.array(v, dtype=np.int64) for k, v in by_label.items()}
    used = np.zeros(n, dtype=np.int64)
    chosen = {}
    skipped = 0
    for row in rng.permutation(n):
        if not has_gt[row]:
            skipped += 1
            continue
        cands = by_label[int(index.label[row])]
        ok = (index.video_id[cands] != index.video_id[row]) & (index.length[cands] >= query_len[row])
        cands = cands[ok]
        if cands.size == 0:
            skipped += 1
            continue
        cands = cands[used[cands] == used[cands].min()]
        ref = int(cands[rng.integers(cands.size)])
        used[ref] += 1
        chosen[int(row)] = ref
    pairs = [{"query": int(index.entry_index[q]), "reference": int(index.entry_index[r]),
              "query_video": str(index.video_id[q]), "reference_video": str(index.video_id[r])}
             for q, r in sorted(chosen.items())]
    return {"split": index.split, "seed": int(seed), "count": len(pairs), "skipped": skipped, "pairs": pairs}


def make_pairs(data_dir: str, split: str, seed: int = 0) -> List[dict]:
    """The pair list of ``split`` in ``data_dir`` (list of ``{"query", "reference", ...}``)."""
    return pairs_from_index(load_index(data_dir, split), seed)["pairs"]


def make_pair_file(data_dir: str, split: str, seed: int = 0) -> dict:
    """Like :func:`make_pairs` but the whole JSON-ready dict (split, seed, counts, pairs)."""
    return pairs_from_index(load_index(data_dir, split), seed)


def save_pairs(pairs, path: str, split: Optional[str] = None, seed: Optional[int] = None) -> str:
    """Write a pair list (the dict of :func:`make_pair_file`, or a bare list of pairs) as JSON."""
    doc = pairs if isinstance(pairs, dict) else {"split": split, "seed": seed, "count": len(pairs),
                                                 "skipped": None, "pairs": list(pairs)}
    return write_json_atomic(path, doc, indent=1)


def load_pairs(path: str, split: Optional[str] = None) -> List[dict]:
    """Read a pair list; a clear error if the file is malformed or was made for another split."""
    doc = read_json(path, "pair list")
    pairs = doc.get("pairs") if isinstance(doc, dict) else doc
    if not isinstance(pairs, list):
        raise InputError(f"{path}: not a pair list (no 'pairs' list)")
    for i, p in enumerate(pairs):
        if not isinstance(p, dict) or not {"query", "reference"} <= set(p):
            raise InputError(f"{path}: pair {i} lacks 'query'/'reference': {p!r}")
        if not all(isinstance(p[k], int) and not isinstance(p[k], bool) for k in ("query", "reference")):
            raise InputError(f"{path}: pair {i} has a non-integer entry index: {p!r}")
    if split is not None and isinstance(doc, dict) and doc.get("split") not in (None, split):
        raise InputError(f"{path}: pair list is for split '{doc['split']}', not '{split}'")
    return pairs


def check_pairs(pairs: List[dict], index: EntryIndex, path: str = "pair list") -> List[dict]:
    """``pairs`` if they fit the data of ``index``; else InputError naming the first mismatch.

    Every query/reference entry must exist in the split, and the ``query_video`` /
    ``reference_video`` a pair recorded when it was made must be that entry's video now:
    a pair list made on other data, or on a split that was relabelled since, is refused
    instead of being scored against the wrong windows.
    """
    rows = {int(e): r for r, e in enumerate(index.entry_index)}
    fix = "make a new pair list for this data (remove the file and rerun)"
    for i, pair in enumerate(pairs):
        for role in ("query", "reference"):
            entry = int(pair[role])
            if entry not in rows:
                raise InputError(f"{path}: pair {i} names {role} entry {entry}, which is not in split "
                                 f"'{index.split}' ({len(index)} entries); {fix}")
            recorded = pair.get(f"{role}_video")
            actual = str(index.video_id[rows[entry]])
            if recorded is not None and str(recorded) != actual:
                raise InputError(f"{path}: pair {i} recorded {role} entry {entry} as video {recorded!r}, but in "
                                 f"split '{index.split}' it is video {actual!r}; {fix}")
    return pairs


def subsample(pairs: List[dict], count: int, seed: int) -> List[dict]:
    """``count`` pairs chosen with ``seed`` (in list order); ``count <= 0`` or more than there are = all."""
    if count <= 0 or count >= len(pairs):
        return list(pairs)
    keep = np.sort(np.random.default_rng(seed).choice(len(pairs), size=count, replace=False))
    return [pairs[i] for i in keep]


SWAP_SEED_OFFSET = 1000  # default seed of the swapped-query control: the pair list's seed + this


def swap_queries(pairs: List[dict], index: EntryIndex, seed: int) -> dict:
    """The swapped-query control of ``pairs``: each pair's query replaced by an entry of another class.

    The new query of a pair is an entry of the same split (``index``) that has a ground truth
    (its trimmed segment is the query), whose label differs from the pair's class (the label of
    its original query), that is neither the reference entry nor from the reference's video, and
    whose segment length fits what the model takes as a query: 1 .. min(MAX_GROUNDTRUTH, the
    reference window). Among those, the one whose length is closest to the original query's is
    taken (ties broken by ``numpy.random.default_rng(seed)``, pairs visited in list order), so
    query length carries no signal. The reference, its window and ground truth are untouched.
    Returns ``{"seed", "count", "swapped", "pairs"}``; each new pair records ``original_query``.
    InputError naming the pair if one has no candidate.
    """
    rng = np.random.default_rng(seed)
    rows = index.position_of([p["query"] for p in pairs]) if pairs else np.zeros(0, np.int64)
    ref_rows = index.position_of([p["reference"] for p in pairs]) if pairs else np.zeros(0, np.int64)
    has_gt = index.has_groundtruth
    seg_len = np.where(has_gt, index.groundtruth[:, 1] - index.groundtruth[:, 0], 0)
    out = []
    for i, (pair, q, r) in enumerate(zip(pairs, rows, ref_rows)):
        limit = min(contract.MAX_GROUNDTRUTH, int(index.length[r]))
        ok = (has_gt & (index.label != index.label[q]) & (index.video_id != index.video_id[r])
              & (seg_len >= 1) & (seg_len <= limit))
        ok[r] = False
        cands = np.flatnonzero(ok)
        if cands.size == 0:
            raise InputError(f"swapped-query control: pair {i} (query entry {pair['query']}, reference entry "
                             f"{pair['reference']}) has no query of another class that fits its reference "
                             f"(segment of 1..{limit} features, not from video {index.video_id[r]!r})")
        gap = np.abs(seg_len[cands] - seg_len[q])
        cands = cands[gap == gap.min()]
        new = int(cands[rng.integers(cands.size)])
        out.append(dict(pair, query=int(index.entry_index[new]), query_video=str(index.video_id[new]),
                        original_query=int(pair["query"])))
    swapped = sum(p["query"] != p["original_query"] for p in out)
    return {"seed": int(seed), "count": len(out), "swapped": int(swapped), "pairs": out}
