"""Two error kinds, one error path (issue #27 item 6).

The user's input (InputError and its subclasses, an OSError about the user's path or disk) is one
line and exit 2; anything else is a bug: one line that says so, exit 1, the traceback with --debug.
`vreloc` and every `python -m` entry point answer the same way (vreloc_tf.errors.run_guarded).
"""
import ast
import errno
import glob
import os
import subprocess
import sys
import types

import pytest

from vreloc import cli
from vreloc_tf import errors
from vreloc_tf.errors import DataError, InputError, is_input_error

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUG = "-- this is a bug, please report it (rerun with --debug for the traceback)"


def _command_raising(monkeypatch, exc):
    def failing(args):
        raise exc

    monkeypatch.setattr(cli, "command_module",
                        lambda name: types.SimpleNamespace(add_arguments=lambda p: None, main=failing))


def _one_line(capsys):
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


# -- the classification ------------------------------------------------------------------------

def test_input_error_is_still_a_value_error_for_library_callers():
    """Library callers (and our own dead-letter code) catch ValueError for a bad value: InputError is one."""
    assert issubclass(InputError, ValueError) and issubclass(DataError, InputError)
    from serving.server import PortUnavailable
    from vreloc_tf.config import ConfigError

    assert issubclass(PortUnavailable, InputError) and issubclass(ConfigError, InputError)


@pytest.mark.parametrize("exc, user", [
    (InputError("x"), True),
    (DataError("x"), True),
    (FileNotFoundError(errno.ENOENT, "No such file or directory", "/nowhere"), True),
    (FileNotFoundError("no TFRecord shards for split 'val'"), True),
    (PermissionError(errno.EACCES, "Permission denied", "/root/x"), True),
    (IsADirectoryError(errno.EISDIR, "Is a directory", "/tmp"), True),
    (NotADirectoryError(errno.ENOTDIR, "Not a directory", "/etc/passwd/x"), True),
    (FileExistsError("version 3 of m was already exported"), True),
    (OSError(errno.ENOSPC, "No space left on device"), True),
    (OSError(errno.EROFS, "Read-only file system", "/ro"), True),
    (OSError(errno.EIO, "Input/output error"), False),
    (BrokenPipeError(errno.EPIPE, "Broken pipe"), False),
    (OSError("something of ours"), False),
    (ValueError("an invariant"), False),
    (KeyError("key"), False),
    (RuntimeError("boom"), False),
    (AssertionError(), False),
    (TypeError("t"), False),
])
def test_which_errors_are_the_users(exc, user):
    assert is_input_error(exc) is user
    assert errors.exit_code(exc) == (2 if user else 1)


def test_an_os_error_of_the_system_names_the_path():
    exc = FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), "/nowhere/data")
    assert errors.error_line(exc, "vreloc train") == "vreloc train: error: /nowhere/data: No such file or directory"
    rename = OSError(errno.EXDEV, "Invalid cross-device link", "/a", None, "/b")
    assert errors.one_line(rename) == "/a -> /b: Invalid cross-device link"


# -- `vreloc` ----------------------------------------------------------------------------------

def test_a_user_error_is_one_line_exit_2(monkeypatch, capsys):
    _command_raising(monkeypatch, DataError("/data/train-00000-of-00001.tfrecord @ byte 12: bad CRC"))
    assert cli.main(["evaluate"]) == 2
    assert _one_line(capsys) == "vreloc evaluate: error: /data/train-00000-of-00001.tfrecord @ byte 12: bad CRC"


def test_a_missing_file_is_one_line_exit_2_naming_it(monkeypatch, capsys, tmp_path):
    def failing(args):
        open(tmp_path / "absent.json")

    monkeypatch.setattr(cli, "command_module",
                        lambda name: types.SimpleNamespace(add_arguments=lambda p: None, main=failing))
    assert cli.main(["evaluate"]) == 2
    assert _one_line(capsys) == f"vreloc evaluate: error: {tmp_path / 'absent.json'}: No such file or directory"


@pytest.mark.parametrize("exc, text", [
    (ValueError("probabilities must be [B, Lr, 4]"), "ValueError: probabilities must be [B, Lr, 4]"),
    (KeyError("groundtruth"), "KeyError: groundtruth"),
    (OSError(errno.EIO, "Input/output error"), "OSError: [Errno 5] Input/output error"),
    (AssertionError("weak index holds reference ground truth"),
     "AssertionError: weak index holds reference ground truth"),
])
def test_a_bug_is_one_line_exit_1_that_says_so(monkeypatch, capsys, exc, text):
    """Before: every ValueError (and OSError) read as the user's input, exit 2."""
    _command_raising(monkeypatch, exc)
    assert cli.main(["train"]) == 1
    assert _one_line(capsys) == f"vreloc train: internal error: {text} {BUG}"


def test_debug_shows_the_bug_itself(monkeypatch):
    _command_raising(monkeypatch, KeyError("groundtruth"))
    for argv in (["--debug", "train"], ["train", "--debug"]):
        with pytest.raises(KeyError, match="groundtruth"):
            cli.main(argv)


def test_a_failure_before_the_command_runs_takes_the_same_path(monkeypatch, capsys):
    """Importing the command module and building its arguments happen on the error path too."""
    def broken(name):
        raise ImportError("cannot import name 'x' from 'vreloc.commands.train'")

    monkeypatch.setattr(cli, "command_module", broken)
    assert cli.main(["train"]) == 1
    assert _one_line(capsys) == ("vreloc train: internal error: ImportError: cannot import name 'x' from "
                                 f"'vreloc.commands.train' {BUG}")
    with pytest.raises(ImportError):
        cli.main(["train", "--debug"])


def test_ctrl_c_is_one_line_and_130(monkeypatch, capsys):
    _command_raising(monkeypatch, KeyboardInterrupt())
    assert cli.main(["train"]) == 130
    assert _one_line(capsys) == "vreloc train: interrupted"


def test_a_bug_through_the_console_script_has_no_traceback_unless_debug(tmp_path):
    """The real process: `vreloc evaluate --table` of a path inside a file (NotADirectoryError: the
    user's path, exit 2), and a bug (monkeypatching does not cross processes, so a sitecustomize on
    PYTHONPATH makes `format_table` raise a ValueError)."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import vreloc_tf.evaluation.metrics as m\n"
        "def broken(results, title=''):\n"
        "    raise ValueError('format_table: an invariant broke')\n"
        "m.format_table = broken\n")
    table = tmp_path / "r.json"
    table.write_text('{"method": "x", "map_at_1": {}, "average": 1.0}')
    env = {k: v for k, v in os.environ.items() if k not in cli.QUIET_ENV}
    env["PYTHONPATH"] = os.pathsep.join([str(hook), ROOT, env.get("PYTHONPATH", "")])

    def vreloc(*args):
        return subprocess.run([sys.executable, "-m", "vreloc", *args], capture_output=True, text=True, env=env,
                              timeout=300)

    proc = vreloc("evaluate", "--table", str(table / "inside.json"))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == f"vreloc evaluate: error: {table / 'inside.json'}: Not a directory"
    proc = vreloc("evaluate", "--table", str(table))
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip() == f"vreloc evaluate: internal error: ValueError: format_table: an invariant broke {BUG}"
    proc = vreloc("evaluate", "--table", str(table), "--debug")
    assert proc.returncode == 1 and "Traceback (most recent call last)" in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "ValueError: format_table: an invariant broke"


# -- the python -m entry points ----------------------------------------------------------------

def _main_blocks():
    """(path, source of its `if __name__ == "__main__":` block) of every module of the four packages."""
    for package in ("vreloc_tf", "vreloc", "pipeline", "serving"):
        for path in sorted(glob.glob(os.path.join(ROOT, package, "**", "*.py"), recursive=True)):
            source = open(path).read()
            for node in ast.parse(source).body:
                if isinstance(node, ast.If) and "__name__" in ast.unparse(node.test) \
                        and "__main__" in ast.unparse(node.test):
                    yield os.path.relpath(path, ROOT), ast.unparse(node), source


def test_every_python_m_entry_point_takes_the_one_error_path():
    found = {}
    for path, block, source in _main_blocks():
        found[path] = block
        if path == "vreloc/__main__.py" or path == "vreloc/cli.py":
            assert "main()" in block  # vreloc.cli.main: run_guarded itself
            continue
        assert "run_entry_point(" in block, f"{path}: its __main__ block bypasses vreloc_tf.errors.run_entry_point"
        if "argparse.ArgumentParser(" in source:
            assert "add_debug_option(parser)" in source, f"{path}: its parser has no --debug"
    assert {"vreloc/bench/parts.py", "vreloc/bench/model.py", "vreloc/bench/c3d.py", "vreloc/bench/ingest.py",
            "vreloc/bench/backbones.py", "pipeline/sample_videos.py", "vreloc/bench/serving.py"} <= set(found)
    assert "run_guarded(" in open(os.path.join(ROOT, "vreloc", "cli.py")).read()


def _python_m(module, *args):
    env = {k: v for k, v in os.environ.items() if k not in cli.QUIET_ENV}
    env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, env=env,
                          timeout=300, cwd=ROOT)


def test_a_python_m_entry_point_answers_a_user_error_in_one_line():
    proc = _python_m("vreloc.bench.backbones", "--frame", "wide")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == \
        "python -m vreloc.bench.backbones: error: --frame 'wide': expected HxW, e.g. 360x640"
    proc = _python_m("vreloc.bench.backbones", "--frame", "wide", "--debug")
    assert proc.returncode == 1 and "Traceback (most recent call last)" in proc.stderr, proc.stderr
    assert "--debug" in _python_m("vreloc.bench.backbones", "--help").stdout


def test_run_entry_point_answers_a_bug_like_the_cli(capsys):
    def main(argv):
        assert argv == ["--x", "1"]
        return {}["missing"]

    assert errors.run_entry_point(main, "python -m pipeline.demo", ["--x", "1"]) == 1
    assert _one_line(capsys) == f"python -m pipeline.demo: internal error: KeyError: missing {BUG}"
    with pytest.raises(KeyError):
        errors.run_entry_point(lambda argv: {}["missing"], "python -m pipeline.demo", ["--debug"])
    assert errors.run_entry_point(lambda argv: 0, "p", []) == 0
    assert errors.run_entry_point(lambda argv: None, "p", []) == 0
    # --debug after `--` belongs to someone else (a Beam argument, a file name)
    assert errors.run_entry_point(lambda argv: int("x"), "p", ["--", "--debug"]) == 1
    capsys.readouterr()


def test_argparse_usage_errors_pass_through_unchanged():
    with pytest.raises(SystemExit) as exit_:
        errors.run_guarded(lambda: sys.exit(2), "p")
    assert exit_.value.code == 2


# -- classified raises: the user's input reaches the CLI as exit 2 ------------------------------

def test_reclassified_checks_are_input_errors():
    """A sample of the raises that moved from ValueError to InputError (messages kept)."""
    from pipeline.ingest_activitynet import check_entry
    from vreloc_tf.evaluation.metrics import map_at_1

    with pytest.raises(InputError, match="malformed entry: missing 'label'"):
        check_entry({"id": "v", "location": [0, 4], "groundtruth": [1, 2]})
    with pytest.raises(InputError, match="map_at_1: no pairs were scored"):
        map_at_1([])


def test_a_port_in_use_is_the_users_to_change(tmp_path):
    """grpcio raises RuntimeError for a taken port (it used to return 0): PortUnavailable, exit 2."""
    import socket

    from serving.server import PortUnavailable, start_server

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PortUnavailable, match=f"could not bind 127.0.0.1:{port} .is the port in use.."):
            start_server(str(tmp_path), "m", port=port, poll_interval=0, xla_cache_dir="")
