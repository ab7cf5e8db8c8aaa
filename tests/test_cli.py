"""The `vreloc` dispatcher: every subcommand has help, and errors take the one error path."""
import subprocess
import sys

import pytest

from vreloc import cli

EXPECTED = ["synth", "ingest-activitynet", "extract-video", "train", "evaluate", "baseline", "export",
            "serve", "query", "locate", "visualize", "pipeline", "bench", "quality", "index", "search",
            "evaluate-search"]


def test_help_lists_every_subcommand():
    out = subprocess.run([sys.executable, "-m", "vreloc", "--help"], capture_output=True, text=True, check=True)
    for name in EXPECTED:
        assert f"    {name}" in out.stdout, name
    assert list(cli.COMMANDS) == EXPECTED


@pytest.mark.parametrize("name", EXPECTED)
def test_every_subcommand_has_its_own_help(name):
    parser = cli.build_parser(selected=name)
    sub = parser._subparsers._group_actions[0].choices[name]
    text = sub.format_help()
    assert text.startswith("usage: vreloc " + name), text[:80]
    own = [a for a in sub._actions if a.dest not in ("help", "verbose", "debug")]
    assert own, f"vreloc {name} defines no arguments of its own"


def test_input_error_is_one_line_and_exit_2(monkeypatch, capsys):
    import types

    from vreloc_tf.errors import InputError

    def failing(args):
        raise InputError("data folder /nowhere: no manifest.json\nrun ingest first")

    fake = types.SimpleNamespace(add_arguments=lambda p: None, main=failing)
    monkeypatch.setattr(cli, "command_module", lambda name: fake)
    assert cli.main(["train"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "vreloc train: error: data folder /nowhere: no manifest.json run ingest first"
    with pytest.raises(InputError):
        cli.main(["--debug", "train"])
    with pytest.raises(InputError):
        cli.main(["train", "--debug"])


def test_internal_error_exits_1_without_traceback(monkeypatch, capsys):
    import types

    def failing(args):
        raise RuntimeError("boom")

    monkeypatch.setattr(cli, "command_module", lambda name: types.SimpleNamespace(add_arguments=lambda p: None,
                                                                                 main=failing))
    assert cli.main(["bench"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "RuntimeError: boom" in err and "--debug" in err


def _vreloc(*args, env_extra=None):
    import os

    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "vreloc", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def _one_error_line(proc, command):
    """Exit 2, no traceback, and exactly one line of ours on stderr: the last one."""
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    ours = [line for line in proc.stderr.splitlines() if line.startswith(f"vreloc {command}:")]
    assert len(ours) == 1 and proc.stderr.strip().splitlines()[-1] == ours[0], proc.stderr[-2000:]
    return ours[0]


def test_train_with_a_missing_data_folder_is_one_line(tmp_path):
    line = _one_error_line(_vreloc("train", "--config", "tiny", "--data", str(tmp_path / "nowhere"),
                                   "--out", str(tmp_path / "run")), "train")
    assert line == (f"vreloc train: error: {tmp_path / 'nowhere'}: no such data folder; write one with "
                    f"`vreloc ingest-activitynet` or `vreloc extract-video`")
    assert not (tmp_path / "run").exists()


def test_train_with_a_bad_config_value_is_one_line(tmp_path, tiny_data_dir):
    line = _one_error_line(_vreloc("train", "--config", "tiny", "--data", tiny_data_dir, "--out",
                                   str(tmp_path / "run"), "--set", "model.hidden_dim=abc"), "train")
    assert "model.hidden_dim" in line and "int" in line and "'abc'" in line


def test_evaluate_with_a_corrupt_pair_file_is_one_line(tmp_path, tiny_run):
    bad = tmp_path / "pairs.json"
    bad.write_bytes(b"\x00\x01 not json")
    line = _one_error_line(_vreloc("evaluate", "--model", tiny_run, "--pairs", str(bad)), "evaluate")
    assert line.startswith(f"vreloc evaluate: error: {bad}: not a valid pair list")
