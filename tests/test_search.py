"""Library search (#13): window embeddings against NumPy, the index's append/remove/integrity checks,
and search ranking by the model's score (vreloc_tf/search)."""
import os

import numpy as np
import pytest

from vreloc_tf.errors import InputError
from vreloc_tf.search.embedding import Embedder, EmbeddingSpec, window_spans, window_vectors
from vreloc_tf.search.library import IndexError_, LibraryIndex, VideoEmbedding

DIM = 8
SPEC = EmbeddingSpec("raw", (4, 8))


def _video(rng, vid, length, entry=0, label=1, split="test", embedder=None):
    feats = rng.normal(size=(length, DIM)).astype(np.float32)
    spans, vectors = (embedder or Embedder(SPEC, DIM)).windows(feats)
    return VideoEmbedding(vid, split, entry, label, 10, feats, spans, vectors, fps=25.0)


def _index(path, videos=(), **kw):
    index = LibraryIndex.create(str(path), DIM, SPEC, DIM, {"run": None}, **kw)
    if videos:
        index.append(list(videos))
    return index


# ---------------------------------------------------------------- embeddings


def test_window_spans_cover_every_scale_with_half_hops():
    spans = window_spans(20, (4, 8, 32))
    assert [tuple(r) for r in spans if r[2] == 4] == [(s, s + 4, 4) for s in range(0, 17, 2)]
    assert [tuple(r) for r in spans if r[2] == 8] == [(0, 8, 8), (4, 12, 8), (8, 16, 8), (12, 20, 8)]
    assert [tuple(r) for r in spans if r[2] == 32] == [(0, 20, 32)]  # shorter than the scale: once, whole video
    assert [tuple(r) for r in window_spans(3, (4, 8))] == [(0, 3, 4)]


def test_window_vectors_match_a_numpy_loop():
    rng = np.random.default_rng(0)
    steps = rng.normal(size=(37, 5))
    spans = window_spans(37, (4, 16))
    got = window_vectors(steps, spans)
    for (s, e, _), v in zip(spans, got):
        mean = steps[s:e].mean(axis=0)
        np.testing.assert_allclose(v, mean / np.linalg.norm(mean), rtol=1e-5, atol=1e-6)


def test_raw_embedder_unit_steps_and_query_vector():
    rng = np.random.default_rng(1)
    feats = rng.normal(size=(12, DIM)).astype(np.float32) * 5
    emb = Embedder(SPEC, DIM)
    unit = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    q = unit.mean(axis=0)
    np.testing.assert_allclose(emb.query(feats), q / np.linalg.norm(q), rtol=1e-5)
    with pytest.raises(InputError, match="6-d features but the index was built with 8-d"):
        emb.query(feats[:, :6])


# ---------------------------------------------------------------- the index


def test_nearest_windows_is_the_numpy_cosine_ranking(tmp_path):
    rng = np.random.default_rng(2)
    videos = [_video(rng, f"v{i}", int(rng.integers(5, 30)), entry=i) for i in range(6)]
    index = _index(tmp_path / "ix", videos)
    all_vectors = np.concatenate([v.vectors for v in videos])
    q = Embedder(SPEC, DIM).query(rng.normal(size=(6, DIM)))
    ids, sims = index.nearest_windows(q, 10)
    want = np.argsort(-(all_vectors @ q), kind="stable")[:10]
    np.testing.assert_allclose(sims, (all_vectors @ q)[want], rtol=1e-5)
    np.testing.assert_array_equal(np.sort(ids), np.sort(want))  # window ids are global window numbers
    owners = index.windows(ids)["video"]
    ids2, _ = index.nearest_windows(q, 10, exclude_pieces=[int(owners[0])])
    assert int(owners[0]) not in set(index.windows(ids2)["video"].tolist()) and len(ids2) == 10


def test_append_without_rebuild_and_reopen(tmp_path):
    rng = np.random.default_rng(3)
    index = _index(tmp_path / "ix", [_video(rng, "a", 20, 0), _video(rng, "b", 9, 1)])
    faiss_part0 = os.path.getmtime(tmp_path / "ix" / "parts" / "part-00000" / "features.npy")
    index.append([_video(rng, "c", 14, 2)])
    assert os.path.getmtime(tmp_path / "ix" / "parts" / "part-00000" / "features.npy") == faiss_part0
    again = LibraryIndex.open(str(tmp_path / "ix"))
    assert again.live_videos == 3 and len(again.manifest["parts"]) == 2
    assert again.faiss.ntotal == again.live_windows == sum(len(window_spans(n, SPEC.scales)) for n in (20, 9, 14))
    c = again.video(2)
    assert (c.video_id, c.entry_index, c.features.shape) == ("c", 2, (14, DIM))
    assert c.seconds(25) == 16.0  # 25 steps x 16 frames / 25 fps
    # the new video is found: a query equal to one of its windows has that window as nearest neighbour
    ids, sims = again.nearest_windows(Embedder(SPEC, DIM).query(np.asarray(c.features[4:12])), 1)
    assert tuple(again.windows(ids)[["video", "start", "end"]][0]) == (2, 4, 12) and sims[0] > 0.999


def test_remove_drops_the_videos_windows_and_survives_reopen(tmp_path):
    rng = np.random.default_rng(4)
    index = _index(tmp_path / "ix", [_video(rng, "a", 20, 0), _video(rng, "b", 9, 1), _video(rng, "a", 12, 2)])
    b_windows = index.live_windows - sum(len(window_spans(n, SPEC.scales)) for n in (20, 12))
    assert index.remove(["a"]) == 2 and index.remove(["a"]) == 0
    again = LibraryIndex.open(str(tmp_path / "ix"))
    assert again.live_videos == again.live_pieces == 1 and again.live_windows == again.faiss.ntotal == b_windows
    assert again.live_piece_numbers().tolist() == [1]
    ids, _ = again.nearest_windows(rng.normal(size=DIM).astype(np.float32), 50)
    assert set(again.windows(ids)["video"].tolist()) == {1}
    assert again.live_video_ids() == {"b"} and again.live_spans(["a", "b"]) == {"b": [(10, 19)]}
    again.append([_video(rng, "a", 7, 0)])  # re-adding after a remove works
    assert LibraryIndex.open(str(tmp_path / "ix")).live_videos == 2


def test_empty_library_is_a_clear_error(tmp_path):
    index = _index(tmp_path / "ix")
    assert LibraryIndex.open(str(tmp_path / "ix")).live_videos == 0
    with pytest.raises(IndexError_, match="holds no videos"):
        index.nearest_windows(np.ones(DIM, np.float32), 5)
    rng = np.random.default_rng(5)
    index.append([_video(rng, "a", 10)])
    index.remove(["a"])
    with pytest.raises(IndexError_, match="holds no videos"):
        LibraryIndex.open(str(tmp_path / "ix")).nearest_windows(np.ones(DIM, np.float32), 5)


def test_query_of_another_dim_is_refused_naming_both(tmp_path):
    rng = np.random.default_rng(6)
    index = _index(tmp_path / "ix", [_video(rng, "a", 10)])
    with pytest.raises(IndexError_, match="query vector is 5-d but the index .* holds 8-d"):
        index.nearest_windows(np.ones(5, np.float32), 3)


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage_part", "missing_faiss"])
def test_corrupt_or_truncated_index_is_refused(tmp_path, damage):
    rng = np.random.default_rng(7)
    _index(tmp_path / "ix", [_video(rng, "a", 30), _video(rng, "b", 25, 1)])
    faiss_file = tmp_path / "ix" / "index.faiss"
    data = faiss_file.read_bytes()
    if damage == "truncate":
        faiss_file.write_bytes(data[: len(data) // 2])
        match = "truncated"
    elif damage == "flip":
        faiss_file.write_bytes(data[:100] + bytes([data[100] ^ 0xFF]) + data[101:])
        match = "checksum"
    elif damage == "garbage_part":
        part = tmp_path / "ix" / "parts" / "part-00000" / "features.npy"
        part.write_bytes(part.read_bytes()[:200])
        match = "features.npy"
    else:
        faiss_file.unlink()
        match = "missing"
    with pytest.raises(IndexError_, match=match):
        LibraryIndex.open(str(tmp_path / "ix"))


def test_faiss_reader_failure_is_an_input_error(tmp_path):
    """A file FAISS cannot parse, even with a manifest that matches it, is refused with one line."""
    import json

    from vreloc_tf.files import file_sha256

    rng = np.random.default_rng(8)
    _index(tmp_path / "ix", [_video(rng, "a", 30)])
    faiss_file = tmp_path / "ix" / "index.faiss"
    faiss_file.write_bytes(b"not a faiss index at all")
    manifest = json.loads((tmp_path / "ix" / "manifest.json").read_text())
    manifest["index"].update(bytes=faiss_file.stat().st_size, sha256=file_sha256(str(faiss_file)))
    (tmp_path / "ix" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexError_, match="FAISS cannot read it"):
        LibraryIndex.open(str(tmp_path / "ix"))


def test_not_an_index_and_existing_index(tmp_path):
    with pytest.raises(IndexError_, match="no such folder"):
        LibraryIndex.open(str(tmp_path / "nope"))
    os.makedirs(tmp_path / "empty")
    with pytest.raises(IndexError_, match="not a library index"):
        LibraryIndex.open(str(tmp_path / "empty"))
    _index(tmp_path / "ix")
    with pytest.raises(IndexError_, match="already holds an index"):
        _index(tmp_path / "ix")


def test_ivf_index_appends_and_removes(tmp_path):
    rng = np.random.default_rng(9)
    videos = [_video(rng, f"v{i}", 40, i) for i in range(60)]
    index = _index(tmp_path / "ix", videos[:50], index_type="ivf", nprobe=1000)
    index.append(videos[50:])
    index.remove(["v3"])
    again = LibraryIndex.open(str(tmp_path / "ix"))
    assert again.manifest["index"]["built_type"] == "ivf" and again.live_videos == 59
    target = videos[55].vectors[0]
    ids, sims = again.nearest_windows(target, 1)  # nprobe >= nlist: exact
    assert again.windows(ids)["video"][0] == 55 and sims[0] > 0.999


# ---------------------------------------------------------------- search ranks by the model's score


class FakeRelocalizer:
    """Scores each span by a fixed per-video number, so the expected ranking is known."""

    max_window = 300
    feature_dim = DIM
    info = {}

    def __init__(self, score_of_first_value):
        self.score_of = score_of_first_value
        self.calls = []

    def locate(self, query, spans):
        self.calls.append(len(spans))
        score = np.array([self.score_of(float(s[0, 0])) for s in spans], np.float32)
        return np.zeros(len(spans), np.int32), np.full(len(spans), 2, np.int32), score


def test_search_reranks_ann_candidates_by_model_score(tmp_path):
    from vreloc_tf.search.search import exhaustive, search

    rng = np.random.default_rng(10)
    videos = [_video(rng, f"v{i}", 20, i) for i in range(8)]
    for i, v in enumerate(videos):
        v.features[0, 0] = i  # the fake model's score is -abs(i - 5): video 5 best, then 4 and 6
    index = _index(tmp_path / "ix", videos)
    fake = FakeRelocalizer(lambda i: -abs(i - 5))
    hits = search(index, fake, Embedder(SPEC, DIM), rng.normal(size=(6, DIM)), top_k=3, candidates=500, rerank=8)
    assert [h.video_id for h in hits] == ["v5", "v4", "v6"] and fake.calls == [8]
    assert [h.score for h in hits] == sorted([h.score for h in hits], reverse=True)
    assert hits[0].start_index == 10 + hits[0].start_index - 10 and hits[0].window_start == 10
    assert set(hits[0].to_json()) == {"video_id", "start_index", "end_index", "start_seconds", "end_seconds", "score"}
    ex = exhaustive(index, fake, rng.normal(size=(6, DIM)), top_k=3, exclude_video_ids=["v5"])
    assert [h.video_id for h in ex] == ["v4", "v6", "v3"]
    few = search(index, fake, Embedder(SPEC, DIM), rng.normal(size=(6, DIM)), top_k=3, candidates=500, rerank=2,
                 exclude_video_ids=["v5"])
    assert fake.calls[-1] == 2 and "v5" not in [h.video_id for h in few]


# ---------------------------------------------------------------- one video, one item (#24)


def _piece(vid, feats, window_start, entry=0, label=1, split="test"):
    spans, vectors = Embedder(SPEC, DIM).windows(feats)
    return VideoEmbedding(vid, split, entry, label, window_start, feats, spans, vectors, fps=25.0)


def test_a_video_in_two_pieces_is_one_item_found_once_and_removed_whole(tmp_path):
    from vreloc_tf.search.library import describe
    from vreloc_tf.search.search import exhaustive, search

    rng = np.random.default_rng(11)
    feats = [rng.normal(size=(20, DIM)).astype(np.float32) for _ in range(5)]
    for f in feats:
        f[0, 0] = 0.0
    feats[0][0, 0] = feats[1][0, 0] = 5.0  # both pieces of "a" score best
    feats[2][0, 0] = 4.0
    pieces = [_piece("a", feats[0], 0), _piece("a", feats[1], 60, entry=1), _piece("b", feats[2], 0, entry=2),
              _piece("c", feats[3], 0, entry=3), _piece("d", feats[4], 0, entry=4)]
    index = _index(tmp_path / "ix", pieces)
    assert (index.live_videos, index.live_pieces) == (4, 5)
    info = describe(LibraryIndex.open(str(tmp_path / "ix")))
    assert (info["videos"], info["pieces"], info["windows"]) == (4, 5, index.live_windows)
    fake = FakeRelocalizer(lambda first: first)
    hits = search(index, fake, Embedder(SPEC, DIM), rng.normal(size=(6, DIM)), top_k=4, candidates=500, rerank=4)
    assert [h.video_id for h in hits][:2] == ["a", "b"] and sorted(h.video_id for h in hits) == ["a", "b", "c", "d"]
    assert fake.calls == [4]  # 4 videos re-localized, not 5 pieces
    ex = exhaustive(index, fake, rng.normal(size=(6, DIM)), top_k=5)
    assert [h.video_id for h in ex][:2] == ["a", "b"] and len(ex) == 4  # "a" once, though both pieces score 5
    second = [h for h in exhaustive(index, fake, rng.normal(size=(6, DIM)), top_k=5, exclude_video_ids=["b"])]
    assert [h.video_id for h in second][0] == "a" and "b" not in {h.video_id for h in second}
    assert index.live_spans(["a"]) == {"a": [(0, 20), (60, 80)]}
    assert index.remove(["a"]) == 2  # every piece
    again = LibraryIndex.open(str(tmp_path / "ix"))
    assert (again.live_videos, again.live_pieces) == (3, 3) and "a" not in again.live_video_ids()
    again.append([_piece("b", feats[0], 100, entry=9)])  # one more piece of a video already there
    assert (again.live_videos, again.live_pieces) == (3, 4)


def test_frame_level_relocalizer_is_the_baseline_with_its_mean_similarity():
    from vreloc_tf.evaluation.baselines import frame_level_segment, frame_level_similarity
    from vreloc_tf.contract import MAX_WINDOW
    from vreloc_tf.search.relocalize import FrameLevelRelocalizer

    rng = np.random.default_rng(12)
    reloc = FrameLevelRelocalizer(DIM)
    assert reloc.max_window == MAX_WINDOW and reloc.feature_dim == DIM and reloc.info["method"] == "frame-level"
    query = rng.normal(size=(7, DIM))
    spans = [rng.normal(size=(n, DIM)).astype(np.float32) for n in (30, 7, 4, 90)]
    start, end, score = reloc.locate(query, spans)
    for span, s, e, sc in zip(spans, start, end, score):
        assert (s, e) == frame_level_segment(query, span)
        assert sc == pytest.approx(frame_level_similarity(query, span)[s:e].mean(), abs=1e-6)
    assert reloc.locate(query, [])[0].shape == (0,)


def test_frame_level_search_finds_a_planted_clip_without_a_model(tmp_path):
    from vreloc_tf.search.library import Index
    from vreloc_tf.search.search import open_search, search

    rng = np.random.default_rng(13)
    proto = rng.normal(size=DIM).astype(np.float32) * 3  # an action: its frames alike, plus noise
    clip = proto + rng.normal(size=(12, DIM)).astype(np.float32)
    pieces = []
    for i in range(20):
        feats = rng.normal(size=(int(rng.integers(40, 90)), DIM)).astype(np.float32)
        if i == 7:
            feats[30:42] = clip
        pieces.append(_piece(f"v{i}", feats, 100, entry=i))
    LibraryIndex.create(str(tmp_path / "ix"), DIM, SPEC, DIM, None).append(pieces)
    index, reloc, embedder = open_search(Index.open(str(tmp_path / "ix")))  # no model anywhere
    assert index.relocalizer == "frame-level" and type(reloc).__name__ == "FrameLevelRelocalizer"
    query = proto + rng.normal(size=(10, DIM)).astype(np.float32)  # another instance, another length
    hits = search(index, reloc, embedder, query, top_k=3)
    assert hits[0].video_id == "v7" and 130 <= hits[0].start_index < hits[0].end_index <= 142
    assert hits[0].end_index - hits[0].start_index == 10  # frame-level: the query's length
    assert hits[0].score > 0.7 > 0.5 > hits[1].score and len({h.video_id for h in hits}) == 3
    with pytest.raises(IndexError_, match="records no model"):
        LibraryIndex.create(str(tmp_path / "ix2"), DIM, SPEC, DIM, {"run": None}, relocalizer="model")
        open_search(Index.open(str(tmp_path / "ix2")))


def _as_v1(path, pca_file=None):
    """Rewrite an index's manifest as `vreloc-search-index/1` wrote it (one piece per record, counts
    named videos, PCA as given, no re-localizer / feature spec)."""
    import json

    m = json.loads((path / "manifest.json").read_text())
    v1 = {"format": "vreloc-search-index/1", "model": {"run": "/runs/old", "model_sha256": "0" * 64},
          "feature_dim": m["feature_dim"], "pca": {"file": pca_file, "sha256": None}, "embedding": m["embedding"],
          "index": m["index"],
          "parts": [{"name": p["name"], "videos": p["pieces"], "windows": p["windows"], "steps": p["steps"],
                     "first_video": p["first_piece"], "first_window": p["first_window"]} for p in m["parts"]],
          "videos": m["pieces"], "windows": m["windows"], "removed_videos": m["removed_pieces"],
          "live_videos": m["live_pieces"], "live_windows": m["live_windows"]}
    (path / "manifest.json").write_text(json.dumps(v1))


def test_an_index_built_before_items_were_videos_still_opens_and_searches(tmp_path, monkeypatch):
    """A /1 index held one row per record (two rows for a two-instance video): it opens, counts distinct
    videos, returns the video once, reads its PCA as given (relative to the current folder) and is
    written as /2 by the next change."""
    import json

    from vreloc_tf.search.search import search

    rng = np.random.default_rng(14)
    shared = rng.normal(size=(40, DIM)).astype(np.float32)
    shared[0, 0] = 9.0
    pieces = [_piece("two", shared[:30], 0), _piece("two", shared[10:], 10, entry=1),
              _piece("one", rng.normal(size=(25, DIM)).astype(np.float32), 0, entry=2)]
    _index(tmp_path / "ix", pieces)
    _as_v1(tmp_path / "ix", pca_file="extracted/pca.npz")
    monkeypatch.chdir(tmp_path)
    old = LibraryIndex.open(str(tmp_path / "ix"))
    assert (old.live_videos, old.live_pieces, old.relocalizer, old.feature_spec) == (2, 3, "model", None)
    assert old.format_on_disk == "vreloc-search-index/1"
    assert old.pca_file == str(tmp_path / "extracted" / "pca.npz")
    fake = FakeRelocalizer(lambda first: first)
    hits = search(old, fake, Embedder(SPEC, DIM), shared[12:20], top_k=5, candidates=500)
    assert [h.video_id for h in hits] == ["two", "one"]  # the two rows of "two" are one video
    assert old.remove(["two"]) == 2
    written = json.loads((tmp_path / "ix" / "manifest.json").read_text())
    assert written["format"] == "vreloc-search-index/2" and written["live_videos"] == written["live_pieces"] == 1
    assert written["pca"]["file"] == str(tmp_path / "extracted" / "pca.npz")
    again = LibraryIndex.open(str(tmp_path / "ix"))
    assert again.live_video_ids() == {"one"} and again.format_on_disk == "vreloc-search-index/2"


def test_the_index_manifest_has_one_reader_and_writer_and_opens_without_faiss(tmp_path):
    """Index.open reads INDEX/manifest.json alone (checked, /1 upgraded in memory); write_manifest round trips
    it; LibraryIndex.load adds FAISS and the parts; a data folder or an empty folder is refused by path."""
    import json

    from helpers.records import write_manifest
    from vreloc_tf.search.library import Index, is_index_folder

    rng = np.random.default_rng(3)
    _index(tmp_path / "ix", [_piece("a", rng.normal(size=(30, DIM)).astype(np.float32), 0)])
    before = (tmp_path / "ix" / "manifest.json").read_bytes()
    index = Index.open(str(tmp_path / "ix"))
    assert (index.path, index.feature_dim, index.format_on_disk) == (str(tmp_path / "ix"), DIM, "vreloc-search-index/2")
    assert index.manifest == json.loads(before) and is_index_folder(index.path)
    index.write_manifest()
    assert (tmp_path / "ix" / "manifest.json").read_bytes() == before  # the writer is the one that wrote it
    loaded = LibraryIndex.load(index)
    assert loaded.live_videos == 1 and loaded.manifest is index.manifest
    _as_v1(tmp_path / "ix")  # an index of the old format still opens
    old = Index.open(str(tmp_path / "ix"))
    assert old.format_on_disk == "vreloc-search-index/1" and old.manifest["pieces"] == 1
    write_manifest(str(tmp_path / "data"), DIM, {"test": 1})  # a data folder's manifest.json
    assert not is_index_folder(str(tmp_path / "data")) and not is_index_folder(str(tmp_path))
    with pytest.raises(IndexError_, match=f"{tmp_path / 'data' / 'manifest.json'}: not a vreloc-search-index/2"):
        Index.open(str(tmp_path / "data"))
    with pytest.raises(IndexError_, match=f"--index {tmp_path}: not a library index .no manifest.json"):
        Index.open(str(tmp_path))


def _spec(pca_file=None, pca_sha256=None, **kw):
    from vreloc_tf.data.feature_spec import FeatureSpec

    return FeatureSpec(**{"backbone": "c3d", "feature_dim": DIM, "raw_dim": 4096, "weights_sha256": "ab" * 32,
                          "pca_file": pca_file, "pca_sha256": pca_sha256, "pca_components": DIM, **kw})


@pytest.mark.parametrize("name", ["pca.npz", "PCA_activitynet_v1-3.hdf5"])
def test_the_pca_is_copied_into_the_index_and_found_from_anywhere(tmp_path, monkeypatch, name):
    import json
    import shutil

    from vreloc_tf.data.feature_spec import FeatureMismatchError
    from vreloc_tf.files import file_sha256

    os.makedirs(tmp_path / "data")
    source = tmp_path / "data" / name
    source.write_bytes(os.urandom(300))
    spec = _spec(str(source), file_sha256(str(source)))
    _index(tmp_path / "ix", [_video(np.random.default_rng(15), "a", 10)], features=spec)
    copy = "pca.npz" if name.endswith(".npz") else "pca.hdf5"
    assert (tmp_path / "ix" / copy).read_bytes() == source.read_bytes()
    manifest = json.loads((tmp_path / "ix" / "manifest.json").read_text())
    assert manifest["pca"]["file"] == manifest["features"]["pca_file"] == copy  # relative to the index folder
    shutil.rmtree(tmp_path / "data")
    shutil.move(str(tmp_path / "ix"), str(tmp_path / "moved"))
    os.makedirs(tmp_path / "elsewhere")
    monkeypatch.chdir(tmp_path / "elsewhere")
    index = LibraryIndex.open("../moved")
    assert index.pca_file == str(tmp_path / "moved" / copy) and os.path.isfile(index.pca_file)
    assert index.feature_spec.pca_file == index.pca_file and index.feature_spec.pca_sha256 == spec.pca_sha256
    assert index.feature_spec.weights_sha256 == spec.weights_sha256
    other = tmp_path / "other.npz"
    other.write_bytes(b"another PCA")
    with pytest.raises(FeatureMismatchError, match="has sha256 .* but the data's features were made with a PCA"):
        _index(tmp_path / "ix2", features=_spec(str(other), "cd" * 32))


# ---------------------------------------------------------------- query files


def test_query_file_npy_and_clip_take_the_index_features_path(tmp_path):
    """A .npy is read as [L, D]; a video clip is made into features like the index's (vreloc/features.py)."""
    import dataclasses

    from helpers.videos import colour_video
    from pipeline.backbones import BackboneOptions
    from vreloc.features import extract, recipe_like
    from vreloc.library_search import query_features
    from vreloc_tf.data.feature_spec import FeatureMismatchError, FeatureSpec

    @dataclasses.dataclass
    class Index:  # what query_features reads of a LibraryIndex
        path: str
        feature_spec: object
        pca_file: object = None

    np.save(tmp_path / "q.npy", np.ones((4, DIM), np.float64))
    got = query_features(str(tmp_path / "q.npy"), Index("idx", None))
    assert got.dtype == np.float32 and got.shape == (4, DIM)
    np.save(tmp_path / "bad.npy", np.ones(3))
    with pytest.raises(InputError, match="expected features"):
        query_features(str(tmp_path / "bad.npy"), Index("idx", None))
    clip = colour_video(str(tmp_path / "clip.mp4"), 48, 25.0, seed=0)
    with pytest.raises(InputError, match="does not record how its features were made"):
        query_features(clip, Index("idx", None))  # an index from before feature specs, and no flags
    spec = FeatureSpec(backbone="c3d", feature_dim=4096, raw_dim=4096, random_seed=0, frames_per_feature=16,
                       mean="per-channel BGR mean (104, 117, 128)")
    feats = query_features(clip, Index("idx", spec))  # the index names its backbone: no flags needed
    want, _ = extract(recipe_like(None, "flags", BackboneOptions(random_seed=0)), clip)
    np.testing.assert_array_equal(feats, want)
    assert feats.shape == (3, 4096)
    with pytest.raises(FeatureMismatchError, match="RANDOM .seed 0. vs RANDOM .seed 1."):
        query_features(clip, Index("idx", spec), BackboneOptions(random_seed=1))


def test_search_modules_keep_the_layering():
    """vreloc_tf.search imports no application, pipeline or serving code; the job and the service
    import the library only (ARCHITECTURE.md, 'Four packages, one direction')."""
    import ast
    import glob

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    forbidden = {"vreloc_tf/search": ("vreloc", "pipeline", "serving"), "pipeline/build_index.py": ("vreloc", "serving"),
                 "serving/search_servable.py": ("vreloc", "pipeline")}
    for where, banned in forbidden.items():
        files = glob.glob(os.path.join(root, where, "*.py")) if where.endswith("search") else [os.path.join(root, where)]
        assert files
        for path in files:
            for node in ast.walk(ast.parse(open(path).read())):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                for name in names:
                    assert name.split(".")[0] not in banned, f"{path} imports {name}"
