"""extract-video: annotated tiny videos -> C3D (random weights) -> PCA fitted in the job -> records; dead letters.

Videos without annotated instances become whole-video entries of split ``library``; the plain
folder (no annotations) and the CLIP backbone are in tests/test_your_videos.py."""
import glob
import json
import math
import os

import numpy as np
import pytest

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from helpers.videos import colour_video
from pipeline import extract_video as ev, staged_sink
from pipeline.backbones import BackboneOptions
from pipeline.pca import PCA
from vreloc_tf.data.manifest import DataManifest
from vreloc_tf.data.schema import read_records

DIRECT = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]
RANDOM = BackboneOptions(random_seed=0)  # C3D with seeded random weights


# --------------------------------------------------------------------------- pure rules


def test_segment_to_features_matches_overlap_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(500):
        fps = float(rng.choice([23.976, 25.0, 29.97, 30.0, 59.94, 12.5]))
        n = int(rng.integers(1, 60))
        s = float(rng.uniform(0, n * 16 / fps))
        e = s + float(rng.uniform(0.01, 8))
        # features whose time span [16k/fps, 16(k+1)/fps) overlaps [s, e)
        hits = [k for k in range(n) if 16 * k / fps < e and 16 * (k + 1) / fps > s]
        start, end = ev.segment_to_features((s, e), fps, n)
        if hits:
            assert (start, end) == (hits[0], hits[-1] + 1)
        else:
            assert end <= start


def test_window_around_contains_and_centres_the_instance():
    rng = np.random.default_rng(1)
    for _ in range(500):
        n = int(rng.integers(1, 1200))
        start = int(rng.integers(0, n))
        end = int(rng.integers(start + 1, min(n, start + 300) + 1))
        lo, hi = ev.window_around(start, end, n)
        assert 0 <= lo <= start < end <= hi <= n and hi - lo == min(n, 300)
        if n > 300 and 0 < lo and hi < n:
            assert abs((start - lo) - (hi - end)) <= 1


# --------------------------------------------------------------------------- transforms


def task(vid, split, segments, path="p.mkv"):
    return ev.VideoTask(path, vid, split, tuple(ev.Instance(i, 3, "L", seg) for i, seg in enumerate(segments)))


def test_fit_pca_transform_equals_numpy_over_training_videos():
    rng = np.random.default_rng(2)
    videos = [ev.VideoFeatures(task(f"v{i}", "train" if i < 4 else "val", []), rng.standard_normal((5 + i, 6)), 25.0, 80)
              for i in range(6)]
    train = np.concatenate([v.features for v in videos[:4]])
    mean = train.mean(0)
    _, s, vt = np.linalg.svd(train - mean, full_matrices=False)

    def check(pca):
        np.testing.assert_allclose(pca.mean, mean, atol=1e-12)
        np.testing.assert_allclose(pca.explained_variance[:3], (s ** 2 / (len(train) - 1))[:3], rtol=1e-9)
        np.testing.assert_allclose(np.abs(np.sum(pca.components * vt[:3], axis=1)), 1.0, atol=1e-9)
        return True

    with TestPipeline(options=PipelineOptions(DIRECT)) as p:
        pca = p | beam.Create(videos, reshuffle=False) | ev.FitPCA(3)
        assert_that(pca | beam.Map(check), equal_to([True]))


def test_to_records_windows_ground_truth_and_dead_letters():
    rng = np.random.default_rng(3)
    pca = PCA(mean=rng.standard_normal(6), components=np.linalg.qr(rng.standard_normal((6, 6)))[0][:4],
              explained_variance=np.ones(4))
    feats = rng.standard_normal((10, 6)).astype(np.float32)
    fps = 20.0  # one feature = 0.8 s
    video = ev.VideoFeatures(task("v", "train", [(0.9, 2.3), (7.5, 9.0), (9.0, 12.0), (3.0, 2.0)]), feats, fps, 200)
    reduced = pca.transform(feats)
    with TestPipeline(options=PipelineOptions(DIRECT)) as p:
        out = (p | beam.Create([video]) | beam.ParDo(ev.ToRecordsFn(), pca=beam.pvalue.AsSingleton(p | "pca" >> beam.Create([pca])))
               .with_outputs(staged_sink.DEAD_LETTER))
        records, dead = staged_sink.split_dead_letters(out, "t")
        assert_that(records | beam.Map(lambda r: (r.entry_index, r.window, r.groundtruth, r.fps, r.features.tobytes())),
                    equal_to([(0, (0, 10), (1, 3), 20.0, reduced.tobytes()),
                              (1, (0, 10), (9, 10), 20.0, reduced.tobytes())]), label="records")
        assert_that(dead | beam.Map(lambda d: (d.entry_index, d.reason.split(" s ")[-1].split(" is ")[-1])),
                    equal_to([(2, "lies outside the video's 10 whole 16-frame clips"),
                              (3, "not a [start, end] pair of seconds with end > start")]), label="dead")


def test_plan_tasks_ids_splits_and_indices(tmp_path):
    db = {"a": {"subset": "training", "annotations": [{"segment": [0, 1], "label": "X"}, {"segment": [1, 2], "label": "Y"}]},
          "b": {"subset": "validation", "annotations": [{"segment": [0, 1], "label": "X"}]},
          "c": {"subset": "training", "annotations": [{"segment": [0, 1], "label": "Y"}, {"segment": "x", "label": "Y"}]},
          "t": {"subset": "testing", "annotations": []}}
    tasks = ev.plan_tasks(["d/v_c.mp4", "d/a.mkv", "d/b.avi", "d/zz.mp4", "d/t.mp4", "e/zz.mkv"], db, {"X": 0, "Y": 1})
    got = {(t.video_id, t.path): (t.split, [(i.entry_index, i.label) for i in t.instances], t.problem) for t in tasks}
    assert got == {("a", "d/a.mkv"): ("train", [(0, 0), (1, 1)], ""), ("c", "d/v_c.mp4"): ("train", [(2, 1), (3, 1)], ""),
                   ("b", "d/b.avi"): ("val", [(0, 0)], ""),
                   # no instances, or not in the file: one whole-video library entry each
                   ("t", "d/t.mp4"): ("library", [(0, -1)], ""), ("zz", "d/zz.mp4"): ("library", [(1, -1)], ""),
                   ("zz", "e/zz.mkv"): ("library", [(2, -1)], "duplicate video id 'zz' (also d/zz.mp4)")}
    assert ev.read_counts_of(tasks) == {"train": 4, "val": 1, "library": 3}
    c = next(t for t in tasks if t.video_id == "c")
    assert c.instances[0].segment == (0.0, 1.0) and all(math.isnan(v) for v in c.instances[1].segment)
    assert next(t for t in tasks if t.video_id == "t").instances[0].segment is None
    assert [(t.number, t.total) for t in tasks] == [(i, 6) for i in range(1, 7)]
    plain = ev.plan_tasks(["d/b.mp4", "d/a.mp4"], {}, {})  # no annotation file: everything is library
    assert [(t.video_id, t.split, t.instances[0].entry_index) for t in plain] == [("a", "library", 0), ("b", "library", 1)]


# --------------------------------------------------------------------------- end to end


def annotations(video_folder):
    return str(video_folder.parent / f"{video_folder.name}-ann.json")


@pytest.fixture(scope="module")
def video_folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    colour_video(d / "v_aaa.mkv", 48, 25.0, 0)   # train, 3 clips
    colour_video(d / "bbb.mkv", 40, 20.0, 1)     # train, 2 clips (another fps)
    colour_video(d / "ccc.mkv", 32, 25.0, 2)     # val, 2 clips
    colour_video(d / "short.mkv", 10, 25.0, 3)   # train, 10 frames: dead letter
    (d / "broken.mp4").write_bytes(np.random.default_rng(4).bytes(3000))  # corrupt: dead letter
    colour_video(d / "stray.mkv", 32, 25.0, 5)   # not annotated: a library entry
    colour_video(d / "ttt.mkv", 32, 25.0, 6)     # testing subset, no instances: a library entry
    ann = {"taxonomy": [{"nodeId": 11, "nodeName": "Jump", "parentId": 1}, {"nodeId": 12, "nodeName": "Run", "parentId": 1}],
           "database": {
               "aaa": {"subset": "training", "duration": 1.92, "annotations": [
                   {"segment": [0.3, 1.2], "label": "Jump"}, {"segment": [1.0, 1.9], "label": "Run"},
                   {"segment": [5.0, 6.0], "label": "Jump"}]},
               "bbb": {"subset": "training", "duration": 2.0, "annotations": [{"segment": [0.0, 0.5], "label": "Run"}]},
               "ccc": {"subset": "validation", "duration": 1.28, "annotations": [{"segment": [0.2, 0.9], "label": "Jump"}]},
               "short": {"subset": "training", "duration": 0.4, "annotations": [{"segment": [0.0, 0.2], "label": "Jump"}]},
               "broken": {"subset": "training", "duration": 1.0, "annotations": [{"segment": [0.0, 1.0], "label": "Run"}]},
               "ttt": {"subset": "testing", "duration": 1.28, "annotations": []}}}
    (d.parent / f"{d.name}-ann.json").write_text(json.dumps(ann))  # beside the folder: the glob is the whole folder
    return d


def test_decode_and_extract_routes_unreadable_and_short_videos_to_dead_letters(video_folder):
    """Bad files never reach the C3D forward pass; every instance of a bad video gets the reason."""
    tasks = [task("broken", "train", [(0, 1), (1, 2)], str(video_folder / "broken.mp4")),
             task("short", "val", [(0, 0.2)], str(video_folder / "short.mkv")),
             ev.VideoTask(str(video_folder / "stray.mkv"), "stray", "library",
                          (ev.Instance(0, -1, "", None),), "duplicate video id 'stray' (also x.mkv)")]
    with TestPipeline(options=PipelineOptions(DIRECT)) as p:
        out = (p | beam.Create(tasks) | beam.ParDo(ev.ExtractFeaturesFn(RANDOM)).with_outputs(staged_sink.DEAD_LETTER))
        videos, dead = staged_sink.split_dead_letters(out, "x")
        assert_that(videos, equal_to([]), label="videos")
        assert_that(dead | beam.Map(lambda d: (d.split, d.entry_index, d.reason.split(" (")[0], d.entry["segment"])),
                    equal_to([("train", 0, "unreadable video file", [0, 1]), ("train", 1, "unreadable video file", [1, 2]),
                              ("val", 0, "video has 10 frames, fewer than one 16-frame clip", [0, 0.2]),
                              ("library", 0, "duplicate video id 'stray'", None)]), label="dead")


@pytest.fixture(scope="module")
def reference_fc7(video_folder):
    """fc7 of the decodable videos through the same random C3D, computed outside Beam."""
    from pipeline.c3d import C3DExtractor

    extractor = C3DExtractor.random(seed=0, batch_size=8)
    return {vid: extractor.extract_video(str(video_folder / name))
            for vid, name in [("aaa", "v_aaa.mkv"), ("bbb", "bbb.mkv"), ("ccc", "ccc.mkv")]}


@pytest.fixture(scope="module")
def job_output(video_folder, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("out"))
    summary = ev.run(str(video_folder / "*"), out, annotations(video_folder), RANDOM, runner="DirectRunner",
                     beam_args=DIRECT)
    return out, summary.counts


def test_counts_reconcile_and_every_bad_input_is_dead_lettered_with_its_reason(job_output, video_folder):
    out, counts = job_output
    assert counts == {"train": staged_sink.SplitCounts(6, 3, 3), "val": staged_sink.SplitCounts(1, 1, 0),
                      "library": staged_sink.SplitCounts(2, 2, 0)}
    dead = {}
    for f in glob.glob(os.path.join(out, "dead_letter", "*.jsonl")):
        for line in open(f):
            d = json.loads(line)
            dead[os.path.basename(d["source"])] = dead.get(os.path.basename(d["source"]), []) + [d["reason"]]
    assert set(dead) == {"v_aaa.mkv", "short.mkv", "broken.mp4"}
    assert dead["short.mkv"] == ["video has 10 frames, fewer than one 16-frame clip"]
    assert dead["broken.mp4"][0].startswith("unreadable video file")
    assert dead["v_aaa.mkv"] == ["segment [5.0, 6.0] s lies outside the video's 3 whole 16-frame clips"]
    m = DataManifest.read(out).to_json()
    assert "unassigned" not in m and set(m["splits"]) == {"train", "val", "library"}
    # relative to the data folder, so the folder can move; Dataset resolves it (read by vreloc train)
    assert m["pca_file"] == "pca.npz" and os.path.exists(os.path.join(out, "pca.npz"))
    from vreloc_tf.data.artifacts import Dataset

    assert Dataset.open(out).pca_file == os.path.join(os.path.abspath(out), "pca.npz")
    assert not [p for p in os.listdir(out) if p.startswith((".staging", "beam-temp"))]


def test_pca_fitted_in_the_job_equals_numpy_and_records_are_its_projection(job_output, reference_fc7):
    out, _ = job_output
    pca = PCA.load(os.path.join(out, "pca.npz"))
    train = np.concatenate([reference_fc7["aaa"][0], reference_fc7["bbb"][0]]).astype(np.float64)  # 5 clips
    assert pca.components.shape == (500, 4096)
    mean = train.mean(0)
    _, s, vt = np.linalg.svd(train - mean, full_matrices=False)
    np.testing.assert_allclose(pca.mean, mean, rtol=1e-5, atol=1e-6)
    rank = 4  # 5 clips, centred
    np.testing.assert_allclose(pca.explained_variance[:rank], s[:rank] ** 2 / 4, rtol=1e-4)
    np.testing.assert_allclose(np.abs(np.sum(pca.components[:rank] * vt[:rank], axis=1)), 1.0, atol=1e-5)
    assert not pca.components[rank:].any() and not pca.explained_variance[rank:].any()

    # seconds -> features with each video's real fps: aaa at 25 fps (0.64 s per feature), bbb at 20 fps (0.8 s)
    want = {("train", "aaa", 11): ((0, 3), (0, 2)), ("train", "aaa", 12): ((0, 3), (1, 3)),
            ("train", "bbb", 12): ((0, 2), (0, 1)), ("val", "ccc", 11): ((0, 2), (0, 2))}
    got = {}
    for split in ("train", "val"):
        for r in read_records(out, split):
            got[(split, r.video_id, r.label)] = (r.window, r.groundtruth)
            fc7, info = reference_fc7[r.video_id]
            assert r.fps == pytest.approx(info.fps) and r.frames_per_feature == 16
            np.testing.assert_allclose(r.features, pca.transform(fc7[r.window[0]:r.window[1]]), rtol=1e-4, atol=1e-3)
    assert got == want
    library = {r.video_id: r for r in read_records(out, "library")}  # whole videos, no label, no ground truth
    assert {v: (r.window, r.groundtruth, r.label, r.entry_index) for v, r in library.items()} == {
        "stray": ((0, 2), (-1, -1), -1, 0), "ttt": ((0, 2), (-1, -1), -1, 1)}
    m = DataManifest.read(out).to_json()
    assert m["feature_dim"] == 500 and m["frames_per_feature"] == 16 and m["fps"] is None  # 25 and 20 fps
    assert m["videos"]["bbb"]["fps"] == pytest.approx(20.0) and m["videos"]["aaa"]["n_features"] == 3
    assert m["labels"] == {"Jump": 11, "Run": 12} and "RANDOM" in m["source"]["weights"]
    spec = m["features"]
    assert (spec["backbone"], spec["random_seed"], spec["raw_dim"], spec["feature_dim"], spec["frames_per_feature"]) \
        == ("c3d", 0, 4096, 500, 16)
    from vreloc_tf.files import file_sha256

    assert spec["pca_sha256"] == file_sha256(os.path.join(out, "pca.npz")) and spec["pca_file"] == "pca.npz"


def test_saved_pca_is_reused_for_new_videos(job_output, video_folder, tmp_path):
    out, _ = job_output
    out2 = str(tmp_path / "val_only")
    counts = ev.run(str(video_folder / "ccc.mkv"), out2, annotations(video_folder), RANDOM,
                    pca=os.path.join(out, "pca.npz"), beam_args=DIRECT).counts
    assert counts == {"val": staged_sink.SplitCounts(1, 1, 0)}
    first, again = read_records(out, "val"), read_records(out2, "val")
    assert len(again) == 1 and again[0].window == first[0].window
    np.testing.assert_array_equal(again[0].features, first[0].features)
    assert not os.path.exists(os.path.join(out2, "pca.npz"))
    m2 = DataManifest.read(out2).to_json()
    assert m2["source"]["pca"] == os.path.join(out, "pca.npz") and m2["fps"] == 25.0
    assert m2["features"]["pca_sha256"] == DataManifest.read(out).features["pca_sha256"]  # the same features


def test_a_rerun_with_other_videos_into_the_folder_is_refused(job_output, video_folder):
    out, _ = job_output
    before = sorted(os.listdir(out)), open(os.path.join(out, "manifest.json")).read()
    with pytest.raises(staged_sink.DatasetMixError, match=r"splits \['library', 'train'\] from another source"):
        ev.run(str(video_folder / "ccc.mkv"), out, annotations(video_folder), RANDOM,
               pca=os.path.join(out, "pca.npz"), beam_args=DIRECT)
    assert (sorted(os.listdir(out)), open(os.path.join(out, "manifest.json")).read()) == before


def test_clear_errors_before_any_work(video_folder, tmp_path):
    from vreloc_tf.errors import InputError

    ann = annotations(video_folder)
    with pytest.raises(InputError, match="exactly one of --weights .* or --random-weights"):
        ev.run(str(video_folder / "*.mkv"), str(tmp_path / "o"), ann)
    with pytest.raises(InputError, match="--weights .*missing.h5: no such file"):
        ev.run(str(video_folder / "*.mkv"), str(tmp_path / "o"), ann, BackboneOptions(weights=str(tmp_path / "missing.h5")))
    with pytest.raises(InputError, match="--annotations .*absent.json: no such file"):
        ev.run(str(video_folder / "*.mkv"), str(tmp_path / "o"), str(tmp_path / "absent.json"), RANDOM)
    with pytest.raises(InputError, match="no file matches"):
        ev.run(str(video_folder / "*.webm"), str(tmp_path / "o"), ann, RANDOM)
    with pytest.raises(InputError, match="no annotated training video to fit the PCA"):
        ev.run(str(video_folder / "ccc.mkv"), str(tmp_path / "o"), ann, RANDOM)
    with pytest.raises(InputError, match="--pca-components 5000: more than the 4096 dims"):
        ev.run(str(video_folder / "*.mkv"), str(tmp_path / "o"), ann, RANDOM, n_components=5000)
    with pytest.raises(InputError, match="--fps applies to frame backbones"):
        ev.run(str(video_folder / "*.mkv"), str(tmp_path / "o"), ann, BackboneOptions(random_seed=0, sample_fps=2))
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(InputError, match="expected an object with a 'database' mapping"):
        ev.run(str(video_folder / "*.mkv"), str(tmp_path / "o"), str(tmp_path / "bad.json"), RANDOM)
    assert not (tmp_path / "o").exists()


def test_cli_help_and_weights_choice(capsys):
    from vreloc import cli
    from vreloc.backbone_args import options_from_args

    with pytest.raises(SystemExit):
        cli.build_parser("extract-video").parse_args(["extract-video", "--help"])
    assert "--random-weights" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.build_parser("extract-video").parse_args(["extract-video", "--videos", "x", "--out", "o",
                                                      "--random-weights", "--weights", "w.h5"])
    args = cli.build_parser("extract-video").parse_args(["extract-video", "--videos", "x", "--out", "o",
                                                         "--random-weights", "--temp_location=gs://b/t"])
    assert args.random_weights and args.annotations is None and args.beam_args == ["--temp_location=gs://b/t"]
    assert options_from_args(args) == BackboneOptions(name="c3d", random_seed=0)
    args = cli.build_parser("extract-video").parse_args(["extract-video", "--videos", "x", "--out", "o",
                                                         "--backbone", "clip", "--weights", "clip_vit_base_patch32",
                                                         "--fps", "2"])
    assert options_from_args(args) == BackboneOptions(name="clip", weights="clip_vit_base_patch32", sample_fps=2.0)
