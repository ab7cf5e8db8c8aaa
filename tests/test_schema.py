"""The TFRecord contract round-trips: write, parse (protobuf and tf.data), equal."""
import numpy as np
import pytest

from vreloc_tf.data import schema


def _record(rng, length=7, dim=5, gt=(2, 5)):
    return schema.Record(video_id="abc_-12", split="train", entry_index=3, label=283,
                         window=(10, 10 + length), groundtruth=gt,
                         features=rng.normal(size=(length, dim)).astype(np.float32), fps=29.97)


def test_record_round_trips_through_protobuf_and_tf_data(tmp_path):
    import tensorflow as tf

    rng = np.random.default_rng(0)
    recs = [_record(rng), _record(rng, length=3, dim=5, gt=(schema.UNKNOWN, schema.UNKNOWN))]
    path = tmp_path / "train-00000-of-00001.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as w:
        for r in recs:
            w.write(schema.encode_record(r))
    back = schema.read_records(str(tmp_path), "train")
    for a, b in zip(recs, back):
        assert (a.video_id, a.split, a.entry_index, a.label) == (b.video_id, b.split, b.entry_index, b.label)
        assert tuple(a.window) == b.window and tuple(a.groundtruth) == b.groundtruth
        np.testing.assert_array_equal(a.features, b.features)
        assert b.fps == pytest.approx(29.97, rel=1e-6) and b.frames_per_feature == 16
    assert not back[1].has_groundtruth and back[0].has_groundtruth

    parsed = list(tf.data.TFRecordDataset(str(path)).map(schema.parse_record_tf).as_numpy_iterator())
    np.testing.assert_array_equal(parsed[0]["features"], recs[0].features)
    assert parsed[0]["features"].shape == (7, 5) and parsed[1]["features"].shape == (3, 5)
    assert parsed[0]["video_id"] == b"abc_-12" and list(parsed[0]["groundtruth"]) == [2, 5]
    assert int(parsed[1]["label"]) == 283


@pytest.mark.parametrize("change, field", [
    (dict(window=(0, 6)), "window"),
    (dict(groundtruth=(5, 9)), "groundtruth"),
    (dict(groundtruth=(4, 4)), "groundtruth"),
    (dict(features=np.zeros((0, 5), np.float32), window=(0, 0)), "features"),
    (dict(features=np.full((7, 5), np.nan, np.float32)), "features"),
])
def test_invalid_records_name_the_field(change, field):
    rec = _record(np.random.default_rng(1))
    for k, v in change.items():
        setattr(rec, k, v)
    with pytest.raises(schema.SchemaError, match=field):
        schema.encode_record(rec)


def test_missing_shards_name_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="split 'val'"):
        schema.shard_files(str(tmp_path), "val")


def test_fast_feature_encoding_is_byte_identical_to_protobuf():
    from tensorflow.core.example import feature_pb2

    rng = np.random.default_rng(3)
    rec = _record(rng, length=300, dim=50)
    rec.features[0, 0] = -0.0  # signed zero, subnormal and extremes survive exactly
    rec.features[0, 1] = np.float32(1e-42)
    rec.features[0, 2] = np.finfo(np.float32).max
    fast = schema.decode_record(schema.encode_record(rec))
    np.testing.assert_array_equal(fast.features, rec.features)
    from tensorflow.core.example import example_pb2

    ex = example_pb2.Example.FromString(schema.encode_record(rec))
    slow = feature_pb2.FloatList(value=rec.features.reshape(-1))
    assert ex.features.feature["features"].float_list.SerializeToString() == slow.SerializeToString()
