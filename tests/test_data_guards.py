"""Hostile data on disk (issue #25, rows 12, 13, 15): each case is refused as a DataError / InputError
naming the file at fault (one line, exit 2 through the CLI), never an internal error, never read silently.

Row 12: a features file regenerated at the same path must not mix draws in one data folder.
Row 13: our own TFRecord reader (vreloc_tf/data/tfrecord.py) checks both CRCs of every record.
Row 15: a library index part tampered with at the same size (NaN features, numbers outside their table).
"""
import glob
import json
import os
import shutil
import struct

import h5py
import numpy as np
import pytest

from helpers.records import make_data_dir
from pipeline import ingest_activitynet as ingest, staged_sink
from vreloc import cli
from vreloc_tf.data import entry_index
from vreloc_tf.data import schema
from vreloc_tf.data import tfrecord
from vreloc_tf.data.manifest import DataManifest
from vreloc_tf.errors import DataError, InputError
from vreloc_tf.files import file_sha256

DIRECT = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]


def _one_line_exit_2(capsys, argv, *must_name):
    """Run ``vreloc ARGV``: exit 2 with one line on stderr that names each of ``must_name``."""
    capsys.readouterr()  # only this command's output (a direct call before it may log via an old test's handler)
    code = cli.main(list(argv))
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.startswith(f"vreloc {argv[0]}: ")]  # not the INFO log
    assert len(lines) == 1 and lines[0].startswith(f"vreloc {argv[0]}: error: ") and "Traceback" not in err, err
    for name in must_name:
        assert name in lines[0], (name, lines[0])
    return lines[0]


# --------------------------------------------------------------------------- row 12: one draw per folder


def _snapshot(folder):
    return {os.path.relpath(p, folder): open(p, "rb").read()
            for p in glob.glob(os.path.join(folder, "**"), recursive=True) if os.path.isfile(p)}


def _write_features(path, seed):
    """A tiny ActivityNet-layout HDF5 file: three videos of 20 rows, D = 4, values drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as h5:
        for vid in "abc":
            rows = rng.standard_normal((20, 4)).astype(np.float32)
            h5.create_group(f"v_{vid}").create_dataset("c3d_features", data=rows)


@pytest.fixture()
def ingested(tmp_path):
    """The tiny features file, all three splits ingested, and a splits folder holding train.json only."""
    src, train_only = tmp_path / "src", tmp_path / "train_only"
    src.mkdir()
    train_only.mkdir()
    features = str(src / "f.hdf5")
    _write_features(features, seed=0)
    for split, vid in (("train", "a"), ("val", "b"), ("test", "c")):
        (src / f"{split}.json").write_text(json.dumps([{"id": vid, "label": 1, "location": [0, 8],
                                                        "groundtruth": [2, 5]}]))
    shutil.copy(src / "train.json", train_only / "train.json")
    out = str(tmp_path / "data")
    ingest.run(features, str(src), out, "DirectRunner", DIRECT)
    return features, out, str(train_only)


def test_reingesting_one_split_of_a_regenerated_features_file_is_refused(ingested, capsys):
    """The file changes in place (same path, same shapes, other values): re-ingesting only train would put
    train from the new draw beside val/test from the old one under one recorded source."""
    features, out, train_only = ingested
    old_sha = file_sha256(features)
    _write_features(features, seed=1)  # regenerated in place: same path, same videos and shapes, other values
    new_sha = file_sha256(features)
    assert new_sha != old_sha
    before = _snapshot(out)
    with pytest.raises(staged_sink.DatasetMixError) as caught:
        ingest.run(features, train_only, out, "DirectRunner", DIRECT)
    msg = str(caught.value)
    for part in (features, old_sha, new_sha, "['test', 'val']", "re-ingest every split", "new --out folder"):
        assert part in msg, (part, msg)
    assert isinstance(caught.value, InputError)
    _one_line_exit_2(capsys, ["ingest-activitynet", "--features", features, "--splits", train_only, "--out", out,
                              "--runner", "DirectRunner", *DIRECT], features, old_sha, new_sha)
    assert _snapshot(out) == before  # refused before any work


def test_reingesting_one_split_of_the_same_file_is_allowed(ingested):
    """Same bytes at the same path: the same draw, so one split may be re-ingested beside the others."""
    features, out, train_only = ingested
    summary = ingest.run(features, train_only, out, "DirectRunner", DIRECT)
    assert set(summary.counts) == {"train"}
    splits = DataManifest.read(out).splits
    assert {splits[s]["source"]["features_sha256"] for s in ("train", "val", "test")} == {file_sha256(features)}


def test_splits_ingested_before_fingerprints_were_recorded_are_not_mixed_with(ingested):
    """An older manifest names the path only: whether the file changed since cannot be told, so refuse."""
    features, out, _ = ingested
    path = os.path.join(out, schema.MANIFEST_NAME)
    manifest = json.load(open(path))
    for split in manifest["splits"].values():
        split["source"].pop("features_sha256")
    json.dump(manifest, open(path, "w"))
    with pytest.raises(staged_sink.DatasetMixError, match=r"splits \['test', 'val'\] were ingested before "
                                                          r"fingerprints were recorded"):
        ingest.check_same_draw(out, features, file_sha256(features), ["train"])
    ingest.check_same_draw(out, features, file_sha256(features), ["train", "val", "test"])  # all rewritten: fine


# --------------------------------------------------------------------------- row 13: TFRecord checksums


@pytest.fixture()
def data_dir(tmp_path):
    return make_data_dir(str(tmp_path / "data"), per_class=3, eval_per_class=3, max_len=16)


def _records(path):
    """(offset, length) of every record, from the framing (the file is good)."""
    out, offset, size = [], 0, os.path.getsize(path)
    with open(path, "rb") as fh:
        while offset < size:
            fh.seek(offset)
            (length,) = struct.unpack("<Q", fh.read(8))
            out.append((offset, length))
            offset += 16 + length
    return out


def test_checked_reader_reads_what_tensorflow_reads(data_dir):
    """iter_records, count_records and reads by offset (backwards) agree with tf.data.TFRecordDataset record
    for record, and the Python checksum agrees with the one TensorFlow wrote."""
    import tensorflow as tf

    for path in schema.shard_files(data_dir, "train"):
        want = [r.numpy() for r in tf.data.TFRecordDataset(path)]
        got = list(tfrecord.iter_records(path))
        assert [data for _, data in got] == want and len(want) > 1
        assert [off for off, _ in got] == [off for off, _ in _records(path)]
        assert tfrecord.count_records(path) == len(want)
        reader = tfrecord.FramedReader(path)
        assert [reader.read(off)[0] for off, _ in reversed(got)] == want[::-1]
        with open(path, "rb") as fh:  # the Python checker (what explains a refused record) accepts them too
            assert list(tfrecord.iter_stream(fh, path)) == got


def _damage(path, how):
    """Damage the second record of ``path`` in place; returns its offset."""
    offset, length = _records(path)[1]
    raw = bytearray(open(path, "rb").read())
    if how == "flipped data byte":
        raw[offset + 12 + length // 2] ^= 0x01  # a low bit of some feature: still parses as an Example
    elif how == "corrupt length header":
        raw[offset + 5] ^= 0x40  # the length becomes ~2**46 bytes
    elif how == "wrong data crc":
        raw[offset + 12 + length] ^= 0xFF
    elif how == "ends mid-record":
        raw = raw[:offset + 12 + length // 2]
    open(path, "wb").write(bytes(raw))
    return offset


@pytest.mark.parametrize("how", ["flipped data byte", "corrupt length header", "wrong data crc", "ends mid-record"])
def test_a_corrupt_record_is_a_data_error_naming_the_file(data_dir, capsys, how):
    """Before: DecodeError (exit 1), MemoryError (exit 1), or read silently (exit 0)."""
    path = schema.shard_files(data_dir, "test")[0]
    offset = _damage(path, how)
    with pytest.raises(DataError, match=rf"{path}: corrupt TFRecord file at byte {offset}: "):
        list(tfrecord.iter_records(path))
    with pytest.raises(DataError, match=str(path)):
        entry_index.load_index(data_dir, "test")
    _one_line_exit_2(capsys, ["baseline", "--method", "random", "--data", data_dir, "--split", "test"],
                     path, f"byte {offset}")


def test_records_read_by_offset_are_checked_too(data_dir):
    """The input pipeline reads pair records by offset (RecordReader): a record damaged after the entry
    index was built is refused there, not fed to training."""
    index = entry_index.load_index(data_dir, "train")
    row = int(np.argmax((index.shard == 0) & (index.offset > 0)))
    path = index.shard_paths[0]
    with open(path, "r+b") as fh:
        fh.seek(int(index.offset[row]) + 40)
        byte = fh.read(1)
        fh.seek(-1, os.SEEK_CUR)
        fh.write(bytes([byte[0] ^ 0x10]))
    with entry_index.RecordReader(index) as reader:
        with pytest.raises(DataError, match=rf"{path}: corrupt TFRecord file at byte {int(index.offset[row])}: "
                                            r"the data checksum differs"):
            reader.read(row)


def test_a_record_that_is_not_an_example_is_a_data_error(tmp_path, capsys):
    """Good checksums around bytes that are no tf.train.Example: a DataError naming file and record number."""
    import tensorflow as tf

    data_dir = make_data_dir(str(tmp_path / "data"), per_class=2, eval_per_class=2, max_len=12)
    path = schema.shard_files(data_dir, "test")[1]
    good = [r.numpy() for r in tf.data.TFRecordDataset(path)]
    n = len(good)
    with tf.io.TFRecordWriter(path + ".new") as w:
        for data in good:
            w.write(data)
        w.write(b"\xff\xff\xff not a protobuf")
    os.replace(path + ".new", path)
    with pytest.raises(DataError, match=rf"{path}: record {n} .* is not a tf.train.Example"):
        entry_index.load_index(data_dir, "test")
    _one_line_exit_2(capsys, ["baseline", "--method", "random", "--data", data_dir, "--split", "test"],
                     path, f"record {n}")


# --------------------------------------------------------------------------- row 15: tampered index parts


DIM = 8


@pytest.fixture()
def index_dir(tmp_path):
    """A frame-level library index of 6 pieces in two parts (no model needed), and a query file."""
    from vreloc_tf.search.embedding import Embedder, EmbeddingSpec
    from vreloc_tf.search.library import LibraryIndex, VideoEmbedding

    spec = EmbeddingSpec("raw", (4, 8))
    rng = np.random.default_rng(0)

    def piece(i):
        feats = rng.normal(size=(int(rng.integers(20, 40)), DIM)).astype(np.float32)
        spans, vectors = Embedder(spec, DIM).windows(feats)
        return VideoEmbedding(f"v{i}", "test", i, 1, 0, feats, spans, vectors, fps=25.0)

    path = str(tmp_path / "ix")
    index = LibraryIndex.create(path, DIM, spec, DIM, None)
    index.append([piece(i) for i in range(3)])
    index.append([piece(i) for i in range(3, 6)])
    np.save(tmp_path / "q.npy", rng.normal(size=(10, DIM)).astype(np.float32))
    return path, str(tmp_path / "q.npy")


def _tamper(file, change):
    """Change a .npy file's values in place (same size, same header)."""
    size = os.path.getsize(file)
    array = np.load(file, mmap_mode="r+")
    change(array)
    array.flush()
    del array
    assert os.path.getsize(file) == size


def _set(field, row, value):
    def change(a):
        a[field][row] = value
    return change


def _nan(a):
    a[5, 3] = np.nan


TAMPERS = {  # name: (file under the part, change, what the message says)
    "NaN feature": ("features.npy", _nan, "non-finite feature (NaN or inf) in step 5"),
    "window's piece past the table": ("windows.npy", _set("video", 2, 10 ** 6), "row 2: piece number 1000000"),
    "window's piece negative": ("windows.npy", _set("video", 2, -1), "row 2: piece number -1"),
    "window past its piece": ("windows.npy", _set("end", 0, 10 ** 5), "row 0: window [0, 100000) outside its piece"),
    "window id": ("windows.npy", _set("id", 4, 9999), "row 4: window id 9999"),
    "feature offset": ("videos.npy", _set("feature_offset", 1, 10 ** 7), "row 1: features [10000000, "),
    "feature length": ("videos.npy", _set("length", 2, 10 ** 4), "row 2: features ["),
    "piece's windows": ("videos.npy", _set("first_window", 0, -7), "row 0: windows [-7, "),
    "piece number": ("videos.npy", _set("number", 1, 0), "row 1: piece number 0, expected 4"),
    "fps": ("videos.npy", _set("fps", 0, np.inf), "row 0: non-finite fps inf"),
}


@pytest.mark.parametrize("name", list(TAMPERS))
def test_a_tampered_index_part_is_a_data_error_naming_the_file(index_dir, capsys, name):
    """Before: NaN features searched into NaN scores silently; a number outside its table was an
    internal error (or silently another row). Now opening refuses, naming the part file and the row."""
    from vreloc_tf.search.library import IndexError_, LibraryIndex

    path, query = index_dir
    file, change, what = TAMPERS[name]
    target = os.path.join(path, "parts", "part-00001", file)
    _tamper(target, change)
    with pytest.raises(DataError) as caught:
        LibraryIndex.open(path)
    assert isinstance(caught.value, IndexError_) and str(caught.value).startswith(f"{target}: ")
    assert what in str(caught.value)
    _one_line_exit_2(capsys, ["search", "--index", path, "--query", query], target, what)


def test_a_tombstone_outside_the_index_is_a_data_error(index_dir):
    """removed.npy holds piece numbers: one past the index is refused, naming the file."""
    from vreloc_tf.search.library import LibraryIndex

    path, _ = index_dir
    LibraryIndex.open(path).remove(["v1"])
    _tamper(os.path.join(path, "removed.npy"), lambda a: a.__setitem__(0, 99))
    with pytest.raises(DataError, match=r"removed.npy: row 0: piece number 99 outside the index's pieces 0..5"):
        LibraryIndex.open(path)


def test_an_untampered_index_still_opens_and_searches(index_dir, capsys):
    """The checks cost one pass per part and refuse nothing that the index wrote itself."""
    path, query = index_dir
    assert cli.main(["search", "--index", path, "--query", query]) == 0, capsys.readouterr().err
