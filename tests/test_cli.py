"""The `vreloc` dispatcher: every subcommand has help, and errors take the one error path."""
import subprocess
import sys

import pytest

from vreloc import cli

EXPECTED = ["synth", "ingest-activitynet", "extract-video", "train", "evaluate", "baseline", "export",
            "serve", "query", "locate", "visualize", "pipeline", "bench"]


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
