"""Guards of `vreloc train` against hostile input (issue #25): rows 11 and 14.

Row 11: a run records its data's content fingerprint (not its path) before its first step and
refuses to resume on anything else. Row 14: configs are validated (every number and list in
its legal range) before anything is written, so a corrected rerun just works.
"""
import dataclasses
import json
import os
import shutil
import typing

import pytest

from helpers import records as F
from helpers.records import TINY_DIM as DIM
from vreloc import cli
from vreloc_tf import config as C
from vreloc_tf.config import ConfigError, load_config
from vreloc_tf.errors import InputError

TINY = ["--config", "tiny", "--set", f"data.feature_dim={DIM}", "--set", "train.batch_size=4",
        "--set", "train.validate_every=2", "--set", "train.validation_pairs=6"]


def _one_error_line(capsys) -> str:
    """The error of a refused command: exactly one line on stderr (besides log records), no traceback."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("vreloc ")]
    assert "Traceback" not in err and len(lines) == 1, err
    assert lines[0].startswith("vreloc train: error: "), err
    return lines[0]


# -- row 14: configs are validated before anything is written --------------------------------------

def _numeric_or_list(tp) -> bool:
    args = [a for a in typing.get_args(tp) if a is not type(None)] if typing.get_origin(tp) is typing.Union else [tp]
    return any(a in (int, float) or typing.get_origin(a) in (list, typing.List) for a in args)


def test_every_number_and_list_of_the_config_has_a_legal_range():
    """A new field without a rule would skip validation: every int, float and list field has one."""
    missing, stack = [], [C.Config]
    while stack:
        cls = stack.pop()
        for f in dataclasses.fields(cls):
            tp = typing.get_type_hints(cls)[f.name]
            inner = [a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)]
            if dataclasses.is_dataclass(tp):
                stack.append(tp)
                continue
            stack.extend(inner)
            if _numeric_or_list(tp) and f.name not in C.RANGES.get(cls.__name__, {}):
                missing.append(f"{cls.__name__}.{f.name}")
    assert not missing, f"fields without a legal range in vreloc_tf.config.RANGES: {missing}"
    for name in C.shipped_configs():  # the shipped configs and the defaults are legal
        load_config(name)
    C.validate(C.Config())


@pytest.mark.parametrize("override, message", [
    ("train.batch_size=0", "key 'train.batch_size' must be >= 1, got 0"),
    ("train.steps=-5", "key 'train.steps' must be >= 1, got -5"),
    ("model.heads=[]", "key 'model.heads' must be a non-empty list, got []"),
    ("model.heads=[{heads: 0}]", "key 'model.heads[0].heads' must be >= 1, got 0"),
    ("train.learning_rate=0", "key 'train.learning_rate' must be > 0, got 0.0"),
    ("train.learning_rate=.nan", "key 'train.learning_rate' must be > 0, got nan"),
    ("model.dropout_before_bilstm=1", "key 'model.dropout_before_bilstm' must be in [0, 1), got 1.0"),
    ("model.cgbm.dropout=-0.1", "key 'model.cgbm.dropout' must be in [0, 1), got -0.1"),
    ("model.hidden_dim=0", "key 'model.hidden_dim' must be >= 1, got 0"),
    ("data.feature_dim=0", "key 'data.feature_dim' must be >= 1, got 0"),
    ("data.crop_probability=1.5", "key 'data.crop_probability' must be in [0, 1], got 1.5"),
    ("data.weak_query_fraction=1", "key 'data.weak_query_fraction' must be in (0, 1), got 1.0"),
    ("train.lr_decay_factor=0", "key 'train.lr_decay_factor' must be in (0, 1], got 0.0"),
    ("train.validate_every=0", "key 'train.validate_every' must be >= 1, got 0"),
    ("decode.full_max_length=0", "key 'decode.full_max_length' must be >= 1, got 0"),
    ("loss.self_target_momentum=1", "key 'loss.self_target_momentum' must be in [0, 1), got 1.0"),
    ("seed=-1", "key 'seed' must be in [0, 4294967295], got -1"),
    ("train.selection=label_free", "key 'train.selection' is label_free, which needs supervision=weak"),
])
def test_values_out_of_range_name_the_key_the_value_and_the_range(override, message):
    with pytest.raises(ConfigError) as err:
        load_config("tiny", [override])
    assert str(err.value).startswith(f"--set: {message}")
    assert isinstance(err.value, InputError)


def test_a_file_is_blamed_for_its_own_values_and_an_override_may_correct_it(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  batch_size: 0\n  steps: 10\n")
    with pytest.raises(ConfigError, match=rf"^{path}: key 'train.batch_size' must be >= 1, got 0$"):
        load_config(str(path))
    with pytest.raises(ConfigError, match=rf"^{path}: key 'train.batch_size' must be >= 1, got 0$"):
        load_config(str(path), ["train.steps=3"])  # the override is not at fault
    assert load_config(str(path), ["train.batch_size=2"]).train.batch_size == 2
    # all problems at once, each with its own source
    with pytest.raises(ConfigError, match=rf"{path}: key 'train.batch_size' .*; --set: key 'train.steps' must"):
        load_config(str(path), ["train.steps=0"])


def test_train_validates_a_config_built_in_code_before_writing(tiny_data_dir, tmp_path):
    from vreloc_tf.data.artifacts import Dataset
    from vreloc_tf.training.run import train

    cfg = load_config("tiny", [f"data.feature_dim={DIM}"])
    cfg.train.batch_size = 0
    with pytest.raises(InputError, match="the config: key 'train.batch_size' must be >= 1, got 0"):
        train(cfg, Dataset.open(tiny_data_dir), str(tmp_path / "run"))
    assert not os.path.exists(tmp_path / "run")


def test_an_invalid_config_writes_nothing_and_the_corrected_rerun_trains(tiny_data_dir, tmp_path, capsys):
    """Row 14: exit 2 with one line naming the key, no run folder; then the fixed command works."""
    out = str(tmp_path / "run")
    base = ["train", *TINY, "--data", tiny_data_dir, "--out", out]
    for bad, message in ((["--set", "train.batch_size=0"], "key 'train.batch_size' must be >= 1, got 0"),
                         (["--set", "train.steps=-5"], "key 'train.steps' must be >= 1, got -5"),
                         (["--steps", "-5"], "--steps must be >= 1, got -5"),
                         (["--set", "model.heads=[]"], "key 'model.heads' must be a non-empty list, got []"),
                         (["--set", "train.selection=label_free"], "key 'train.selection' is label_free")):
        assert cli.main([*base, *bad]) == 2, bad
        assert message in _one_error_line(capsys)
        assert not os.path.exists(out), f"{bad} left {os.listdir(out)} behind"
    assert cli.main([*base, "--steps", "2"]) == 0
    with open(os.path.join(out, "run.json")) as fh:
        assert json.load(fh)["steps"] == 2


# -- row 11: an interrupted run is resumed only on the data it started on --------------------------

def _interrupted_run(data_dir: str, out: str, cfg) -> None:
    """`train` killed at step 3 of 4 (after the backup of step 2), as test_training's resume test does."""
    import keras

    from vreloc_tf.data.artifacts import Dataset
    from vreloc_tf.training.run import train

    class Kill(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if int(self.model.optimizer.iterations.numpy()) == 3:
                raise KeyboardInterrupt("killed at step 3")

    with pytest.raises(KeyboardInterrupt):
        train(cfg, Dataset.open(data_dir), out, callbacks=[Kill()], verbose=0)


def test_an_interrupted_run_resumes_only_on_the_data_it_started_on(tiny_data_dir, tmp_path, capsys):
    from vreloc_tf.data.artifacts import Dataset, Run
    from vreloc_tf.data.fingerprint import content_fingerprint

    out = str(tmp_path / "run")
    cfg = load_config("tiny", [f"data.feature_dim={DIM}", "train.batch_size=4", "train.validate_every=2",
                               "train.validation_pairs=6", "train.steps=4"])
    _interrupted_run(tiny_data_dir, out, cfg)
    assert not os.path.exists(os.path.join(out, "run.json"))  # interrupted: no run.json yet

    # other data of the same shape (dim, splits, sizes, no source in the manifest): refused
    other = F.make_data_dir(str(tmp_path / "other"), dim=DIM, seed=5)
    # a copy of the data with one byte of a val shard changed: refused
    changed = str(tmp_path / "changed")
    shutil.copytree(tiny_data_dir, changed)
    shard = os.path.join(changed, "val-00001-of-00002.tfrecord")
    with open(shard, "r+b") as fh:
        fh.seek(40)
        byte = fh.read(1)
        fh.seek(40)
        fh.write(bytes([byte[0] ^ 1]))
    base = ["train", *TINY, "--out", out, "--steps", "4"]
    before = sorted(os.listdir(out))
    capsys.readouterr()  # what the interrupted training wrote
    errors = []
    for data in (other, changed):
        assert cli.main([*base, "--data", data]) == 2, f"resumed on {data}"
        errors.append(_one_error_line(capsys))
        assert sorted(os.listdir(out)) == before
    fingerprint = Dataset.open(tiny_data_dir).content_fingerprint()
    for data, err in zip((other, changed), errors):
        assert f"started on the data in {tiny_data_dir} (content fingerprint {fingerprint[:16]})" in err, err
        assert f"the train/val records in {data} have fingerprint" in err and "--overwrite" in err, err
        assert f"resume with the original data (--data {tiny_data_dir}" in err, err
    with open(os.path.join(out, "data.json")) as fh:  # written before the first step
        record = json.load(fh)
    assert record["fingerprint"] == fingerprint and record["data_dir"] == tiny_data_dir

    # an unchanged copy at another path is the same data: the run resumes and finishes
    copy = str(tmp_path / "copy")
    shutil.copytree(tiny_data_dir, copy)
    assert cli.main([*base, "--data", copy]) == 0
    manifest = Run.open(out).manifest
    assert manifest.extra["resumed_from_step"] == 2 and manifest.steps == 4
    assert manifest.data_fingerprint == fingerprint
    files = sorted(os.path.join(tiny_data_dir, n) for n in os.listdir(tiny_data_dir)
                   if n.startswith(("train-", "val-")))
    assert content_fingerprint(files, root=tiny_data_dir) == fingerprint  # train + val record files only
    assert cli.main([*base, "--data", changed]) == 2  # finished, it still refuses other data
    _one_error_line(capsys)


def test_the_fingerprint_is_of_names_lengths_and_bytes_not_paths(tmp_path):
    from vreloc_tf.data.fingerprint import content_fingerprint

    a, b = tmp_path / "a", tmp_path / "b"
    for folder in (a, b):
        folder.mkdir()
        (folder / "train-0.tfrecord").write_bytes(b"xy")
        (folder / "val-0.tfrecord").write_bytes(b"z" * (3 << 20))  # more than one 1 MiB block
    fp = content_fingerprint([str(a / "val-0.tfrecord"), str(a / "train-0.tfrecord")], root=str(a))
    assert fp == content_fingerprint([str(b / "train-0.tfrecord"), str(b / "val-0.tfrecord")], root=str(b))
    (b / "train-0.tfrecord").write_bytes(b"x")
    (b / "val-0.tfrecord").write_bytes(b"y" + b"z" * (3 << 20))  # same bytes overall, moved across files
    assert fp != content_fingerprint([str(b / "train-0.tfrecord"), str(b / "val-0.tfrecord")], root=str(b))
    os.rename(b / "train-0.tfrecord", b / "train-1.tfrecord")
    (b / "train-1.tfrecord").write_bytes(b"xy")
    (b / "val-0.tfrecord").write_bytes(b"z" * (3 << 20))
    assert fp != content_fingerprint([str(b / "train-1.tfrecord"), str(b / "val-0.tfrecord")], root=str(b))
