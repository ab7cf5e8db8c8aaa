"""The index job (pipeline/build_index.py) in TestPipeline with dead letters, and the search commands
end to end on a tiny data folder and run: build, add without rebuild, remove, search, evaluate-search."""
import json
import os
import shutil

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from helpers.records import TINY_DIM, make_records, write_manifest, write_split
from pipeline import build_index
from vreloc_tf import schema
from vreloc_tf.search.embedding import EmbeddingSpec, window_spans

DIRECT = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]
SPEC = EmbeddingSpec("raw", (4, 8))


def _shard_with_problems(tmp_path):
    """A shard of 3 good records, one of another dim and one undecodable; plus a truncated shard."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    good = make_records("test", [7], 3, TINY_DIM, rng)
    other = make_records("test", [8], 1, 4, rng)[0]
    path = str(tmp_path / "test-00000-of-00002.tfrecord")
    with tf.io.TFRecordWriter(path) as w:
        for rec in good + [other]:
            w.write(schema.encode_record(rec))
        w.write(b"\x01\x02not an example")
    truncated = str(tmp_path / "test-00001-of-00002.tfrecord")
    with tf.io.TFRecordWriter(truncated) as w:
        w.write(schema.encode_record(good[0]))
    with open(truncated, "rb+") as fh:
        fh.truncate(os.path.getsize(truncated) - 7)
    return good, other, path, truncated


def test_embed_videos_outputs_and_dead_letters(tmp_path):
    good, other, path, truncated = _shard_with_problems(tmp_path)
    want = sorted((r.video_id, r.entry_index, r.label, int(r.window[0]), len(window_spans(r.length, SPEC.scales)))
                  for r in good)
    with TestPipeline(options=beam.options.pipeline_options.PipelineOptions(DIRECT)) as p:
        videos, dead = (p | beam.Create([("test", path), ("test", truncated)])
                        | build_index.EmbedVideos(TINY_DIM, SPEC))
        assert_that(videos | beam.Map(lambda v: (v.video_id, v.entry_index, v.label, v.window_start, len(v.spans))),
                    equal_to(want), label="videos")
        assert_that(dead | beam.Map(lambda d: (d.split, d.reason.split(":")[0], d.entry_index)), equal_to([
            ("test", "4-d features, the index holds 8-d features", other.entry_index),
            ("test", "undecodable record", -1),
            ("test", "unreadable shard", -1)]), label="dead")


def test_count_records_reads_headers_only(tmp_path):
    _, _, path, _ = _shard_with_problems(tmp_path)
    assert build_index.count_records(path) == 5


@pytest.fixture(scope="module")
def search_data(tmp_path_factory):
    """test: 4 classes x 3 entries of learnable records; extra: 2 more entries, for `index add`."""
    root = tmp_path_factory.mktemp("search_data")
    rng = np.random.default_rng(1)
    protos = {}
    test = make_records("test", [200, 201, 202, 203], 3, TINY_DIM, rng, prototypes=protos, min_len=20, max_len=60)
    extra = make_records("val", [200, 204], 1, TINY_DIM, rng, prototypes=protos, min_len=20, max_len=60)
    data, more = str(root / "data"), str(root / "more")
    write_split(data, "test", test)
    write_manifest(data, TINY_DIM, {"test": len(test)})
    write_split(more, "val", extra, shards=1)
    write_manifest(more, TINY_DIM, {"val": len(extra)})
    return data, more, test, extra


def _cli(*argv):
    from vreloc import cli

    return cli.main(list(argv))


def test_build_add_remove_search_and_evaluate(search_data, tiny_run, tmp_path, capsys):
    from vreloc_tf.search.library import LibraryIndex
    from vreloc_tf.search.search import open_search, search

    data, more, test, extra = search_data
    ix = str(tmp_path / "ix")
    assert _cli("index", "build", "--data", data, "--split", "test", "--model", tiny_run, "--out", ix,
                "--scales", "8,16,32", *DIRECT) == 0
    out = capsys.readouterr().out
    assert "index-build: test: read 12, added 12, dead-lettered 0" in out
    index = LibraryIndex.open(ix)
    assert index.live_videos == 12 and index.manifest["model"]["run"] == os.path.abspath(tiny_run)
    assert index.manifest["feature_dim"] == TINY_DIM and index.manifest["embedding"]["scales"] == [8, 16, 32]

    # add without rebuild: part-00000 untouched, one new part; adding the same data again dead-letters it
    before = os.path.getmtime(os.path.join(ix, "parts", "part-00000", "features.npy"))
    assert _cli("index", "add", "--index", ix, "--data", more, *DIRECT) == 0
    assert _cli("index", "add", "--index", ix, "--data", more, *DIRECT) == 0
    out = capsys.readouterr().out
    assert "val: read 2, added 2, dead-lettered 0" in out and "val: read 2, added 0, dead-lettered 2" in out
    assert os.path.getmtime(os.path.join(ix, "parts", "part-00000", "features.npy")) == before
    with open(os.path.join(ix, "dead_letter", "val.jsonl")) as fh:
        assert [json.loads(line)["reason"] for line in fh] == ["already in the index (remove it first to replace it)"] * 2
    index = LibraryIndex.open(ix)
    assert index.live_videos == 14 and len(index.manifest["parts"]) == 2

    # search: a query cut from a library entry finds that entry's segment first
    index, reloc, embedder = open_search(ix)
    target = test[0]
    g0, g1 = target.groundtruth
    hits = search(index, reloc, embedder, target.features[g0:g1], top_k=3)
    assert 1 <= len(hits) <= 3 and [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)

    # remove: the entries of a video id leave the index, search no longer returns them
    assert _cli("index", "remove", "--index", ix, "--video-id", target.video_id) == 0
    index, reloc, embedder = open_search(ix)
    assert target.video_id not in {h.video_id for h in search(index, reloc, embedder, target.features[g0:g1], 14, rerank=14)}

    # the command: .npy query -> JSON list, best first
    q = str(tmp_path / "q.npy")
    np.save(q, test[3].features[test[3].groundtruth[0]:test[3].groundtruth[1]])
    assert _cli("search", "--index", ix, "--query", q, "--top-k", "2", "--json", str(tmp_path / "hits.json")) == 0
    hits = json.loads((tmp_path / "hits.json").read_text())
    assert len(hits) == 2 and set(hits[0]) == {"video_id", "start_index", "end_index", "start_seconds",
                                               "end_seconds", "score"}
    assert hits[0]["score"] >= hits[1]["score"]

    # evaluate-search: the keys
    assert _cli("evaluate-search", "--index", ix, "--data", data, "--split", "test",
                "--json", str(tmp_path / "eval.json")) == 0
    result = json.loads((tmp_path / "eval.json").read_text())
    for key in ("queries", "library_videos", "library_windows", "recall_at_1", "recall_at_5", "exhaustive_recall_at_1",
                "exhaustive_recall_at_5", "p50_ms", "p99_ms", "exhaustive_p50_ms", "index_bytes"):
        assert key in result, key
    assert result["queries"] == 12 and result["library_videos"] == index.live_videos
    assert 0.0 <= result["recall_at_1"] <= result["recall_at_5"] <= 1.0

    # a query of another dim, and a truncated index: one line, exit 2
    np.save(q, np.ones((5, TINY_DIM + 3), np.float32))
    assert _cli("search", "--index", ix, "--query", q) == 2
    assert "the query has 11-d features but the index was built with 8-d features" in capsys.readouterr().err
    broken = str(tmp_path / "broken")
    shutil.copytree(ix, broken)
    with open(os.path.join(broken, "index.faiss"), "rb+") as fh:
        fh.truncate(100)
    assert _cli("search", "--index", broken, "--query", q) == 2
    err = capsys.readouterr().err
    assert err.startswith("vreloc search: error: ") and "truncated" in err and len(err.strip().splitlines()) == 1


def test_build_refuses_wrong_inputs(search_data, tiny_run, tmp_path, capsys):
    data, more, _, _ = search_data
    assert _cli("index", "build", "--data", data, "--split", "nope", "--model", tiny_run,
                "--out", str(tmp_path / "a"), *DIRECT) == 2
    assert "no shards of split(s) nope" in capsys.readouterr().err
    empty = str(tmp_path / "empty_ix")
    from vreloc_tf.search.library import LibraryIndex

    LibraryIndex.create(empty, TINY_DIM, SPEC, TINY_DIM, {"run": os.path.abspath(tiny_run)})
    q = str(tmp_path / "q.npy")
    np.save(q, np.ones((5, TINY_DIM), np.float32))
    assert _cli("search", "--index", empty, "--query", q) == 2
    assert "holds no videos" in capsys.readouterr().err
