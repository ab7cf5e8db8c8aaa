"""Typed artifacts: a data folder, a run folder and an export open once, checked, or fail with one line."""
import dataclasses
import json
import os

import pytest

from helpers import records as F
from vreloc_tf.data.artifacts import MANIFEST_FILE, Dataset, Run, RunManifest
from vreloc_tf.config import load_config
from vreloc_tf.errors import InputError


def test_dataset_open_reads_the_manifest_and_refuses_what_is_not_a_data_folder(tmp_path):
    with pytest.raises(InputError, match="no such data folder"):
        Dataset.open(str(tmp_path / "missing"))
    with pytest.raises(InputError, match="not a data folder .no manifest.json"):
        Dataset.open(str(tmp_path))
    (tmp_path / "manifest.json").write_text("{broken")
    with pytest.raises(InputError, match="manifest.json: not a valid data manifest"):
        Dataset.open(str(tmp_path))
    (tmp_path / "manifest.json").write_text(json.dumps({"feature_dim": "32"}))
    with pytest.raises(InputError, match="no valid 'feature_dim'"):
        Dataset.open(str(tmp_path))
    F.write_manifest(str(tmp_path), 6, {"train": 3})
    data = Dataset.open(str(tmp_path))
    assert (data.path, data.feature_dim, data.frames_per_feature, data.pca_file) == (str(tmp_path), 6, 16, None)


def test_feature_dim_is_the_datas_and_the_config_only_checks_it(tmp_path):
    F.write_manifest(str(tmp_path), 6, {"train": 3})
    data = Dataset.open(str(tmp_path))
    assert data.check_feature_dim(None) == 6 == data.check_feature_dim(6)
    with pytest.raises(InputError) as err:
        data.check_feature_dim(500)
    assert str(err.value) == (f"data.feature_dim is 500 but {tmp_path} holds 6-d features; use --set "
                              f"data.feature_dim=6 (or null to take the data's)")


def test_the_source_of_a_split_is_its_own_else_the_folders_else_its_path(tmp_path):
    F.write_manifest(str(tmp_path), 4, {"train": 1, "val": 1})
    assert Dataset.open(str(tmp_path)).training_source() == {s: {"data_dir": str(tmp_path)} for s in ("train", "val")}
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["source"] = {"job": "ingest-activitynet", "features": "a.hdf5"}  # older manifests: one source
    manifest["splits"] = {"train": {"written": 1, "source": {"job": "extract-video", "videos": "v/*"}},
                          "val": {"written": 1}}  # newer ones: per split (the val entry predates it)
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    data = Dataset.open(str(tmp_path))
    assert data.source("train") == {"job": "extract-video", "videos": "v/*"}
    assert data.source("val") == {"job": "ingest-activitynet", "features": "a.hdf5"}
    assert data.splits == ("train", "val")


def test_run_open_checks_the_folder_and_round_trips(tmp_path):
    with pytest.raises(InputError, match="not a finished training run folder .no run.json.*vreloc train"):
        Run.open(str(tmp_path))
    (tmp_path / MANIFEST_FILE).write_text("[1, 2]")
    with pytest.raises(InputError, match="not a run manifest"):
        Run.open(str(tmp_path))
    cfg = load_config("tiny", ["seed=4"])
    manifest = RunManifest(data_dir="/d", feature_dim=8, supervision="full", data_source={"train": {"x": 1}})
    run = Run.create(str(tmp_path / "run"), cfg, manifest)
    again = Run.open(run.path)
    assert again.config.digest() == cfg.digest() and again.manifest == manifest
    here = os.getcwd()
    try:  # a relative path opens as an absolute one: Beam workers with another working directory load it too
        os.chdir(tmp_path)
        assert Run.open("run").path == str(tmp_path / "run") == run.path
    finally:
        os.chdir(here)
    with pytest.raises(InputError, match="no model.keras; has the run finished"):
        again.load_model()
    doc = json.loads((tmp_path / "run" / MANIFEST_FILE).read_text())
    doc["from_a_newer_version"] = True  # unknown keys are ignored, so older code reads newer runs
    (tmp_path / "run" / MANIFEST_FILE).write_text(json.dumps(doc))
    assert Run.open(run.path).manifest == manifest
    os.remove(tmp_path / "run" / "config.yaml")
    with pytest.raises(InputError, match="no config.yaml"):
        Run.open(run.path)


def test_a_run_is_scored_only_on_data_of_its_feature_dim(tmp_path):
    F.write_manifest(str(tmp_path / "d8"), 8, {})
    F.write_manifest(str(tmp_path / "d6"), 6, {})
    manifest = RunManifest(data_dir=str(tmp_path / "d8"), feature_dim=8, supervision="weak")
    run = Run.create(str(tmp_path / "run"), load_config("tiny"), manifest)
    assert run.dataset().path == str(tmp_path / "d8")
    with pytest.raises(InputError, match="d6 holds 6-d features but the run in .* was trained on 8-d"):
        run.dataset(Dataset.open(str(tmp_path / "d6")))
    assert dataclasses.replace(manifest, feature_dim=6).feature_dim == 6


# -- the data folder's manifest.json (vreloc_tf.data.manifest) --------------------------------------

def _job_manifest() -> dict:
    """A manifest as the Beam jobs wrote it before DataManifest (pipeline/staged_sink.py, by hand)."""
    source = {"job": "ingest-activitynet", "features": "/x/f.hdf5", "features_sha256": "ab" * 32}
    return {"feature_dim": 8, "frames_per_feature": 16, "fps": None, "split_files": {"train": "/x/train.json"},
            "features": None, "source": source, "created": "2026-01-02T03:04:05+00:00", "code_version": "0.9.0",
            "splits": {"train": {"read": 3, "written": 3, "dead_lettered": 0, "shards": ["train-00000-of-00001.tfrecord"],
                                 "source": source}},
            "unassigned": {"unlabelled": {"read": 1, "written": 0, "dead_lettered": 1}}}


def test_data_manifest_write_read_round_trip_and_the_bytes_of_a_job_are_unchanged(tmp_path):
    from vreloc_tf.data.manifest import DataManifest

    doc = _job_manifest()
    old_bytes = json.dumps(doc, indent=2, sort_keys=True).encode("utf-8")  # what staged_sink wrote
    (tmp_path / "manifest.json").write_bytes(old_bytes)
    manifest = DataManifest.read(str(tmp_path))
    assert manifest.to_json() == doc and manifest.encode() == old_bytes  # an old folder: the same file
    assert (manifest.feature_dim, manifest.frames_per_feature, manifest.split("train")["written"]) == (8, 16, 3)
    manifest.write(str(tmp_path / "again"))
    assert DataManifest.read(str(tmp_path / "again")) == manifest
    assert (tmp_path / "again" / "manifest.json").read_bytes() == old_bytes
    fresh = DataManifest.of_job({"feature_dim": 4, "pca_file": "pca.npz"}, {"job": "extract-video"}, {})
    assert fresh.code_version and fresh.created and fresh.fields == {"pca_file": "pca.npz"}
    assert DataManifest.from_json(json.loads(fresh.encode()), "x") == fresh


def test_data_manifest_of_older_or_hand_written_folders_opens_and_a_wrong_folder_names_the_path(tmp_path):
    from vreloc_tf.data.manifest import DataManifest

    F.write_manifest(str(tmp_path / "old"), 6, {"train": 3})  # no source, created, splits
    old = DataManifest.read(str(tmp_path / "old"))
    assert (old.feature_dim, old.splits, old.source) == (6, None, None)
    assert old.to_json() == json.loads((tmp_path / "old" / "manifest.json").read_text())
    with pytest.raises(InputError, match=f"{tmp_path / 'nope'}.*manifest.json"):
        DataManifest.read(str(tmp_path / "nope"))
    (tmp_path / "manifest.json").write_text("[1]")
    with pytest.raises(InputError, match=f"{tmp_path / 'manifest.json'}: not a data manifest"):
        DataManifest.read(str(tmp_path))
    with pytest.raises(InputError, match="not a data manifest"):
        Dataset.open(str(tmp_path))


# -- an export version's assets.extra/vreloc.json (ExportInfo) and Export.open --------------------------

OLD_EXPORT_INFO = {  # what serving/export.py wrote before ExportInfo, in its key order
    "model_name": "vreloc", "version": 7, "signature_name": "serving_default", "feature_dim": 8,
    "frames_per_feature": 16, "fps": None, "supervision": "full", "decode": "full", "decode_max_length": 64,
    "jit_compile": True, "max_window": 300, "config_digest": "abc", "run_dir": "/runs/a", "best_step": 4,
    "code_version": "0.9.0", "exported_at": "2026-01-02T03:04:05Z", "pca": "pca.npz",
    "features": {"backbone": "c3d", "feature_dim": 8, "pca_file": "pca.npz"}}


def _fake_export(base, folder, info=None):
    extra = os.path.join(base, folder, "assets.extra")
    os.makedirs(extra)
    open(os.path.join(base, folder, "saved_model.pb"), "wb").close()
    if info is not None:
        with open(os.path.join(extra, "vreloc.json"), "w") as fh:
            json.dump(info, fh, indent=2, default=str)  # vreloc_tf.files.write_json_atomic's format
    return os.path.join(base, folder)


def test_export_info_round_trips_and_writes_the_bytes_export_model_wrote(tmp_path):
    from vreloc_tf.data.artifacts import ExportInfo

    version = _fake_export(str(tmp_path / "vreloc"), "007", OLD_EXPORT_INFO)
    before = open(os.path.join(version, "assets.extra", "vreloc.json"), "rb").read()
    info = ExportInfo.read(version)
    assert info.to_json() == OLD_EXPORT_INFO and list(info.to_json()) == list(OLD_EXPORT_INFO)
    info.write(version)
    assert open(os.path.join(version, "assets.extra", "vreloc.json"), "rb").read() == before
    assert ExportInfo.read(version) == info
    plain = ExportInfo(model_name="m", version=1, feature_dim=4)  # no PCA, no spec: the keys are left out
    assert "pca" not in plain.to_json() and "features" not in plain.to_json()
    assert ExportInfo.from_json(dict(plain.to_json(), newer_key=1), "x").extra == {"newer_key": 1}


def test_export_open_finds_the_version_and_what_locate_needs(tmp_path):
    from vreloc_tf.data.artifacts import Export, find_version_dir

    base = str(tmp_path / "vreloc")
    _fake_export(base, "1")  # an old export: no vreloc.json at all
    version = _fake_export(base, "007", OLD_EXPORT_INFO)
    os.makedirs(os.path.join(base, ".tmp-9-abc"))  # half-written: never a version
    export = Export.open(base)
    assert (export.base_path, export.model_name, export.version, export.path) == (base, "vreloc", 7, version)
    assert export.pca_file == os.path.join(version, "assets.extra", "pca.npz")
    assert export.feature_spec.pca_file == os.path.join(version, "assets.extra", "pca.npz")
    assert export.info.max_window == 300 and export == Export.open(version)
    old = Export.open(os.path.join(base, "1"))
    assert (old.version, old.info, old.pca_file, old.feature_spec) == (1, None, None, None)
    assert Export(**export.to_json()) == export and find_version_dir(str(tmp_path)) is None
    with pytest.raises(InputError, match=f"{tmp_path}: no exported versions .expected {tmp_path}/<version>/saved"):
        Export.open(str(tmp_path))
    with pytest.raises(InputError, match=f"{tmp_path / 'nope'}: no such export folder"):
        Export.open(str(tmp_path / "nope"))
