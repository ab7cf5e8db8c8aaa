"""`vreloc pipeline run` end to end on tiny settings: stages, manifests, caching, --force, serving check."""
import json
import os

import pytest

from vreloc import cli
from vreloc_tf.errors import InputError

FAST = ["--set", "train.steps=4", "--set", "train.validate_every=2", "--set", "train.checkpoint_every=2",
        "--set", "train.batch_size=8", "--set", "train.validation_pairs=16"]
SMOKE = ["--geometry", "smoke"]  # synthetic data of a few dozen videos (docs/DATA.md)


def _stage(workdir, name):
    with open(os.path.join(workdir, name, "stage.json")) as fh:
        return json.load(fh)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("pipeline") / "run")
    code = cli.main(["pipeline", "run", "--workdir", workdir, *SMOKE, *FAST])
    return workdir, code


def test_every_stage_runs_and_writes_its_manifest(first_run, capsys):
    workdir, code = first_run
    assert code == 0
    for name in ("featuregen", "trainer", "evaluator", "pusher"):
        doc = _stage(workdir, name)
        assert doc["status"] == "done" and doc["code_version"] and doc["config_hash"]
        assert doc["seconds"] >= 0 and doc["fingerprint"]
    featuregen = _stage(workdir, "featuregen")
    assert featuregen["inputs"]["geometry"] == "smoke"
    assert {s: c["written"] for s, c in featuregen["outputs"]["splits"].items()} == {"train": 48, "val": 21, "test": 18}
    ev = _stage(workdir, "evaluator")["outputs"]
    for split in ("val", "test"):
        rows = ev["results"][split]  # keyed by method id: blessing picks rows by name, never by position
        assert list(rows) == ["model:full", "model:weak", "baseline:random", "baseline:prior",
                              "baseline:frame-level", "baseline:window-match", "baseline:query-free"]
        assert [r["method"] for r in rows.values()] == ["ours full", "ours weak", "Random", "Stat. prior",
                                                        "FL Baseline", "Window matcher", "query-free"]
        assert all(r["split"] == split for r in rows.values())
        saved = json.load(open(os.path.join(workdir, "evaluator", f"results_{split}.json")))
        assert saved == rows
        assert "FL Baseline" in open(os.path.join(workdir, "evaluator", f"table_{split}.txt")).read()
    for mode, verdict in ev["blessing"].items():
        assert verdict["val_average"] == ev["results"]["val"][f"model:{mode}"]["average"]
        assert verdict["frame_level_val_average"] == ev["results"]["val"]["baseline:frame-level"]["average"]
        assert verdict["blessed"] == (verdict["val_average"] > verdict["frame_level_val_average"])
    for mode, png in ev["figures"].items():
        assert os.path.getsize(png) > 20_000, png
    # Pusher exported exactly the blessed models.
    pushed = _stage(workdir, "pusher")["outputs"]["pushed"]
    assert set(pushed) == {m for m, b in ev["blessing"].items() if b["blessed"]}
    for mode, info in pushed.items():
        assert os.path.exists(os.path.join(info["base_path"], str(info["version"]), "saved_model.pb"))
        assert info["path"] == os.path.join(info["base_path"], str(info["version"]))
        assert info["model_name"] == f"vreloc_{mode}"


@pytest.mark.parametrize("flags", [["--geometry", "smoke"], ["--family", "shots"]])
def test_synthetic_data_flags_with_a_data_folder_are_refused_not_ignored(tmp_path, capsys, flags):
    workdir = str(tmp_path / "run")
    assert cli.main(["pipeline", "run", "--workdir", workdir, "--data", str(tmp_path), *flags]) == 2
    assert "--family/--geometry describe generated data (--data synth)" in capsys.readouterr().err
    assert not os.path.exists(workdir)  # refused before anything was written


class _Counts:
    def __init__(self, ok):
        self.ok = ok

    def reconciles(self):
        return self.ok


def _fake_feature_jobs(monkeypatch, calls, reconciles=True):
    """synth.generate and ingest-activitynet replaced by recorders (no Beam, no data)."""
    from pipeline import ingest_activitynet, synth

    def generate(out, **kw):
        calls.append(("generate", out, kw))
        os.makedirs(out, exist_ok=True)
        open(os.path.join(out, synth.HDF5_NAME), "w").close()

    def ingest(hdf5, src, out, **kw):
        calls.append(("ingest", out))
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "manifest.json"), "w") as fh:
            json.dump({"feature_dim": 7, "splits": {}}, fh)
        return {"train": _Counts(True), "test": _Counts(reconciles)}

    monkeypatch.setattr(synth, "generate", generate)
    monkeypatch.setattr(ingest_activitynet, "run", ingest)


def test_featuregen_takes_a_seed_dim_and_benchmark_splits_of_its_own(tmp_path, monkeypatch):
    """What `vreloc quality` needs of the feature stage: its data seed (not cfg.seed), its dim, the
    benchmark's split files, and its own name for the data folder; counts that do not reconcile fail."""
    from vreloc.orchestrator import FeatureSource, StageFailed, featuregen
    from vreloc_tf.config import load_config

    calls = []
    _fake_feature_jobs(monkeypatch, calls)
    splits = str(tmp_path / "splits")
    source = FeatureSource(family="substates", geometry="benchmark", seed=20261207, dim=32, splits=splits)
    dataset = featuregen(str(tmp_path / "f"), None, source, data_name="tfrecords")
    assert dataset.path == str(tmp_path / "f" / "tfrecords")
    assert calls == [("generate", str(tmp_path / "f" / "raw"),
                      {"seed": 20261207, "dim": 32, "lengths": os.path.join(splits, "length.json"),
                       "splits_dir": splits, "family": "substates"}),
                     ("ingest", str(tmp_path / "f" / "tfrecords"))]
    calls.clear()  # without seed/dim: the config's, as before
    featuregen(str(tmp_path / "g"), load_config("tiny", ["seed=5"]), FeatureSource(geometry="smoke"))
    assert calls[0] == ("generate", str(tmp_path / "g" / "raw"),
                        {"seed": 5, "dim": 32, "family": "demo", "geometry": "smoke"})
    _fake_feature_jobs(monkeypatch, calls, reconciles=False)
    with pytest.raises(StageFailed, match=r"ingest-activitynet: read != written \+ dead-lettered for \['test'\]"):
        featuregen(str(tmp_path / "h"), None, FeatureSource(seed=1, dim=8))


def test_feature_source_checks_the_benchmark_geometry_and_keeps_old_fingerprints(tmp_path):
    from vreloc.orchestrator import FeatureSource

    with pytest.raises(InputError, match="the benchmark geometry needs --benchmark-splits DIR"):
        FeatureSource(geometry="benchmark")
    with pytest.raises(InputError, match="split files are the benchmark geometry's"):
        FeatureSource(geometry="smoke", splits=str(tmp_path))
    with pytest.raises(InputError, match="describe generated data"):
        FeatureSource(str(tmp_path), seed=3)
    # a work folder made before seed/dim/splits existed keeps its featuregen fingerprint
    assert FeatureSource(geometry="smoke").fingerprint() == {
        "data": "synth", "family": "demo", "geometry": "smoke", "source": None, "c3d": None, "random_c3d": False}
    assert FeatureSource(seed=3, dim=16).fingerprint()["seed"] == 3


@pytest.mark.slow  # 30-110 s on 2 cores: in `make test-slow` to keep `make test` near 15 min
def test_rerun_skips_unchanged_stages_and_force_reruns(first_run, capsys):
    workdir, _ = first_run
    before = {n: _stage(workdir, n)["finished"] for n in ("featuregen", "trainer", "evaluator", "pusher")}
    assert cli.main(["pipeline", "run", "--workdir", workdir, *SMOKE, *FAST, "--no-serve-check"]) == 0
    out = capsys.readouterr().out
    for name in ("featuregen", "trainer", "evaluator", "pusher"):
        assert f"[{name}] skipped" in out
        assert _stage(workdir, name)["finished"] == before[name]
    assert cli.main(["pipeline", "run", "--workdir", workdir, *SMOKE, *FAST, "--no-serve-check",
                     "--force", "evaluator"]) == 0
    out = capsys.readouterr().out
    assert "[featuregen] skipped" in out and "[trainer] skipped" in out
    assert "[evaluator] done" in out and "[pusher] done" in out  # the evaluation changed, so push again


@pytest.mark.slow  # 30-110 s on 2 cores: in `make test-slow` to keep `make test` near 15 min
def test_config_change_reruns_training_not_features(first_run, capsys):
    workdir, _ = first_run
    assert cli.main(["pipeline", "run", "--workdir", workdir, *SMOKE, *FAST, "--set", "loss.alpha=0.5",
                     "--no-serve-check"]) == 0
    out = capsys.readouterr().out
    assert "[featuregen] skipped" in out and "[trainer] done" in out


@pytest.mark.slow  # 30-110 s on 2 cores: in `make test-slow` to keep `make test` near 15 min
def test_serve_check_answered_over_grpc(first_run, capsys):
    workdir, _ = first_run
    if not _stage(workdir, "pusher")["outputs"]["pushed"]:
        # Nothing blessed at 4 steps is a legitimate outcome; then the check says so.
        assert cli.main(["pipeline", "run", "--workdir", workdir, *SMOKE, *FAST]) == 0
        assert "no blessed model was pushed" in capsys.readouterr().out
        return
    assert cli.main(["pipeline", "run", "--workdir", workdir, *SMOKE, *FAST]) == 0
    out = capsys.readouterr().out
    assert "querying with the stock gRPC client" in out and "score" in out and "server stopped (exit 0)" in out
    assert "Results on test (mAP@1, %):" in out and "FL Baseline" in out


@pytest.mark.slow  # 30-110 s on 2 cores: in `make test-slow` to keep `make test` near 15 min
def test_a_folder_of_videos_goes_through_extract_video(tmp_path, capsys):
    """--data DIR with annotations.json + videos/: FeatureGen runs extract-video (PCA to the config's dim)."""
    from helpers.videos import colour_video

    src = tmp_path / "mine"
    (src / "videos").mkdir(parents=True)
    database = {}
    plan = [("train", "Jump"), ("train", "Jump"), ("train", "Run"), ("train", "Run"),
            ("validation", "Swim"), ("validation", "Swim"), ("testing", "Climb"), ("testing", "Climb")]
    for i, (subset, label) in enumerate(plan):
        colour_video(src / "videos" / f"vid{i}.mkv", 64, 25.0, i)  # 4 clips of 16 frames, 2.56 s
        database[f"vid{i}"] = {"subset": subset, "duration": 2.56,
                               "annotations": [{"segment": [0.7, 1.9], "label": label}]}
    (src / "annotations.json").write_text(json.dumps({"database": database}))
    workdir = str(tmp_path / "run")
    args = ["pipeline", "run", "--workdir", workdir, "--data", str(src), *FAST, "--set", "data.feature_dim=6",
            "--no-serve-check"]
    assert cli.main(args) == 2  # raw videos need backbone weights: a clear one-line error, not a guess
    assert "--weights" in capsys.readouterr().err
    assert cli.main(args + ["--random-weights"]) == 0
    from vreloc_tf.data.manifest import DataManifest

    manifest = DataManifest.read(os.path.join(workdir, "featuregen", "data")).to_json()
    pca_file = os.path.join(workdir, "featuregen", "data", manifest["pca_file"])  # relative to the data folder
    assert manifest["feature_dim"] == 6 and os.path.exists(pca_file) and manifest["features"]["backbone"] == "c3d"
    assert {s: c["written"] for s, c in manifest["splits"].items()} == {"train": 4, "val": 2, "test": 2}
    run = json.load(open(os.path.join(workdir, "trainer", "full", "run.json")))
    assert run["feature_dim"] == 6 and run["pca_file"] == os.path.abspath(pca_file)
    assert run["features"]["pca_sha256"] == manifest["features"]["pca_sha256"]
    assert _stage(workdir, "evaluator")["status"] == "done"
