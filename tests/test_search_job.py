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
from vreloc_tf.data import schema
from vreloc_tf.data.artifacts import Dataset
from vreloc_tf.errors import DataError
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


def test_count_inputs_counts_every_record_and_refuses_a_truncated_shard(tmp_path):
    _, _, path, truncated = _shard_with_problems(tmp_path)
    assert build_index.count_inputs({"test": [path]}) == {"test": 5}
    with pytest.raises(DataError, match=rf"{truncated}: corrupt TFRecord file at byte 0: "):
        build_index.count_inputs({"test": [path, truncated]})


def test_counts_that_do_not_reconcile_leave_no_index_and_no_staging(search_data, tmp_path, monkeypatch):
    """The index build runs on staged_sink.run_job: a count that does not add up is a ReconciliationError
    naming the index build's sum, before any index is made, and the staging folder is gone."""
    from pipeline import staged_sink

    data = search_data[0]
    ix = str(tmp_path / "ix")
    real = build_index.count_inputs
    monkeypatch.setattr(build_index, "count_inputs", lambda shards: {s: n + 1 for s, n in real(shards).items()})
    with pytest.raises(staged_sink.ReconciliationError,
                       match=r"index-build: counts do not reconcile \(read != added \+ merged \+ dead_lettered\): "
                             r"test: read 13, added 12, merged 0, dead_lettered 0; the index in .* is unchanged"):
        build_index.run(ix, Dataset.open(data), splits=["test"], scales=(8, 16), beam_args=DIRECT)
    assert os.listdir(ix) == []


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
    from vreloc_tf.search.library import Index
    from vreloc_tf.search.search import open_search, search

    data, more, test, extra = search_data
    ix = str(tmp_path / "ix")
    assert _cli("index", "build", "--data", data, "--split", "test", "--model", tiny_run, "--out", ix,
                "--scales", "8,16,32", *DIRECT) == 0
    out = capsys.readouterr().out
    assert "index-build: test: read 12 records: added 12, merged into another record's piece 0, dead-lettered 0" in out
    index = LibraryIndex.open(ix)
    assert index.live_videos == 12 and index.manifest["model"]["run"] == os.path.abspath(tiny_run)
    assert index.relocalizer == "model"
    assert index.manifest["feature_dim"] == TINY_DIM and index.manifest["embedding"]["scales"] == [8, 16, 32]

    # add without rebuild: part-00000 untouched, one new part; adding the same data again dead-letters it
    before = os.path.getmtime(os.path.join(ix, "parts", "part-00000", "features.npy"))
    assert _cli("index", "add", "--index", ix, "--data", more, *DIRECT) == 0
    assert _cli("index", "add", "--index", ix, "--data", more, *DIRECT) == 0
    out = capsys.readouterr().out
    assert "val: read 2 records: added 2, merged into another record's piece 0, dead-lettered 0" in out
    assert "val: read 2 records: added 0, merged into another record's piece 0, dead-lettered 2" in out
    assert os.path.getmtime(os.path.join(ix, "parts", "part-00000", "features.npy")) == before
    with open(os.path.join(ix, "dead_letter", "val.jsonl")) as fh:
        assert [json.loads(line)["reason"] for line in fh] == ["already in the index (remove it first to replace it)"] * 2
    index = LibraryIndex.open(ix)
    assert index.live_videos == 14 and len(index.manifest["parts"]) == 2

    # search: a query cut from a library entry finds that entry's segment first
    index, reloc, embedder = open_search(Index.open(ix))
    target = test[0]
    g0, g1 = target.groundtruth
    hits = search(index, reloc, embedder, target.features[g0:g1], top_k=3)
    assert 1 <= len(hits) <= 3 and [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)

    # remove: the pieces of a video id leave the index, search no longer returns them
    assert _cli("index", "remove", "--index", ix, "--video-id", target.video_id) == 0
    index, reloc, embedder = open_search(Index.open(ix))
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
    assert result["relocalizer"] == "model"
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


# ---------------------------------------------------------------- one video, one item (#24)


def _cut(source, vid, split, entry, w0, w1, g=(2, 6), label=5, shift=0.0):
    """A record of `source`'s steps [w0, w1) (plus `shift`: features that disagree with the source)."""
    return schema.Record(video_id=vid, split=split, entry_index=entry, label=label, window=(w0, w1),
                         groundtruth=g, features=(source[w0:w1] + shift).astype(np.float32), fps=30.0)


def test_merge_records_one_piece_per_contiguous_run():
    rng = np.random.default_rng(20)
    src = rng.normal(size=(100, TINY_DIM)).astype(np.float32)
    recs = [_cut(src, "v", "test", 0, 10, 30), _cut(src, "v", "test", 1, 20, 40, label=6),  # overlap
            _cut(src, "v", "val", 2, 40, 45),  # touches
            _cut(src, "v", "test", 3, 60, 70), _cut(src, "v", "test", 4, 65, 75, shift=0.5),  # apart; disagrees
            _cut(src, "v", "test", 5, 22, 28)]  # inside the first
    pieces, refused = build_index.merge_records(reversed(recs))  # any order in
    assert [(p.window_start, len(p.features)) for p in pieces] == [(10, 35), (60, 10)]
    np.testing.assert_array_equal(pieces[0].features, src[10:45])
    np.testing.assert_array_equal(pieces[1].features, src[60:70])
    assert (pieces[0].split, pieces[0].entry_index, pieces[0].label) == ("test", 0, -1)  # labels 5 and 6: -1
    assert sorted(pieces[0].merged) == [("test", 1), ("test", 5), ("val", 2)] and pieces[1].merged == ()
    assert pieces[1].label == 5 and pieces[0].fps == 30.0
    assert [(r.entry_index, reason.split(" (")[0]) for r, reason in refused] == [
        (4, "features differ from test entry 3 of the same video on the overlap [65, 70)")]
    other_rate = dataclasses_replace(recs[3], entry_index=6, fps=25.0)
    _, refused = build_index.merge_records([recs[0], other_rate])
    assert [r.entry_index for r, _ in refused] == [6] and "frame rate differs" in refused[0][1]


def dataclasses_replace(rec, **kw):
    import dataclasses

    return dataclasses.replace(rec, **kw)


def _write_data(path, split, records, spec=None, pca=None):
    write_split(path, split, records, shards=2)
    write_manifest(path, TINY_DIM, {split: len(records)})
    if spec is not None:
        manifest = json.loads(open(os.path.join(path, schema.MANIFEST_NAME)).read())
        manifest["features"] = spec
        if pca:
            manifest["pca_file"] = pca
        with open(os.path.join(path, schema.MANIFEST_NAME), "w") as fh:
            json.dump(manifest, fh)
    return path


@pytest.fixture(scope="module")
def videos_data(tmp_path_factory):
    """Split `library`: `twice` (two instances: overlapping records), `apart` (two records far apart),
    `clash` (a second record disagreeing on the overlap), 5 single-record videos; a planted clip in `twice`."""
    root = tmp_path_factory.mktemp("videos_data")
    rng = np.random.default_rng(21)
    proto = rng.normal(size=TINY_DIM).astype(np.float32) * 3
    sources = {v: rng.normal(size=(120, TINY_DIM)).astype(np.float32) for v in
               ["twice", "apart", "clash"] + [f"single{i}" for i in range(5)]}
    sources["twice"][50:62] = proto + rng.normal(size=(12, TINY_DIM)).astype(np.float32)
    recs = [_cut(sources["twice"], "twice", "library", 0, 30, 70, g=(20, 32)),
            _cut(sources["twice"], "twice", "library", 1, 45, 95, g=(5, 17)),
            _cut(sources["apart"], "apart", "library", 2, 0, 30),
            _cut(sources["apart"], "apart", "library", 3, 80, 110),
            _cut(sources["clash"], "clash", "library", 4, 0, 40), _cut(sources["clash"], "clash", "library", 5, 20, 60,
                                                                       shift=1.0)]
    recs += [_cut(sources[f"single{i}"], f"single{i}", "library", 6 + i, 10, 80, label=7) for i in range(5)]
    spec = {"backbone": "c3d", "feature_dim": TINY_DIM, "raw_dim": 4096, "weights_sha256": "ab" * 32,
            "sample_fps": None, "frames_per_feature": 16, "pca_file": "pca.npz", "pca_components": TINY_DIM}
    data = str(root / "data")
    os.makedirs(data)
    with open(os.path.join(data, "pca.npz"), "wb") as fh:
        np.savez(fh, mean=np.zeros(16), components=np.eye(TINY_DIM, 16), explained_variance=np.ones(TINY_DIM))
    from vreloc_tf.files import file_sha256

    spec["pca_sha256"] = file_sha256(os.path.join(data, "pca.npz"))
    _write_data(data, "library", recs, spec)
    return data, spec, proto


def test_index_without_a_model_one_item_per_video_and_search_from_anywhere(videos_data, tmp_path, monkeypatch, capsys):
    """`index build` (no --model) merges a video's records, counts reconcile, search (frame-level) returns a
    two-instance video once; `index info`/`remove` count videos and pieces; the PCA copy serves any cwd."""
    from vreloc_tf.search.library import LibraryIndex
    from vreloc_tf.search.library import Index
    from vreloc_tf.search.search import open_search, search

    import shutil

    data, spec, proto = videos_data
    ix, copy = str(tmp_path / "ix"), str(tmp_path / "data")
    shutil.copytree(data, copy)  # removed before searching: the index must not need it
    assert _cli("index", "build", "--data", copy, "--out", ix, "--scales", "8,16", *DIRECT) == 0
    out = capsys.readouterr().out
    # 11 records of 8 videos: twice 1 added + 1 merged, apart 2 added (2 pieces), clash 1 added + 1 dead, singles 5
    assert ("index-build: library: read 11 records: added 9, merged into another record's piece 1, "
            "dead-lettered 1") in out
    assert "added 8 new videos in 9 pieces" in out and "holds 8 videos in 9 pieces" in out
    with open(os.path.join(ix, "dead_letter", "library.jsonl")) as fh:
        dead = [json.loads(line) for line in fh]
    assert [(d["entry_index"], d["reason"].split(" (")[0]) for d in dead] == [
        (5, "features differ from library entry 4 of the same video on the overlap [20, 40)")]
    index = LibraryIndex.open(ix)
    assert (index.live_videos, index.live_pieces, index.relocalizer, index.model_run) == (8, 9, "frame-level", None)
    assert index.live_spans(["twice", "apart"]) == {"twice": [(30, 95)], "apart": [(0, 30), (80, 110)]}
    assert index.feature_spec.weights_sha256 == spec["weights_sha256"]

    # frame-level search, no model: the planted action is found in `twice`, which is returned once
    index, reloc, embedder = open_search(Index.open(ix))
    query = proto + np.random.default_rng(22).normal(size=(9, TINY_DIM)).astype(np.float32)
    hits = search(index, reloc, embedder, query, top_k=9, rerank=9)
    assert hits[0].video_id == "twice" and 50 <= hits[0].start_index < hits[0].end_index <= 62
    assert len(hits) == 8 and len({h.video_id for h in hits}) == 8

    # `vreloc search` from another folder, the data folder gone: the query's PCA is the index's copy
    import vreloc.library_search as library_search

    original = open(os.path.join(copy, "pca.npz"), "rb").read()
    shutil.rmtree(copy)
    seen = []

    def fake_query_features(path, *args, **kwargs):  # the PCA, whichever way the extractor is handed it
        for a in list(args) + list(kwargs.values()):
            seen.append(a if isinstance(a, str) else
                        getattr(getattr(a, "feature_spec", None), "pca_file", None) if isinstance(a, LibraryIndex)
                        else None)
        return np.load(path).astype(np.float32)

    monkeypatch.setattr(library_search, "query_features", fake_query_features)
    os.makedirs(tmp_path / "elsewhere")
    monkeypatch.chdir(tmp_path / "elsewhere")
    np.save("q.npy", query)
    assert _cli("search", "--index", os.path.relpath(ix), "--query", "q.npy", "--top-k", "2", "--json", "h.json") == 0
    assert os.path.join(ix, "pca.npz") in seen and open(os.path.join(ix, "pca.npz"), "rb").read() == original
    assert LibraryIndex.open(os.path.relpath(ix)).feature_spec.pca_file == os.path.join(ix, "pca.npz")
    assert [h["video_id"] for h in json.loads(open("h.json").read())][0] == "twice"

    # evaluate-search without a model: frame-level for search and the exhaustive reference
    assert _cli("evaluate-search", "--index", ix, "--data", data, "--split", "library", "--json", "e.json") == 0
    result = json.loads(open("e.json").read())
    assert result["relocalizer"] == "frame-level" and result["library_videos"] == 8 and result["library_pieces"] == 9
    assert result["queries"] == 11

    # info and remove count videos and pieces; remove takes every piece of a video
    capsys.readouterr()
    assert _cli("index", "info", "--index", ix) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["videos"], info["pieces"], info["relocalizer"], info["pca"]) == (8, 9, "frame-level",
                                                                                   os.path.join(ix, "pca.npz"))
    assert _cli("index", "remove", "--index", ix, "--video-id", "apart", "nope") == 0
    assert "removed 1 of 2 video id(s) given (2 pieces); 7 videos in 7 pieces" in capsys.readouterr().out

    # `index add` of the same data: what is there is dead-lettered per record; `apart` comes back whole
    assert _cli("index", "add", "--index", ix, "--data", data, *DIRECT) == 0
    out = capsys.readouterr().out
    assert "read 11 records: added 2, merged into another record's piece 0, dead-lettered 9" in out
    assert LibraryIndex.open(ix).live_spans(["apart"]) == {"apart": [(0, 30), (80, 110)]}


def test_index_refuses_other_features_and_encoder_without_model(videos_data, tiny_run, tmp_path, capsys):
    import shutil

    data, spec, _ = videos_data
    ix = str(tmp_path / "ix")
    assert _cli("index", "build", "--data", data, "--out", ix, "--embedding", "encoder", *DIRECT) == 2
    assert "--embedding encoder needs --model RUN" in capsys.readouterr().err
    assert _cli("index", "build", "--data", data, "--out", ix, "--scales", "8", *DIRECT) == 0

    # data made with other weights: `index add` names both, changes nothing
    other = str(tmp_path / "other")
    rng = np.random.default_rng(23)
    src = rng.normal(size=(50, TINY_DIM)).astype(np.float32)
    _write_data(other, "library", [_cut(src, "new", "library", 0, 0, 50)], {**spec, "weights_sha256": "cd" * 32,
                                                                           "pca_file": None, "pca_sha256": None})
    capsys.readouterr()
    assert _cli("index", "add", "--index", ix, "--data", other, *DIRECT) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"--data {other}" in err and f"the index {ix}" in err
    assert "abababababab" in err and "cdcdcdcdcdcd" in err

    # a run trained on features made otherwise: `index build --model` refuses it
    run = str(tmp_path / "run")
    shutil.copytree(tiny_run, run)
    with open(os.path.join(run, "run.json")) as fh:
        manifest = json.load(fh)
    manifest["features"] = {**spec, "weights_sha256": "ef" * 32}
    with open(os.path.join(run, "run.json"), "w") as fh:
        json.dump(manifest, fh)
    assert _cli("index", "build", "--data", data, "--model", run, "--out", str(tmp_path / "ix2"), *DIRECT) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"--data {data}" in err and f"--model {run}" in err and "efefefefefef" in err
    assert not os.path.exists(tmp_path / "ix2" / "manifest.json")
    # and `vreloc search --model` of that run on the index
    np.save(str(tmp_path / "q.npy"), src[:8])
    assert _cli("search", "--index", ix, "--query", str(tmp_path / "q.npy"), "--model", run) == 2
    err = capsys.readouterr().err
    assert f"the index {ix}" in err and f"the model {run}" in err and "efefefefefef" in err
