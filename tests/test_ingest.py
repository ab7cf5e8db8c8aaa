"""ingest-activitynet: transforms in TestPipeline, dead letters with reasons, atomic reruns, the benchmark geometry."""
import glob
import json
import os
import shutil
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from helpers.synth_data import make_synth_with_bad
from pipeline import ingest_activitynet as ingest, options, staged_sink, synth
from vreloc_tf import __version__
from vreloc_tf.data import tfrecord
from vreloc_tf.files import file_sha256
from vreloc_tf.data.manifest import DataManifest
from vreloc_tf.data.schema import decode_record, read_records

DIRECT = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]


# --------------------------------------------------------------------------- fixtures


def write_h5(path, videos):
    with h5py.File(path, "w") as h5:
        for vid, rows in videos.items():
            h5.create_group(f"v_{vid}").create_dataset("c3d_features", data=rows)


@pytest.fixture(scope="module")
def small_h5(tmp_path_factory):
    """Three videos with random rows (odd and even row counts)."""
    rng = np.random.default_rng(3)
    d = tmp_path_factory.mktemp("h5")
    videos = {"a": rng.standard_normal((20, 5)).astype(np.float32),   # 10 features after [::2]
              "b": rng.standard_normal((13, 5)).astype(np.float32),   # 7
              "c": rng.standard_normal((2, 5)).astype(np.float32),    # 1
              "w": rng.standard_normal((8, 4)).astype(np.float32)}    # another feature dim
    path = str(d / "f.hdf5")
    write_h5(path, videos)
    return path, {k: v[::2] for k, v in videos.items()}


@pytest.fixture(scope="module")
def synth_with_bad(tmp_path_factory):
    return make_synth_with_bad(str(tmp_path_factory.mktemp("synth")), seed=1)


def expected_records(splits_dir, h5_path):
    """The NumPy reference: every good entry's window cut from HDF5 rows [::2]."""
    out = {}
    with h5py.File(h5_path, "r") as h5:
        for split in ("train", "val", "test"):
            with open(os.path.join(splits_dir, f"{split}.json")) as fh:
                entries = json.load(fh)
            for i, e in enumerate(entries):
                try:
                    vid, (s, t), gt, label = ingest.check_entry(e)
                except ValueError:
                    continue
                if f"v_{vid}" not in h5:
                    continue
                sub = h5[f"v_{vid}"]["c3d_features"][()][::2]
                if ingest.window_problem((s, t), gt, len(sub)):
                    continue
                out[(split, i)] = (vid, label, (s, t), gt, sub[s:t])
    return out


def run_ingest(src, out, runner="DirectRunner", extra=DIRECT, overwrite=False):
    return ingest.run(os.path.join(src, synth.HDF5_NAME), src, out, runner, list(extra), overwrite=overwrite)


# --------------------------------------------------------------------------- transforms


def test_read_split_entries_keys_by_video_and_dead_letters_malformed(tmp_path):
    good = [{"id": "a", "label": 1, "location": [0, 4], "groundtruth": [1, 2]},
            {"id": "b", "label": 2, "location": [1, 5], "groundtruth": [0, 3]}]
    bad = [{"id": "a", "label": 1, "location": [0, 4]}, {"id": "a", "label": "x", "location": [0, 4], "groundtruth": [1, 2]}]
    (tmp_path / "train.json").write_text(json.dumps(good + bad))
    (tmp_path / "val.json").write_text(json.dumps(good[:1]))
    files = {"train": str(tmp_path / "train.json"), "val": str(tmp_path / "val.json")}
    with TestPipeline(options=beam.options.pipeline_options.PipelineOptions(DIRECT)) as p:
        entries, dead = p | ingest.ReadSplitEntries(files)
        assert_that(entries, equal_to([("a", ("train", 0, good[0])), ("b", ("train", 1, good[1])),
                                       ("a", ("val", 0, good[0]))]), label="entries")
        assert_that(dead | beam.Map(lambda d: (d.split, d.entry_index, d.reason.split(":")[0], d.entry)),
                    equal_to([("train", 2, "malformed entry", bad[0]), ("train", 3, "malformed entry", bad[1])]),
                    label="dead")


def test_entries_to_records_cuts_windows_and_dead_letters_each_kind(small_h5):
    path, sub = small_h5
    items = [
        ("a", ("train", 0, {"id": "a", "label": 5, "location": [2, 9], "groundtruth": [1, 4]})),
        ("a", ("train", 1, {"id": "a", "label": 5, "location": [0, 10], "groundtruth": [0, 10]})),
        ("b", ("val", 0, {"id": "b", "label": 6, "location": [3, 7], "groundtruth": [0, 2]})),
        ("c", ("test", 0, {"id": "c", "label": 7, "location": [0, 1], "groundtruth": [0, 1]})),
        ("a", ("train", 2, {"id": "a", "label": 5, "location": [5, 11], "groundtruth": [0, 2]})),   # past the end
        ("b", ("val", 1, {"id": "b", "label": 6, "location": [3, 3], "groundtruth": [0, 1]})),     # empty
        ("b", ("val", 2, {"id": "b", "label": 6, "location": [0, 4], "groundtruth": [2, 6]})),     # gt outside
        ("zz", ("test", 1, {"id": "zz", "label": 7, "location": [0, 1], "groundtruth": [0, 1]})),  # missing
        ("w", ("test", 2, {"id": "w", "label": 7, "location": [0, 1], "groundtruth": [0, 1]})),    # D = 4, not 5
    ]

    def as_tuple(r):
        return (r.split, r.entry_index, r.video_id, r.label, r.window, r.groundtruth, r.features.tobytes(),
                r.features.shape, r.frames_per_feature)

    want = [("train", 0, "a", 5, (2, 9), (1, 4), sub["a"][2:9].tobytes(), (7, 5), 16),
            ("train", 1, "a", 5, (0, 10), (0, 10), sub["a"].tobytes(), (10, 5), 16),
            ("val", 0, "b", 6, (3, 7), (0, 2), sub["b"][3:7].tobytes(), (4, 5), 16),
            ("test", 0, "c", 7, (0, 1), (0, 1), sub["c"].tobytes(), (1, 5), 16)]
    with TestPipeline(options=beam.options.pipeline_options.PipelineOptions(DIRECT)) as p:
        records, dead = p | beam.Create(items) | ingest.EntriesToRecords(path, feature_dim=5)
        assert_that(records | beam.Map(as_tuple), equal_to(want), label="records")
        assert_that(dead | beam.Map(lambda d: (d.split, d.entry_index, d.reason)), equal_to([
            ("train", 2, "window [5, 11] past the end of the video (10 features after [::2])"),
            ("val", 1, "empty window [3, 3]"),
            ("val", 2, "ground truth [2, 6] outside its window of 4 features"),
            ("test", 1, "video v_zz not in the features file (no v_zz/c3d_features)"),
            ("test", 2, "v_w/c3d_features has shape (8, 4), expected [rows, 5]"),
        ]), label="dead")


def test_write_records_and_dead_letters_stage_decodable_files(tmp_path, small_h5):
    from vreloc_tf.data.schema import Record

    rng = np.random.default_rng(0)
    recs = [Record(f"v{i}", ["train", "val"][i % 2], i, i, (0, 3), (0, 1), rng.standard_normal((3, 4)).astype(np.float32))
            for i in range(6)]
    deads = [staged_sink.DeadLetter("val", f"reason {i}", {"k": i}, i, "src") for i in range(3)]
    staging = str(tmp_path / "staging")
    with TestPipeline(options=beam.options.pipeline_options.PipelineOptions(DIRECT)) as p:
        tokens = p | "recs" >> beam.Create(recs) | staged_sink.WriteRecords(staging, max_file_bytes=300)
        dtokens = p | "deads" >> beam.Create(deads) | staged_sink.WriteDeadLetters(staging)
        assert_that(tokens, equal_to([("train", 1)] * 3 + [("val", 1)] * 3), label="tokens")
        assert_that(dtokens, equal_to([("val", 1)] * 3), label="dtokens")
    counts = staged_sink.count_staged(staging, {"train": 3, "val": 6})
    assert counts == {"train": staged_sink.SplitCounts(3, 3, 0), "val": staged_sink.SplitCounts(6, 3, 3)}
    assert not glob.glob(f"{staging}/**/*.inprogress", recursive=True)
    # each file is closed once it passes 300 bytes: 3 records of ~200 bytes per split -> 2 files
    assert len(glob.glob(f"{staging}/records/train/*.tfrecord")) == len(glob.glob(f"{staging}/records/val/*.tfrecord")) == 2
    got = [decode_record(raw) for path in glob.glob(f"{staging}/records/*/*.tfrecord")
           for _, raw in tfrecord.iter_records(path)]  # TensorFlow's reader reads what the bundle writer framed
    got.sort(key=lambda r: r.entry_index)
    assert [r.entry_index for r in got] == list(range(6))
    for r, want in zip(got, recs):
        np.testing.assert_array_equal(r.features, want.features)
        assert (r.split, r.video_id) == (want.split, want.video_id)
    lines = [json.loads(l) for f in glob.glob(f"{staging}/dead_letter/val/*.jsonl") for l in open(f)]
    assert sorted(l["reason"] for l in lines) == ["reason 0", "reason 1", "reason 2"]


def test_runner_names_and_pass_through_options():
    assert options.resolve_runner("DaskRunner") == "apache_beam.runners.dask.dask_runner.DaskRunner"
    assert options.resolve_runner("DataflowRunner") == "DataflowRunner"
    opts = options.pipeline_options("DirectRunner", ["--project=p"], multiprocess=True, cores=8).get_all_options()
    assert opts["direct_running_mode"] == "multi_processing" and opts["direct_num_workers"] == 7
    assert opts["project"] == "p"
    opts = options.pipeline_options("DirectRunner", [], multiprocess=True, cores=2).get_all_options()
    assert opts["direct_running_mode"] != "multi_processing"
    opts = options.pipeline_options("DirectRunner", ["--direct_num_workers=1"], multiprocess=True, cores=8).get_all_options()
    assert opts["direct_running_mode"] != "multi_processing" and opts["direct_num_workers"] == 1
    opts = options.pipeline_options("DaskRunner", [], multiprocess=True, cores=8).get_all_options()
    assert opts["runner"].endswith("dask_runner.DaskRunner") and opts["direct_running_mode"] != "multi_processing"


def test_cli_passes_unknown_options_to_beam(capsys):
    from vreloc import cli

    parser = cli.build_parser("ingest-activitynet")
    args = parser.parse_args(["ingest-activitynet", "--features", "f.h5", "--splits", "d", "--out", "o",
                              "--runner", "DaskRunner", "--dask_client_address=tcp://h:1", "--project", "p",
                              "--overwrite"])
    assert args.runner == "DaskRunner" and args.overwrite
    assert args.beam_args == ["--dask_client_address=tcp://h:1", "--project", "p"]
    with pytest.raises(SystemExit):
        cli.build_parser("ingest-activitynet").parse_args(["ingest-activitynet", "--help"])
    assert "--features" in capsys.readouterr().out


# --------------------------------------------------------------------------- end to end


def test_ingest_end_to_end_reconciles_and_reports_every_bad_entry(synth_with_bad, tmp_path):
    src, expected_dead = synth_with_bad
    out = str(tmp_path / "data")
    summary = run_ingest(src, out)
    counts, printed = summary.counts, summary.report()
    want = expected_records(src, os.path.join(src, synth.HDF5_NAME))
    for split in ("train", "val", "test"):
        with open(os.path.join(src, f"{split}.json")) as fh:
            n_read = len(json.load(fh))
        n_dead = sum(1 for s, _, _ in expected_dead if s == split)
        assert counts[split] == staged_sink.SplitCounts(n_read, n_read - n_dead, n_dead)
        assert f"ingest-activitynet: {split}: read {n_read}, written {n_read - n_dead}, dead-lettered {n_dead}" in printed
        got = read_records(out, split)
        assert len(got) == n_read - n_dead
        for r in got:
            vid, label, window, gt, feats = want[(split, r.entry_index)]
            assert (r.video_id, r.label, r.window, r.groundtruth, r.split) == (vid, label, window, gt, split)
            np.testing.assert_array_equal(r.features, feats)
            assert r.fps == -1 and r.frames_per_feature == 16
    dead = {}
    for split in ("train", "val", "test"):
        for line in open(os.path.join(out, "dead_letter", f"{split}.jsonl")):
            d = json.loads(line)
            dead[(d["split"], d["entry_index"])] = d
    assert set(dead) == {(s, i) for s, i, _ in expected_dead}
    for s, i, reason in expected_dead:
        assert reason in dead[(s, i)]["reason"], dead[(s, i)]
        assert dead[(s, i)]["entry"]["location"]  # the entry itself is kept
    m = DataManifest.read(out).to_json()
    assert m["feature_dim"] == 8 and m["frames_per_feature"] == 16 and m["code_version"] == __version__
    assert m["source"]["features"].endswith(synth.HDF5_NAME) and m["created"]
    assert all(m["splits"][s]["source"] == m["source"] for s in ("train", "val", "test"))
    assert summary.manifest == m and summary.feature_dim == 8
    assert dict(summary) == counts and summary["train"] is counts["train"]  # reads as split -> counts too
    for split, c in counts.items():
        assert {k: m["splits"][split][k] for k in ("read", "written", "dead_lettered")} == {
            "read": c.read, "written": c.written, "dead_lettered": c.dead_lettered}
    assert not [p for p in os.listdir(out) if p.startswith((".staging", "beam-temp"))]


def test_rerun_replaces_shards_never_mixes(synth_with_bad, tmp_path):
    src, _ = synth_with_bad
    out = str(tmp_path / "data")
    os.makedirs(out)
    stale = os.path.join(out, "train-00000-of-00009.tfrecord")
    open(stale, "wb").write(b"stale")
    run_ingest(src, out, extra=["--direct_running_mode=multi_threading", "--direct_num_workers=2"])
    first = {s: sorted((r.entry_index, r.features.tobytes()) for r in read_records(out, s)) for s in ("train", "val", "test")}
    assert not os.path.exists(stale)
    run_ingest(src, out)  # a different runner mode: possibly another shard count
    for s in ("train", "val", "test"):
        files = sorted(glob.glob(os.path.join(out, f"{s}-*-of-*.tfrecord")))
        totals = {f.rsplit("-of-", 1)[1] for f in files}
        assert len(totals) == 1 and int(totals.pop().split(".")[0]) == len(files)
        assert sorted((r.entry_index, r.features.tobytes()) for r in read_records(out, s)) == first[s]
        assert DataManifest.read(out).splits[s]["shards"] == [os.path.basename(f) for f in files]


def test_failed_reconciliation_leaves_previous_outputs(synth_with_bad, tmp_path, monkeypatch):
    src, _ = synth_with_bad
    out = str(tmp_path / "data")
    run_ingest(src, out)
    before = {f: open(f, "rb").read() for f in glob.glob(os.path.join(out, "*.tfrecord"))}
    real = staged_sink.count_staged
    monkeypatch.setattr(staged_sink, "count_staged",
                        lambda staging, read: {s: staged_sink.SplitCounts(c.read + 1, c.written, c.dead_lettered)
                                               for s, c in real(staging, read).items()})
    with pytest.raises(staged_sink.ReconciliationError, match="do not reconcile"):
        run_ingest(src, out)
    after = {f: open(f, "rb").read() for f in glob.glob(os.path.join(out, "*.tfrecord"))}
    assert after == before
    assert not [p for p in os.listdir(out) if p.startswith(".staging")]


def test_refuses_to_mix_feature_dims_in_one_folder(synth_with_bad, tmp_path):
    src, _ = synth_with_bad
    out = tmp_path / "data"
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps({"feature_dim": 500, "splits": {"extra": {"read": 1}}}))
    with pytest.raises(ValueError, match=r"already holds splits \['extra'\] with feature_dim 500; writing feature_dim 8"):
        run_ingest(src, str(out))
    assert sorted(os.listdir(out)) == ["manifest.json"]


def _snapshot(folder):
    return {os.path.relpath(p, folder): open(p, "rb").read()
            for p in glob.glob(os.path.join(folder, "**"), recursive=True) if os.path.isfile(p)}


def test_a_rerun_from_another_source_is_refused_unless_overwrite(synth_with_bad, tmp_path):
    """Bug of #11: a re-run with only train.json of another source kept the old val/test beside it."""
    src_a, _ = synth_with_bad
    out = str(tmp_path / "data")
    run_ingest(src_a, out)
    src_b = str(tmp_path / "other")
    synth.generate(src_b, seed=5, dim=8)
    for split in ("val", "test"):
        os.remove(os.path.join(src_b, f"{split}.json"))
    before = _snapshot(out)
    with pytest.raises(staged_sink.DatasetMixError, match=r"splits \['test', 'val'\] from another source.*--overwrite"):
        run_ingest(src_b, out)
    assert _snapshot(out) == before  # refused before any work: nothing written, nothing removed

    summary = run_ingest(src_b, out, overwrite=True)
    m = DataManifest.read(out).to_json()
    assert set(m["splits"]) == set(summary.counts) == {"train"}
    assert m["splits"]["train"]["source"] == m["source"] == {
        "job": "ingest-activitynet", "features": os.path.join(src_b, synth.HDF5_NAME),
        "features_sha256": file_sha256(os.path.join(src_b, synth.HDF5_NAME))}
    assert sorted(f for f in os.listdir(out) if f.endswith(".tfrecord")) == m["splits"]["train"]["shards"]
    assert os.listdir(os.path.join(out, "dead_letter")) == ["train.jsonl"]
    assert {r.video_id for r in read_records(out, "train")} <= set(json.load(open(os.path.join(src_b, "length.json"))))


def test_a_rerun_of_one_split_from_the_same_source_keeps_the_others(synth_with_bad, tmp_path):
    src, _ = synth_with_bad
    out = str(tmp_path / "data")
    run_ingest(src, out)
    val_before = sorted((r.entry_index, r.features.tobytes()) for r in read_records(out, "val"))
    train_only = tmp_path / "train_only"
    train_only.mkdir()
    shutil.copy(os.path.join(src, "train.json"), train_only / "train.json")
    summary = ingest.run(os.path.join(src, synth.HDF5_NAME), str(train_only), out, "DirectRunner", DIRECT)
    assert set(summary.counts) == {"train"}
    m = DataManifest.read(out).to_json()
    assert set(m["splits"]) == {"train", "val", "test"}
    assert {s: m["splits"][s]["source"] for s in m["splits"]} == {s: m["source"] for s in ("train", "val", "test")}
    assert sorted((r.entry_index, r.features.tobytes()) for r in read_records(out, "val")) == val_before


def test_cli_non_hdf5_features_is_one_line_exit_2(synth_with_bad, tmp_path):
    src, _ = synth_with_bad
    notes = tmp_path / "notes.txt"
    notes.write_text("not an HDF5 file\n")
    proc = subprocess.run([sys.executable, "-m", "vreloc", "ingest-activitynet", "--features", str(notes),
                           "--splits", src, "--out", str(tmp_path / "data")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith(f"vreloc ingest-activitynet: error: --features {notes}: not an HDF5 file ("), lines
    assert lines[0].endswith("give the C3D features file (sub_activitynet_v1-3.c3d.hdf5, or `vreloc synth` output)")
    assert not os.path.exists(tmp_path / "data")


def test_benchmark_geometry_every_entry_reproduced(shared_splits_dir, benchmark_synth, tmp_path):
    """All 9,400 benchmark entries at D=8: features == HDF5 rows [::2][location], labels, windows, ground truth."""
    src = benchmark_synth
    out = str(tmp_path / "data")
    counts = ingest.run(os.path.join(src, synth.HDF5_NAME), shared_splits_dir, out, "DirectRunner", []).counts
    check_every_entry(shared_splits_dir, os.path.join(src, synth.HDF5_NAME), out, counts)


def iter_records(data_dir, split):
    """Records shard by shard (memory stays at one shard's worth even at full size)."""
    import tensorflow as tf
    from vreloc_tf.data.schema import shard_files

    for path in shard_files(data_dir, split):
        for raw in tf.data.TFRecordDataset(path).as_numpy_iterator():
            yield decode_record(raw)


def check_every_entry(splits_dir, h5_path, out, counts):
    """Every entry of the benchmark splits is a record equal to the HDF5 rows [::2][location]."""
    total = 0
    with h5py.File(h5_path, "r") as h5:
        cache = {}
        for split in ("train", "val", "test"):
            with open(os.path.join(splits_dir, f"{split}.json")) as fh:
                entries = json.load(fh)
            assert counts[split] == staged_sink.SplitCounts(len(entries), len(entries), 0)
            seen = []
            for r in iter_records(out, split):
                e = entries[r.entry_index]
                if e["id"] not in cache:  # records come grouped by video: cache one video
                    cache = {e["id"]: h5[f"v_{e['id']}"]["c3d_features"][()][::2]}
                lo, hi = e["location"]
                assert (r.video_id, r.label, list(r.window), list(r.groundtruth), r.split) == (
                    e["id"], e["label"], e["location"], e["groundtruth"], split)
                np.testing.assert_array_equal(r.features, cache[e["id"]][lo:hi])
                seen.append(r.entry_index)
            assert sorted(seen) == list(range(len(entries)))
            total += len(seen)
    assert total == 9400


@pytest.mark.slow
def test_full_size_benchmark_ingest(shared_splits_dir, tmp_path):
    """Full size (D=500, ~3.1 GB HDF5): every entry reproduced; prints the ingest time.

    Set VRELOC_FULL_SYNTH to a folder already holding ``vreloc synth --lengths ... --splits ...``
    output to skip the (~4 min) generation.
    """
    src = os.environ.get("VRELOC_FULL_SYNTH")
    if not src:
        src = str(tmp_path / "synth")
        synth.generate(src, seed=0, dim=500, lengths=os.path.join(shared_splits_dir, "length.json"),
                       splits_dir=shared_splits_dir)
    out = str(tmp_path / "data")
    t0 = time.time()
    counts = ingest.run(os.path.join(src, synth.HDF5_NAME), shared_splits_dir, out, "DirectRunner", []).counts
    seconds = time.time() - t0
    print(f"full-size ingest: 9400 records in {seconds:.1f} s ({9400 / seconds:.1f} records/s)")
    assert DataManifest.read(out).feature_dim == 500
    check_every_entry(shared_splits_dir, os.path.join(src, synth.HDF5_NAME), out, counts)
    shutil.rmtree(out)
