"""The ingest job on Beam's Dask runner (a LocalCluster of 2 worker processes) equals the DirectRunner's output."""
import glob
import json
import os

import pytest

from pipeline import ingest_activitynet as ingest, staged_sink, synth
from pipeline.backbones import BackboneOptions
from vreloc_tf.data.manifest import DataManifest
from vreloc_tf.data.schema import read_records

from helpers.synth_data import make_synth_with_bad


@pytest.fixture(scope="module")
def cluster():
    from dask.distributed import LocalCluster

    c = LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return make_synth_with_bad(str(tmp_path_factory.mktemp("synth")), seed=2)


def outputs(data_dir):
    records = {s: sorted((r.entry_index, r.video_id, r.label, r.window, r.groundtruth, r.features.tobytes())
                         for r in read_records(data_dir, s)) for s in ("train", "val", "test")}
    dead = {s: sorted(open(os.path.join(data_dir, "dead_letter", f"{s}.jsonl")).read().splitlines())
            for s in ("train", "val", "test")}
    return records, dead


@pytest.mark.slow  # 30-110 s on 2 cores: in `make test-slow` to keep `make test` near 15 min
def test_dask_runner_output_equals_direct_runner(cluster, source, tmp_path):
    src, expected_dead = source
    h5 = os.path.join(src, synth.HDF5_NAME)
    direct_dir, dask_dir = str(tmp_path / "direct"), str(tmp_path / "dask")
    direct = ingest.run(h5, src, direct_dir, "DirectRunner", ["--direct_num_workers=1"]).counts
    summary = ingest.run(h5, src, dask_dir, "DaskRunner",
                         [f"--dask_client_address={cluster.scheduler_address}", "--dask_npartitions=4"])
    dask = summary.counts
    assert dask == direct
    assert sum(c.dead_lettered for c in dask.values()) == len(expected_dead) > 0
    assert all(c.reconciles() for c in dask.values())
    direct_out, dask_out = outputs(direct_dir), outputs(dask_dir)
    assert dask_out == direct_out  # records bit for bit, dead letters line for line
    assert len(dask_out[1]["train"]) == sum(1 for s, _, _ in expected_dead if s == "train")
    for s, i, reason in expected_dead:
        lines = [json.loads(l) for l in dask_out[1][s]]
        assert any(l["entry_index"] == i and reason in l["reason"] for l in lines), (s, i, reason)
    # several bundles really ran on the cluster, and nothing was left behind
    assert any(len(glob.glob(os.path.join(dask_dir, f"{s}-*-of-*.tfrecord"))) > 1 for s in ("train", "val", "test"))
    leftovers = [p for p in glob.glob(os.path.join(dask_dir, "**"), recursive=True) + glob.glob(os.path.join(dask_dir, ".*"))
                 if "beam-temp" in p or ".staging" in p or p.endswith(".inprogress")]
    assert leftovers == []
    m = DataManifest.read(dask_dir).to_json()
    assert {s: (v["read"], v["written"], v["dead_lettered"]) for s, v in m["splits"].items()} == {
        s: (c.read, c.written, c.dead_lettered) for s, c in direct.items()}
    assert "ingest-activitynet: train: read" in summary.report()


@pytest.mark.slow
def test_extract_video_on_dask_equals_direct_runner(cluster, tmp_path):
    """The job with a side input (the PCA fitted by the CombineFn) and C3D also runs on the Dask runner.

    Slow (40-80 s here): every Dask worker builds C3D, and the runner recomputes side inputs.
    """
    from pipeline import extract_video as ev
    from helpers.videos import colour_video

    videos = tmp_path / "videos"
    videos.mkdir()
    colour_video(videos / "aaa.mkv", 32, 25.0, 0)
    colour_video(videos / "bbb.mkv", 32, 20.0, 1)
    colour_video(videos / "ccc.mkv", 32, 25.0, 2)
    (videos / "broken.mp4").write_bytes(b"not a video" * 100)
    ann = {"database": {v: {"subset": s, "annotations": [{"segment": [0.1, 0.9], "label": l}]}
                        for v, s, l in [("aaa", "training", "A"), ("bbb", "training", "A"),
                                        ("ccc", "validation", "B"), ("broken", "training", "B")]}}
    (tmp_path / "ann.json").write_text(json.dumps(ann))
    videos_glob, ann = str(videos / "*"), str(tmp_path / "ann.json")
    random = BackboneOptions(random_seed=0)
    direct = ev.run(videos_glob, str(tmp_path / "direct"), ann, random, n_components=8,
                    beam_args=["--direct_num_workers=1"]).counts
    dask = ev.run(videos_glob, str(tmp_path / "dask"), ann, random, n_components=8, runner="DaskRunner",
                  beam_args=[f"--dask_client_address={cluster.scheduler_address}"]).counts
    assert dask == direct == {"train": staged_sink.SplitCounts(3, 2, 1), "val": staged_sink.SplitCounts(1, 1, 0)}
    assert outputs_of(str(tmp_path / "dask"), ("train", "val")) == outputs_of(str(tmp_path / "direct"), ("train", "val"))
    assert "unreadable video file" in open(tmp_path / "dask" / "dead_letter" / "train.jsonl").read()
    assert sorted(os.listdir(tmp_path / "dask")) == sorted(os.listdir(tmp_path / "direct"))  # pca.npz, no leftovers


def outputs_of(data_dir, splits):
    return {s: sorted((r.entry_index, r.window, r.groundtruth, r.features.tobytes()) for r in read_records(data_dir, s))
            for s in splits}
