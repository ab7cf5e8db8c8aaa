"""`vreloc --help` lists every subcommand; unbuilt subcommands say so and fail."""
import subprocess
import sys

from vreloc_tf import cli

EXPECTED = ["synth", "ingest-activitynet", "extract-video", "train", "evaluate", "baseline", "export",
            "serve", "query", "locate", "visualize", "pipeline", "bench"]


def test_help_lists_every_subcommand():
    out = subprocess.run([sys.executable, "-m", "vreloc_tf.cli", "--help"], capture_output=True, text=True, check=True)
    for name in EXPECTED:
        assert f"    {name}" in out.stdout, name
    assert list(cli.SUBCOMMANDS) == EXPECTED


def test_every_built_subcommand_has_help():
    for name in EXPECTED:
        try:
            parser = cli.build_parser(selected=name)
        except cli.NotBuiltYet:
            continue
        sub = parser._subparsers._group_actions[0].choices[name]
        text = sub.format_help()
        assert text.startswith("usage: vreloc " + name), text[:80]


def test_unbuilt_subcommand_exits_nonzero(monkeypatch, capsys):
    monkeypatch.setitem(cli.SUBCOMMANDS, "bench", ("vreloc_tf.does_not_exist_yet", "x", 7))
    assert cli.main(["bench"]) != 0
    assert "not built yet" in capsys.readouterr().err
