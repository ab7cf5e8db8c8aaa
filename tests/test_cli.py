"""The `vreloc` dispatcher: every subcommand has help, and errors take the one error path."""
import subprocess
import sys

import pytest

from vreloc import cli

EXPECTED = ["benchmark", "synth", "ingest-activitynet", "extract-video", "train", "evaluate", "baseline", "export",
            "serve", "query", "locate", "features", "visualize", "pipeline", "bench", "quality", "index", "search",
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

    env = {k: v for k, v in os.environ.items() if k not in cli.QUIET_ENV}  # the CLI's own quiet defaults
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "vreloc", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def _one_error_line(proc, command):
    """Exit 2, no traceback, and one line of ours that is all of stderr (no library start-up lines before it)."""
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"vreloc {command}: error: "), proc.stderr[-2000:]
    return lines[0]


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


# -- typos: one line, exit 2, the closest flag, command, choice or config ---------------------------------

def _argument_error(capsys, *argv):
    with pytest.raises(SystemExit) as exit_:
        cli.main(list(argv))
    assert exit_.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_an_unknown_flag_names_the_closest_one(capsys):
    assert _argument_error(capsys, "search", "--index", "i", "--query", "q.npy", "--topk", "3") == \
        "vreloc search: error: unrecognized arguments: --topk (did you mean --top-k?)"
    assert _argument_error(capsys, "search", "--topk", "3") == (
        "vreloc search: error: unrecognized arguments: --topk (did you mean --top-k?); "
        "the following arguments are required: --index, --query")
    assert _argument_error(capsys, "search", "--index", "i", "--qurey", "q.npy") == (
        "vreloc search: error: unrecognized arguments: --qurey (did you mean --query?); "
        "the following arguments are required: --query")
    assert _argument_error(capsys, "search", "--index", "i", "--query", "q", "--zzz") == \
        "vreloc search: error: unrecognized arguments: --zzz"


def test_an_unknown_command_or_choice_names_the_closest_one(capsys):
    assert _argument_error(capsys, "serach", "--top-k", "3") == \
        "vreloc: error: argument COMMAND: invalid choice: 'serach' (did you mean search?)"
    assert _argument_error(capsys, "index", "buidl") == \
        "vreloc index: error: argument ACTION: invalid choice: 'buidl' (did you mean build?)"
    assert _argument_error(capsys, "baseline", "--method", "alll", "--data", "d") == \
        "vreloc baseline: error: argument --method: invalid choice: 'alll' (did you mean all?)"
    assert _argument_error(capsys, "index", "zzz").startswith(
        "vreloc index: error: argument ACTION: invalid choice: 'zzz' (choose from ")


def test_nested_commands_take_the_common_options_too():
    args = cli.build_parser("index").parse_args(["index", "build", "-v", "--debug", "--data", "d", "--model", "m",
                                                 "--out", "o"])
    assert args.verbose == 1 and args.debug and args.beam_args == []


def test_config_typos_name_the_closest_key_and_config(capsys, tmp_path):
    assert cli.main(["train", "--config", "tni", "--data", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err.strip() == ("vreloc train: error: config file not found: 'tni' (did you mean tiny? "
                                               "shipped configs: cgbm, full, paper_full, paper_weak, tiny, weak)")
    assert cli.main(["train", "--config", "tiny", "--set", "train.step=5", "--data", str(tmp_path),
                     "--out", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err.strip() == \
        "vreloc train: error: --set 'train.step=5': unknown key 'train.step' (did you mean train.steps?)"
