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
    ids2, _ = index.nearest_windows(q, 10, exclude_videos=[int(owners[0])])
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
    assert again.live_videos == 1 and again.live_windows == again.faiss.ntotal == b_windows
    assert again.live_video_numbers().tolist() == [1]
    ids, _ = again.nearest_windows(rng.normal(size=DIM).astype(np.float32), 50)
    assert set(again.windows(ids)["video"].tolist()) == {1}
    assert again.live_keys() == {("b", "test", 1)}
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


# ---------------------------------------------------------------- query files


def test_query_file_npy_and_clip_take_locates_feature_path(tmp_path):
    """A .npy is read as [L, D]; a video clip goes through `vreloc locate`'s extraction (same features)."""
    from helpers.videos import colour_video
    from vreloc.library_search import query_features
    from vreloc.locate import _extractor, extract_features

    np.save(tmp_path / "q.npy", np.ones((4, DIM), np.float64))
    got = query_features(str(tmp_path / "q.npy"))
    assert got.dtype == np.float32 and got.shape == (4, DIM)
    np.save(tmp_path / "bad.npy", np.ones(3))
    with pytest.raises(InputError, match="expected features"):
        query_features(str(tmp_path / "bad.npy"))
    clip = colour_video(str(tmp_path / "clip.mp4"), 48, 25.0, seed=0)
    with pytest.raises(InputError, match="--c3d-weights"):
        query_features(clip)
    feats = query_features(clip, random_c3d=True)
    want, _ = extract_features(clip, _extractor(None, 0), None)
    np.testing.assert_array_equal(feats, want)
    assert feats.shape == (3, 4096)


def test_search_modules_keep_the_layering():
    """vreloc_tf.search imports no application, pipeline or serving code; the job and the service
    import the library only (ARCHITECTURE.md, 'Four packages, one direction')."""
    import ast
    import glob

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    forbidden = {"vreloc_tf/search": ("vreloc", "pipeline", "serving"), "pipeline/build_index.py": ("vreloc", "serving"),
                 "serving/search_service.py": ("vreloc", "pipeline")}
    for where, banned in forbidden.items():
        files = glob.glob(os.path.join(root, where, "*.py")) if where.endswith("search") else [os.path.join(root, where)]
        assert files
        for path in files:
            for node in ast.walk(ast.parse(open(path).read())):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                for name in names:
                    assert name.split(".")[0] not in banned, f"{path} imports {name}"
