"""The fixed evaluation pair list: protocol rules checked by brute force, determinism, JSON round trip."""
import json
from collections import Counter

import numpy as np
import pytest

from helpers import records as F
from vreloc_tf.data import schema
from vreloc_tf.data.entry_index import load_index
from vreloc_tf.errors import InputError
from vreloc_tf.data.pairs import (check_pairs, load_pairs, make_pair_file, make_pairs, pairs_from_index, save_pairs,
                             subsample)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("pairs_data"))
    rng = np.random.default_rng(3)
    records = F.make_records("test", [7, 8, 9], 9, 4, rng, min_len=4, max_len=30, videos_per_class=5)
    # a class with one entry (no partner) and one with a query longer than every other window
    records += F.make_records("test", [10], 1, 4, rng)
    long_q = schema.Record("long_q", "test", 0, 11, (0, 40), (0, 35), rng.normal(size=(40, 4)).astype(np.float32))
    short = schema.Record("short", "test", 0, 11, (0, 10), (2, 5), rng.normal(size=(10, 4)).astype(np.float32))
    records += [long_q, short]
    for i, r in enumerate(records):
        r.entry_index = i
    F.write_split(d, "test", records, shards=3)
    F.write_manifest(d, 4, {"test": len(records)})
    return d


def _brute_force_candidates(recs, q):
    qlen = q.groundtruth[1] - q.groundtruth[0]
    return {r.entry_index for r in recs if r.label == q.label and r.video_id != q.video_id and r.length >= qlen}


def test_every_pair_follows_the_protocol_and_every_possible_query_is_used(data_dir):
    recs = {r.entry_index: r for r in schema.read_records(data_dir, "test")}
    doc = make_pair_file(data_dir, "test", seed=0)
    queries = [p["query"] for p in doc["pairs"]]
    assert len(queries) == len(set(queries))
    for p in doc["pairs"]:
        q, r = recs[p["query"]], recs[p["reference"]]
        assert p["reference"] in _brute_force_candidates(recs.values(), q)
        assert (p["query_video"], p["reference_video"]) == (q.video_id, r.video_id)
    possible = {e for e, q in recs.items() if _brute_force_candidates(recs.values(), q)}
    assert set(queries) == possible
    assert doc["skipped"] == len(recs) - len(possible) == 2  # the singleton class, the over-long query
    assert doc["count"] == len(doc["pairs"])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_references_are_balanced(tmp_path, seed):
    """Without binding length limits every entry is a reference about once (least-used first).

    Independent uniform draws would leave about a third of the entries unused (1/e).
    """
    rng = np.random.default_rng(seed)
    records = F.make_records("test", [1, 2, 3], 12, 2, rng, min_len=34, max_len=40)  # windows > every query
    F.write_split(str(tmp_path), "test", records, shards=1)
    F.write_manifest(str(tmp_path), 2, {"test": len(records)})
    pairs = make_pairs(str(tmp_path), "test", seed=seed)
    assert len(pairs) == len(records)
    used = Counter(p["reference"] for p in pairs)
    for label in (1, 2, 3):
        counts = [used.get(r.entry_index, 0) for r in records if r.label == label]
        assert max(counts) <= 2 and counts.count(0) <= 1, counts


def test_pairs_are_deterministic_given_the_seed(data_dir):
    a, b, c = (make_pairs(data_dir, "test", seed=s) for s in (5, 5, 6))
    assert a == b
    assert a != c


def test_pairs_do_not_depend_on_shard_layout(data_dir, tmp_path):
    records = schema.read_records(data_dir, "test")
    F.write_split(str(tmp_path), "test", records[::-1], shards=1)
    F.write_manifest(str(tmp_path), 4, {"test": len(records)})
    assert make_pairs(str(tmp_path), "test", 2) == make_pairs(data_dir, "test", 2)


def test_save_load_round_trip_and_clear_errors(data_dir, tmp_path):
    doc = make_pair_file(data_dir, "test", seed=0)
    path = save_pairs(doc, str(tmp_path / "p" / "pairs.json"))
    assert load_pairs(path, "test") == doc["pairs"]
    with open(path) as fh:
        assert json.load(fh)["seed"] == 0
    with pytest.raises(ValueError, match="split 'test', not 'val'"):
        load_pairs(path, "val")
    bad = tmp_path / "bad.json"
    bad.write_text('{"pairs": [{"query": 1}]}')
    with pytest.raises(ValueError, match="pair 0 lacks"):
        load_pairs(str(bad))
    bad.write_text("not json")
    with pytest.raises(InputError, match="not a valid pair list"):
        load_pairs(str(bad))
    bad.write_text('{"pairs": [{"query": 1, "reference": "2"}]}')
    with pytest.raises(InputError, match="pair 0 has a non-integer entry index"):
        load_pairs(str(bad))


def test_subsample_is_a_seeded_ordered_subset(data_dir):
    pairs = make_pairs(data_dir, "test", 0)
    sub = subsample(pairs, 5, seed=4)
    assert len(sub) == 5 and sub == subsample(pairs, 5, seed=4)
    positions = [pairs.index(p) for p in sub]
    assert positions == sorted(positions)
    assert subsample(pairs, 0, 1) == pairs


def test_index_errors_name_the_missing_entry(data_dir):
    index = load_index(data_dir, "test")
    with pytest.raises(KeyError, match="entry_index 999"):
        index.position_of([0, 999])
    assert pairs_from_index(index, 0)["split"] == "test"


def test_check_pairs_refuses_lists_that_do_not_fit_the_data(data_dir):
    index = load_index(data_dir, "test")
    pairs = make_pairs(data_dir, "test", 0)
    assert check_pairs(pairs, index, "p.json") == pairs
    legacy = [{"query": p["query"], "reference": p["reference"]} for p in pairs]  # no recorded videos: indices only
    assert check_pairs(legacy, index) == legacy
    with pytest.raises(InputError, match="p.json: pair 1 names reference entry 999, which is not in split 'test'"):
        check_pairs([pairs[0], dict(pairs[1], reference=999)], index, "p.json")
    relabelled = [pairs[0], dict(pairs[1], reference_video="someone_else")]
    with pytest.raises(InputError, match="pair 1 recorded reference entry .* as video 'someone_else', but in split "
                                         "'test' it is video"):
        check_pairs(relabelled, index, "p.json")


# ---------------------------------------------------------------------------
# The swapped-query control (vreloc evaluate --control swapped-query)
# ---------------------------------------------------------------------------

def _table(rows):
    """A hand-made EntryIndex of (video, label, window length, ground-truth length or None) rows."""
    from vreloc_tf.data.entry_index import EntryIndex

    n = len(rows)
    gt = np.array([[1, 1 + g] if g is not None else [-1, -1] for _, _, _, g in rows], dtype=np.int32)
    return EntryIndex(split="test", shard_paths=[], shard=np.zeros(n, np.int32), offset=np.zeros(n, np.int64),
                      video_id=np.array([v for v, _, _, _ in rows], dtype=object),
                      entry_index=np.arange(n, dtype=np.int64) * 10,  # entry_index != row on purpose
                      label=np.array([c for _, c, _, _ in rows], np.int64),
                      length=np.array([w for _, _, w, _ in rows], np.int32), groundtruth=gt)


SWAP_ROWS = [  # video, class, window, ground-truth length
    ("a", 1, 50, 5), ("b", 1, 50, 8), ("c", 1, 6, 4),   # rows 0-2: class 1
    ("d", 2, 50, 5), ("e", 2, 50, 5), ("f", 2, 50, 9),  # rows 3-5: class 2 (two of length 5: a tie)
    ("b", 3, 50, 8),                                    # row 6: class 3 but video "b"
    ("g", 3, 50, 40), ("h", 3, 50, None),               # longer than MAX_GROUNDTRUTH; no ground truth
    ("i", 3, 50, 4),
]


def test_swap_queries_takes_another_class_of_the_closest_length_never_the_references_video():
    from vreloc_tf.data.pairs import swap_queries

    index = _table(SWAP_ROWS)
    ent = index.entry_index
    pairs = [{"query": int(ent[0]), "reference": int(ent[1]), "query_video": "a", "reference_video": "b"},
             {"query": int(ent[1]), "reference": int(ent[2]), "query_video": "b", "reference_video": "c"},
             {"query": int(ent[3]), "reference": int(ent[4]), "query_video": "d", "reference_video": "e"},
             {"query": int(ent[5]), "reference": int(ent[3]), "query_video": "f", "reference_video": "d"}]
    before = json.loads(json.dumps(pairs))
    doc = swap_queries(pairs, index, seed=5)
    assert pairs == before  # the input is not modified
    assert doc["seed"] == 5 and doc["count"] == doc["swapped"] == 4
    rows = {int(e): r for r, e in enumerate(ent)}
    seg = {r: g for r, (_, _, _, g) in enumerate(SWAP_ROWS)}
    for old, new in zip(pairs, doc["pairs"]):
        q, r, nq = rows[old["query"]], rows[old["reference"]], rows[new["query"]]
        # reference, its video and (through the index) its window and ground truth stay as they were
        assert (new["reference"], new["reference_video"], new["original_query"]) == \
            (old["reference"], old["reference_video"], old["query"])
        assert index.label[nq] != index.label[q] and nq != r
        assert index.video_id[nq] != index.video_id[r] and new["query_video"] == index.video_id[nq]
        assert seg[nq] is not None and 1 <= seg[nq] <= min(32, index.length[r])
        # closest length among all valid candidates (brute force)
        valid = [k for k in range(len(SWAP_ROWS)) if seg[k] is not None and index.label[k] != index.label[q]
                 and k != r and index.video_id[k] != index.video_id[r] and 1 <= seg[k] <= min(32, index.length[r])]
        assert abs(seg[nq] - seg[q]) == min(abs(seg[k] - seg[q]) for k in valid)
    # pair 1: reference "c" has a 6-feature window -> only queries of at most 6 (rows 3, 4, 9; not row 6, 8 long)
    assert rows[doc["pairs"][1]["query"]] in (3, 4)  # length 5 is closest to 8 among 5, 5, 4
    # pair 0: query length 5, reference video "b" -> rows 3/4 (length 5), never row 6 (video b) nor 7 (40 > 32)
    assert rows[doc["pairs"][0]["query"]] in (3, 4)
    # pairs 2/3 (class 2): another class; pair 3's query is 9 long -> row 1 (8) or row 6 (8)
    assert rows[doc["pairs"][3]["query"]] in (1, 6)
    # deterministic for a seed, and the ties go another way for some other seed
    assert swap_queries(pairs, index, seed=5) == doc
    draws = {tuple(p["query"] for p in swap_queries(pairs, index, seed=s)["pairs"]) for s in range(20)}
    assert len(draws) > 1
    check_pairs(doc["pairs"], index)  # the swapped list still fits the data


def test_swap_queries_names_a_pair_without_candidate():
    from vreloc_tf.data.pairs import swap_queries

    # every entry of another class is from the reference's video or has no usable ground truth
    index = _table([("a", 1, 50, 5), ("b", 1, 50, 5), ("b", 2, 50, 5), ("c", 2, 50, None), ("d", 2, 50, 40)])
    pairs = [{"query": 0, "reference": 10}]
    with pytest.raises(InputError, match=r"pair 0 \(query entry 0, reference entry 10\)"):
        swap_queries(pairs, index, seed=0)
