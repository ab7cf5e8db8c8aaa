"""vreloc_tf/data/tfrecord.py, the one reader and writer of TFRecord framing (issue #27 item 4).

A damaged record -- a flipped byte in the payload, a wrong length CRC, a truncated final record -- is
a DataError naming the file and the byte offset of the record through every public entry point that
reads framing: the module's own (count, iterate, read at an offset, iterate an open stream), the index
build's input count, the staged sink's count, the entry index and schema.read_records. Before this
module the index build's count read only the length headers (all three damages counted silently) and
the staged sink's count raised Beam's ValueError (an internal error, no file, no offset).
"""
import os

import numpy as np
import pytest

from helpers.records import TINY_DIM, make_records
from pipeline import build_index, staged_sink
from vreloc_tf.data import entry_index
from vreloc_tf.data import schema
from vreloc_tf.data import tfrecord
from vreloc_tf.errors import DataError

DAMAGES = ["flipped payload byte", "wrong length crc", "truncated final record"]


def _write_with_tensorflow(path, payloads):
    import tensorflow as tf

    with tf.io.TFRecordWriter(path) as w:
        for data in payloads:
            w.write(data)


def _offsets(payloads):
    out, offset = [], 0
    for data in payloads:
        out.append(offset)
        offset += tfrecord.HEADER_BYTES + len(data) + tfrecord.FOOTER_BYTES
    return out


@pytest.fixture()
def shard(tmp_path):
    """A test shard of 4 schema records written by TensorFlow's writer: (path, payloads, offsets)."""
    records = make_records("test", [200, 201], 2, TINY_DIM, np.random.default_rng(3))
    payloads = [schema.encode_record(r) for r in records]
    folder = tmp_path / "data"
    folder.mkdir()
    path = str(folder / "test-00000-of-00001.tfrecord")
    _write_with_tensorflow(path, payloads)
    return path, payloads, _offsets(payloads)


def _damage(path, payloads, offsets, how):
    """Damage ``path`` in place; the byte offset of the damaged record."""
    raw = bytearray(open(path, "rb").read())
    if how == "flipped payload byte":
        offset = offsets[1]
        raw[offset + tfrecord.HEADER_BYTES + len(payloads[1]) // 2] ^= 0x01
    elif how == "wrong length crc":
        offset = offsets[1]
        raw[offset + 9] ^= 0x01  # the length itself is intact: only its checksum differs
    else:
        offset = offsets[-1]
        raw = raw[:offset + tfrecord.HEADER_BYTES + len(payloads[-1]) // 2]
    open(path, "wb").write(bytes(raw))
    return offset


def _stream(path):
    with open(path, "rb") as fh:
        return list(tfrecord.iter_stream(fh, path))


ENTRY_POINTS = {
    "tfrecord.count_records": lambda path, offset: tfrecord.count_records(path),
    "tfrecord.iter_records": lambda path, offset: list(tfrecord.iter_records(path)),
    "tfrecord.read_at": lambda path, offset: tfrecord.read_at(path, offset),
    "tfrecord.FramedReader.read": lambda path, offset: tfrecord.FramedReader(path).read(offset),
    "tfrecord.iter_stream": lambda path, offset: _stream(path),
    "build_index.count_inputs": lambda path, offset: build_index.count_inputs({"test": [path]}),
    "staged_sink.count_tfrecords": lambda path, offset: staged_sink.count_tfrecords(path),
    "entry_index.load_index": lambda path, offset: entry_index.load_index(os.path.dirname(path), "test"),
    "schema.read_records": lambda path, offset: schema.read_records(os.path.dirname(path), "test"),
}


@pytest.mark.parametrize("how", DAMAGES)
@pytest.mark.parametrize("entry_point", list(ENTRY_POINTS))
def test_a_damaged_record_is_a_data_error_naming_file_and_offset_everywhere(shard, entry_point, how):
    path, payloads, offsets = shard
    offset = _damage(path, payloads, offsets, how)
    with pytest.raises(DataError, match=rf"^{path}: corrupt TFRecord file at byte {offset}: ") as err:
        ENTRY_POINTS[entry_point](path, offset)
    assert isinstance(err.value, tfrecord.CorruptRecordError)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("how, what", [("flipped payload byte", "the data checksum differs"),
                                       ("wrong length crc", "the length header's checksum differs"),
                                       ("truncated final record", "the file ends inside the record")])
def test_the_error_says_what_is_damaged(shard, how, what):
    path, payloads, offsets = shard
    _damage(path, payloads, offsets, how)
    for read in (lambda: list(tfrecord.iter_records(path)), lambda: _stream(path)):
        with pytest.raises(DataError, match=what):
            read()


def test_tensorflows_records_read_back_identically(shard):
    """Records written by TensorFlow's writer come back byte for byte, at their offsets, through every reader."""
    path, payloads, offsets = shard
    want = list(zip(offsets, payloads))
    assert list(tfrecord.iter_records(path)) == want
    assert _stream(path) == want
    assert tfrecord.count_records(path) == staged_sink.count_tfrecords(path) == len(payloads)
    assert build_index.count_inputs({"test": [path]}) == {"test": len(payloads)}
    assert [tfrecord.read_at(path, o) for o in reversed(offsets)] == payloads[::-1]
    assert [r.entry_index for r in schema.read_records(os.path.dirname(path), "test")] == \
        [schema.decode_record(p).entry_index for p in payloads]


def test_our_writer_writes_what_tensorflow_writes(tmp_path):
    """write_record frames byte for byte as tf.io.TFRecordWriter does (empty and large payloads too),
    and TensorFlow's own reader reads it back."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    payloads = [b"", b"x", rng.bytes(1000), rng.bytes(300_000)]
    theirs, ours = str(tmp_path / "tf.tfrecord"), str(tmp_path / "ours.tfrecord")
    _write_with_tensorflow(theirs, payloads)
    with open(ours, "wb") as fh:
        sizes = [tfrecord.write_record(fh, data) for data in payloads]
    assert open(ours, "rb").read() == open(theirs, "rb").read()
    assert sizes == [len(tfrecord.frame(d)) for d in payloads] == [len(d) + 16 for d in payloads]
    assert [r.numpy() for r in tf.data.TFRecordDataset(ours)] == payloads
    assert list(tfrecord.iter_records(ours)) == list(zip(_offsets(payloads), payloads))


def test_an_empty_file_has_no_records(tmp_path):
    path = str(tmp_path / "empty.tfrecord")
    open(path, "wb").close()
    assert tfrecord.count_records(path) == staged_sink.count_tfrecords(path) == 0
    assert list(tfrecord.iter_records(path)) == [] == _stream(path)


def test_both_crc32c_implementations_agree_with_tensorflow(tmp_path, monkeypatch):
    """google-crc32c (the dependency) and crcmod (the fallback) give the checksums TensorFlow's writer wrote."""
    import crcmod.predefined

    rng = np.random.default_rng(1)
    payloads = [b"", rng.bytes(1), rng.bytes(5000)]
    path = str(tmp_path / "x.tfrecord")
    _write_with_tensorflow(path, payloads)
    tfrecord.crc32c(b"")
    assert tfrecord._crc32c.__module__.startswith("google_crc32c")  # the fast one is what runs
    for implementation in (tfrecord._crc32c, crcmod.predefined.mkPredefinedCrcFun("crc-32c")):
        monkeypatch.setattr(tfrecord, "_crc32c", implementation)
        assert list(tfrecord.iter_records(path)) == list(zip(_offsets(payloads), payloads))


def test_one_reader_serves_many_threads(shard):
    """Reads by offset share no file position (os.pread): threads sharing a reader each get their record."""
    from concurrent.futures import ThreadPoolExecutor

    path, payloads, offsets = shard
    reader = tfrecord.FramedReader(path)
    jobs = [i % len(offsets) for i in range(400)]
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda i: reader.read(offsets[i])[0], jobs))
    assert got == [payloads[i] for i in jobs]
    reader.close()
