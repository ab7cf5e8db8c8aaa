"""Shared test set-up: quiet TensorFlow, CPU only, the benchmark files (../shared or the cache), and shared fixtures.

Helpers live in the ``helpers`` package (tests/helpers/); fixtures that several test
modules need live here, so test modules never import each other.
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
if "--tf_xla_persistent_cache_directory" not in os.environ.get("TF_XLA_FLAGS", ""):
    # One XLA cache for the session (served processes inherit it): a server compiles every allowed
    # batch size at warm-up (serving/model_servable.py), and the tests' exports share one architecture,
    # so only the first load of each shape compiles. Set before anything imports TensorFlow.
    import atexit
    import shutil
    import tempfile

    _XLA_CACHE = tempfile.mkdtemp(prefix="vreloc-tests-xla-")
    atexit.register(shutil.rmtree, _XLA_CACHE, True)
    os.environ["TF_XLA_FLAGS"] = (os.environ.get("TF_XLA_FLAGS", "") +
                                  f" --tf_xla_persistent_cache_directory={_XLA_CACHE}").strip()

import pytest  # noqa: E402

from helpers.records import TINY_DIM  # noqa: E402



@pytest.fixture(scope="session")
def shared_splits_dir():
    """The benchmark split files, read in place (never copied) from ../shared/data/activitynet_reloc beside
    the repo or the cache `vreloc benchmark fetch` fills (vreloc_tf.data.benchmark_files.find_splits: every file
    with its pinned sha256); a fresh clone without either skips, saying which command gets them, and a
    folder holding other files than the published ones fails."""
    from vreloc_tf.data import benchmark_files

    found = benchmark_files.find_splits()
    if found is None:
        present = [folder for folder in benchmark_files.candidates() if os.path.isdir(folder)]
        if present:  # files there but not the published ones: a failure, never a skip
            pytest.fail(benchmark_files.not_found_message())
        pytest.skip(f"needs the benchmark files: run `{benchmark_files.FETCH_COMMAND}` "
                    f"(looked in {', '.join(benchmark_files.candidates())})")
    return found


@pytest.fixture(scope="session")
def benchmark_synth(tmp_path_factory, shared_splits_dir):
    """`vreloc synth` at the benchmark's split geometry, D = 8 (do not modify: the synth and ingest tests share it)."""
    from pipeline import synth

    out = str(tmp_path_factory.mktemp("bench"))
    synth.generate(out, seed=0, dim=8, lengths=os.path.join(shared_splits_dir, "length.json"),
                   splits_dir=shared_splits_dir)
    return out


@pytest.fixture(scope="session", autouse=True)
def _quick_version_settle():
    """Servers started in-process load a freshly copied export after 0.2 s, not the product's 2 s (tests of
    the settle rule pass their own ``settle_seconds``)."""
    from serving import model_manager

    model_manager.DEFAULT_SETTLE_SECONDS = 0.2
    yield


@pytest.fixture(scope="session", autouse=True)
def _runs_root(tmp_path_factory):
    """helpers.runs makes its run folders and exports under this session's temporary folder."""
    from helpers import runs

    runs.set_root(str(tmp_path_factory.mktemp("runs")))


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory):
    """A TFRecord data folder (train/val/test, 8-d learnable features) for training and evaluation tests."""
    from helpers.records import make_data_dir

    return make_data_dir(str(tmp_path_factory.mktemp("tiny_data")), dim=TINY_DIM)


@pytest.fixture(scope="session")
def tiny_run(tiny_data_dir, tmp_path_factory):
    """A run folder trained for 4 steps on ``tiny_data_dir`` by `vreloc train` (do not modify: copy it)."""
    from vreloc import cli

    out = str(tmp_path_factory.mktemp("tiny_run") / "run")
    assert cli.main(["train", "--config", "tiny", "--data", tiny_data_dir, "--out", out, "--steps", "4",
                     "--set", f"data.feature_dim={TINY_DIM}", "--set", "train.batch_size=4",
                     "--set", "train.validate_every=2", "--set", "train.validation_pairs=6"]) == 0
    return out
