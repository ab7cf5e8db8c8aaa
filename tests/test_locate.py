"""`vreloc locate` finds a clip cut from real footage and inserted into other real footage."""
import json

import numpy as np
import pytest
from PIL import Image

from pipeline.backbones import BackboneOptions
from pipeline.footage import packaged_sample_video, write_video
from pipeline.video import read_frames
from vreloc import cli
from vreloc.locate import LocateError, locate, search, windows
from vreloc_tf.evaluation.metrics import temporal_iou

H, W = 144, 176
RANDOM = BackboneOptions(random_seed=0)  # C3D with seeded random weights (the features are meaningless)


def _resized(frames):
    return np.stack([np.asarray(Image.fromarray(f).resize((W, H), Image.BILINEAR)) for f in frames])


@pytest.fixture(scope="module")
def spliced(tmp_path_factory):
    """query = 48 frames of carphone; reference = bikes footage with that clip inserted at frame 64."""
    folder = tmp_path_factory.mktemp("locate")
    phone = read_frames(packaged_sample_video("carphone_pristine.mp4"))
    bikes = _resized(read_frames(packaged_sample_video("bikes.mp4"), 0, 170))
    clip = phone[32:80]
    reference = np.concatenate([bikes[:64], clip, bikes[100:164]])
    q = write_video(str(folder / "query.mp4"), clip, fps=29.97)
    r = write_video(str(folder / "reference.mp4"), reference, fps=29.97)
    return folder, q, r, (64 // 16, (64 + 48) // 16)


def test_frame_level_finds_the_inserted_clip(spliced, capsys):
    folder, q, r, (g0, g1) = spliced
    out_json, out_png = folder / "answer.json", folder / "timeline.png"
    code = cli.main(["locate", "--query", q, "--reference", r, "--method", "frame-level", "--random-weights",
                     "--json", str(out_json), "--plot", str(out_png)])
    assert code == 0
    answer = json.loads(out_json.read_text())
    iou = temporal_iou(np.array([answer["start_index"]]), np.array([answer["end_index"]]),
                       np.array([g0]), np.array([g1]))[0]
    assert iou >= 0.5, (answer, (g0, g1))
    sec = 16 / 29.97
    assert answer["start_seconds"] == pytest.approx(answer["start_index"] * sec, abs=1e-3)
    assert answer["end_seconds"] == pytest.approx(answer["end_index"] * sec, abs=1e-3)
    assert out_png.stat().st_size > 10_000
    assert "found in reference.mp4" in capsys.readouterr().out


def test_clear_errors(spliced, tmp_path):
    folder, q, r, _ = spliced
    with pytest.raises(LocateError, match="longer than the reference"):
        locate(r, q, method="frame-level", backbone=RANDOM)
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00not a video" * 100)
    with pytest.raises(LocateError, match="broken.mp4.*unreadable"):
        locate(str(bad), r, method="frame-level", backbone=RANDOM)
    with pytest.raises(LocateError, match="no such file"):
        locate(str(tmp_path / "missing.mp4"), r, method="frame-level", backbone=RANDOM)
    with pytest.raises(LocateError, match="needs a backbone: give --weights"):
        locate(q, r, method="frame-level")


def test_windows_cover_long_references_and_search_takes_the_best():
    for length, window in [(5, 300), (300, 300), (301, 300), (1000, 300), (999, 64)]:
        ws = windows(length, window)
        covered = np.zeros(length, bool)
        for a, b in ws:
            assert 0 <= a < b <= length and b - a <= window
            covered[a:b] = True
        assert covered.all()
    # a matcher that scores windows by how much of a planted target they contain
    target = (700, 710)

    def match(query, ref_window):
        sims = ref_window[:, 0]
        s = int(np.argmax(sims))
        return s, s + len(query), float(sims[s]), np.zeros((len(ref_window), 4), np.float32)

    reference = np.zeros((1000, 1), np.float32)
    reference[target[0]:target[1], 0] = np.linspace(1, 2, 10)[::-1]
    s, e, score, curves = search(match, np.zeros((10, 1), np.float32), reference, window=300)
    assert (s, e) == (700, 710) and score == pytest.approx(2.0) and curves.shape == (1000, 4)


@pytest.fixture()
def cached_features(monkeypatch):
    """The real vreloc.features.extract, computed once per (file, PCA) for the model tests below."""
    import vreloc.features as features

    real, cache = features.extract, {}

    def cached(recipe, path, start=None, end=None, desc=None, pca=None):
        key = (path, recipe.options, None if pca is None else pca.components.tobytes())
        if key not in cache:
            cache[key] = real(recipe, path, start, end, desc, pca)
        return cache[key]

    monkeypatch.setattr(features, "extract", cached)
    return cache


def test_model_paths_agree_and_pca_travels_with_the_export(spliced, tmp_path, cached_features):
    from pipeline.pca import PCA
    from serving.export import export_model
    from helpers.runs import FEATURE_DIM, make_run
    from vreloc_tf.data.artifacts import Run, RunManifest

    folder, q, r, _ = spliced
    # A run whose training features were fc7 reduced by a PCA to the model's dim (a random orthonormal
    # projection: what is tested is that it travels, not how it was fitted; fitting a 4,096-d PCA takes 14 s).
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(4096, FEATURE_DIM)))[0].T
    pca = PCA(mean=rng.normal(size=4096), components=basis, explained_variance=np.linspace(2.0, 1.0, FEATURE_DIM))
    run = str(tmp_path / "run")
    import shutil

    shutil.copytree(make_run(0, "full"), run)
    pca.save(str(tmp_path / "pca.npz"))
    manifest = RunManifest.read(run)
    manifest.pca_file = str(tmp_path / "pca.npz")
    manifest.write(run)
    base = str(tmp_path / "serving" / "vreloc")
    export_model(Run.open(run), base, jit_compile=False)  # what travels with the export, not XLA
    assert (tmp_path / "serving" / "vreloc" / "1" / "assets.extra" / "pca.npz").exists()

    from_run = locate(q, r, model=run, backbone=RANDOM)
    from_export = locate(q, r, model=base, backbone=RANDOM)
    assert (from_run.start_index, from_run.end_index) == (from_export.start_index, from_export.end_index)
    assert from_run.score == pytest.approx(from_export.score, rel=1e-4)
    assert 0 <= from_run.start_index < from_run.end_index <= from_run.reference_features

    # Without the PCA the 4,096-d fc7 features do not fit the model: a clear error.
    manifest.pca_file = None
    manifest.write(run)
    with pytest.raises(LocateError, match="4096-d but the model takes 8-d.*--pca"):
        locate(q, r, model=run, backbone=RANDOM)


def test_the_window_is_the_model_configs_max_window(tmp_path):
    """locate cuts long references into windows of the run config's data.max_window (the export records it)."""
    import shutil

    from helpers.runs import make_run
    from serving.export import export_model
    from vreloc.locate import frame_level_matcher, keras_run_matcher, saved_model_matcher
    from vreloc_tf.data.artifacts import CONFIG_FILE, Export, Run
    from vreloc_tf.config import save_config
    from vreloc_tf.contract import MAX_WINDOW

    run = str(tmp_path / "run")
    shutil.copytree(make_run(0), run)
    cfg = Run.open(run).config
    cfg.data.max_window = 16
    save_config(cfg, str(tmp_path / "run" / CONFIG_FILE))
    assert keras_run_matcher(Run.open(run)).window == 16
    export = export_model(Run.open(run), str(tmp_path / "serving" / "vreloc"))
    assert saved_model_matcher(export).window == 16 == export.info.max_window
    assert saved_model_matcher(Export.open(export.base_path)).window == 16  # as `locate --model BASE` opens it
    assert frame_level_matcher().window == MAX_WINDOW
