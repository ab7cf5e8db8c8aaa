"""`vreloc` writes its own lines to stderr and nothing of TensorFlow's, absl's or Beam's start-up, unless -v.

Each real command runs in a subprocess (about 5 s: it imports TensorFlow and Beam), with the
environment's TF_CPP_MIN_LOG_LEVEL / GRPC_VERBOSITY removed so that the CLI's own defaults are tested.
"""
import os
import re
import subprocess
import sys
import textwrap

import pytest

from vreloc import cli

# What the libraries print (issue #24 lists them): absl-format C++ lines, absl's notice, oneDNN/CUDA/TRT
# notices, Beam's runner lines and the Prism download, Python warnings, any third-party logger line.
NOISE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:|absl::InitializeLog|oneDNN|cuda|cuDNN|cuFFT|cuBLAS|TF-TRT|"
                   r"computation_placer|[Pp]rism|Warning:| (INFO|WARNING) (tensorflow|absl|apache_beam|h5py|"
                   r"matplotlib|keras|root)\b")
OURS = re.compile(r"^\d{4}-\d\d-\d\d [\d:,]+ (INFO|WARNING|ERROR) (vreloc|vreloc_tf|pipeline|serving)[.:]")


def _env():
    env = dict(os.environ)
    for name in cli.QUIET_ENV:
        env.pop(name, None)
    return env


def _vreloc(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "vreloc", *args], capture_output=True, text=True, env=_env(),
                          cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def tiny_synth(tmp_path_factory):
    from pipeline import synth

    out = str(tmp_path_factory.mktemp("quiet_synth"))
    synth.generate(out, seed=0, dim=8, geometry="smoke")
    return out


def _ingest(src, out, *extra):
    from pipeline import synth

    return _vreloc(*extra, "ingest-activitynet", "--features", os.path.join(src, synth.HDF5_NAME), "--splits", src,
                   "--out", out)


def test_a_beam_and_tensorflow_command_prints_only_its_own_lines(tiny_synth, tmp_path):
    proc = _ingest(tiny_synth, str(tmp_path / "data"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert " records in " in proc.stdout, proc.stdout  # the job ran to its summary
    lines = proc.stderr.splitlines()
    assert lines, "the job's own progress lines are gone"
    assert [l for l in lines if NOISE.search(l)] == [], proc.stderr[-3000:]
    assert [l for l in lines if not OURS.match(l)] == [], proc.stderr[-3000:]


def test_with_v_the_libraries_speak_and_no_prism_download_is_tried(tiny_synth, tmp_path):
    proc = _ingest(tiny_synth, str(tmp_path / "data"), "-v")
    assert proc.returncode == 0, proc.stderr[-3000:]
    noise = [l for l in proc.stderr.splitlines() if NOISE.search(l)]
    assert any("apache_beam" in l for l in noise), proc.stderr[-3000:]  # Beam's INFO lines are shown ...
    assert any(re.match(r"^[IWE]\d{4} |WARNING: All log messages before absl", l) for l in noise), \
        proc.stderr[-3000:]  # ... and TensorFlow's C++ start-up lines
    assert not any(re.search("[Pp]rism", l) for l in noise), proc.stderr[-3000:]  # the default runner never tries Prism


def test_an_input_error_after_tensorflow_is_the_only_line(tmp_path):
    # `vreloc export` imports TensorFlow (serving.export) before it opens the run folder.
    proc = _vreloc("export", "--model", str(tmp_path), "--out", str(tmp_path / "exports" / "m"))
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"vreloc export: error: {tmp_path}: not a finished training run folder (no run.json); "
        f"train one with `vreloc train`"]


# -- the pieces, without a subprocess ---------------------------------------------------------------

def test_verbosity_is_read_before_parsing():
    assert cli.verbosity(["train", "--config", "tiny"]) == 0
    assert cli.verbosity(["-v", "train"]) == 1 and cli.verbosity(["train", "-vv"]) == 2
    assert cli.verbosity(["--verbose", "index", "build", "-v"]) == 2
    assert cli.verbosity(["search", "--", "-v"]) == 0


def test_absl_noise_pattern_matches_tensorflows_lines_and_not_ours():
    noise = [b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
             b"I0000 00:00:1796593261.320289    3614 port.cc:153] oneDNN custom operations are on.\n",
             b"E0000 00:00:1796593270.797478    3693 cuda_platform.cc:52] failed call to cuInit: INTERNAL\n",
             b"W0000 00:00:1796593271.273925    3693 dataset.cc:997] Input of GeneratorDatasetOp::Dataset\n"]
    kept = [b"F0000 00:00:1796593270.797478    3693 port.cc:1] fatal: the CPU lacks AVX\n",
            b"2026-12-06 21:41:04,966 INFO pipeline.staged_sink: ingest-activitynet: test: 18 elements\n",
            b"vreloc train: error: no such data folder\n"]
    assert all(cli.ABSL_NOISE.match(line) for line in noise)
    assert not any(cli.ABSL_NOISE.match(line) for line in kept)


def test_third_party_records_below_error_are_dropped_ours_kept():
    import logging

    def passes(name, level):
        return cli._QuietThirdParty().filter(logging.LogRecord(name, level, __file__, 1, "m", None, None))

    assert passes("pipeline.staged_sink", logging.INFO) and passes("vreloc.c3d", logging.WARNING)
    assert not passes("apache_beam.runners.direct.direct_runner", logging.INFO)
    assert not passes("tensorflow", logging.WARNING) and not passes("root", logging.WARNING)
    assert passes("apache_beam.runners.worker.sdk_worker", logging.ERROR)
    assert passes("apache_beam.options.pipeline_options", logging.WARNING)  # "Unparseable argument: ..."


def test_tensorflow_import_filter_drops_absl_lines_only(tmp_path):
    """The import hook on a stand-in 'tensorflow' that writes like TensorFlow's libraries do (fd 2, no Python)."""
    fake = tmp_path / "tensorflow"
    fake.mkdir()
    (fake / "__init__.py").write_text(textwrap.dedent("""
        import os
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\\n")
        os.write(2, b"I0000 00:00:1796593261.320289    3614 port.cc:153] oneDNN custom operations are on.\\n")
        os.write(2, b"E0000 00:00:1796593261.3    3614 cuda_dnn.cc:8] Unable to register cuDNN factory\\n")
        os.write(2, b"something else the import said\\n")
        LOADED = True
    """))
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        from vreloc import cli
        cli.quiet_start(0)
        import importlib.util
        assert importlib.util.find_spec("tensorflow") is not None  # a look before the import changes nothing
        import tensorflow
        assert tensorflow.LOADED and type(tensorflow.__loader__).__name__ != "_QuietLoader"
        assert not any(isinstance(f, cli.QuietTensorFlowImport) for f in sys.meta_path)
        print("after", file=sys.stderr)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=_env(), timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == ["something else the import said", "after"]
    loud = subprocess.run([sys.executable, "-c", script.replace("quiet_start(0)", "quiet_start(1)")],
                          capture_output=True, text=True, env=_env(), timeout=60)
    assert "oneDNN custom operations" in loud.stderr and "absl::InitializeLog" in loud.stderr
