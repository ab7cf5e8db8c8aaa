"""`vreloc pipeline run` end to end on tiny settings: stages, manifests, caching, --force, serving check."""
import json
import os

import pytest

from vreloc_tf import cli

FAST = ["--set", "train.steps=4", "--set", "train.validate_every=2", "--set", "train.checkpoint_every=2",
        "--set", "train.batch_size=8", "--set", "train.validation_pairs=16"]


def _stage(workdir, name):
    with open(os.path.join(workdir, name, "stage.json")) as fh:
        return json.load(fh)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("pipeline") / "run")
    code = cli.main(["pipeline", "run", "--workdir", workdir, *FAST])
    return workdir, code


def test_every_stage_runs_and_writes_its_manifest(first_run, capsys):
    workdir, code = first_run
    assert code == 0
    for name in ("featuregen", "trainer", "evaluator", "pusher"):
        doc = _stage(workdir, name)
        assert doc["status"] == "done" and doc["code_version"] and doc["config_hash"]
        assert doc["seconds"] >= 0 and doc["fingerprint"]
    ev = _stage(workdir, "evaluator")["outputs"]
    for split in ("val", "test"):
        methods = [r["method"] for r in ev["results"][split]]
        assert len(methods) == 5 and all(r["split"] == split for r in ev["results"][split])
    for mode, png in ev["figures"].items():
        assert os.path.getsize(png) > 20_000, png
    # Pusher exported exactly the blessed models.
    pushed = _stage(workdir, "pusher")["outputs"]["pushed"]
    assert set(pushed) == {m for m, b in ev["blessing"].items() if b["blessed"]}
    for mode, info in pushed.items():
        assert os.path.exists(os.path.join(info["base_path"], str(info["version"]), "saved_model.pb"))


def test_rerun_skips_unchanged_stages_and_force_reruns(first_run, capsys):
    workdir, _ = first_run
    before = {n: _stage(workdir, n)["finished"] for n in ("featuregen", "trainer", "evaluator", "pusher")}
    assert cli.main(["pipeline", "run", "--workdir", workdir, *FAST, "--no-serve-check"]) == 0
    out = capsys.readouterr().out
    for name in ("featuregen", "trainer", "evaluator", "pusher"):
        assert f"[{name}] skipped" in out
        assert _stage(workdir, name)["finished"] == before[name]
    assert cli.main(["pipeline", "run", "--workdir", workdir, *FAST, "--no-serve-check", "--force", "evaluator"]) == 0
    out = capsys.readouterr().out
    assert "[featuregen] skipped" in out and "[trainer] skipped" in out
    assert "[evaluator] done" in out and "[pusher] done" in out  # the evaluation changed, so push again


def test_config_change_reruns_training_not_features(first_run, capsys):
    workdir, _ = first_run
    assert cli.main(["pipeline", "run", "--workdir", workdir, *FAST, "--set", "loss.alpha=0.5",
                     "--no-serve-check"]) == 0
    out = capsys.readouterr().out
    assert "[featuregen] skipped" in out and "[trainer] done" in out


def test_serve_check_answered_over_grpc(first_run, capsys):
    workdir, _ = first_run
    if not _stage(workdir, "pusher")["outputs"]["pushed"]:
        # Nothing blessed at 4 steps is a legitimate outcome; then the check says so.
        assert cli.main(["pipeline", "run", "--workdir", workdir, *FAST]) == 0
        assert "no blessed model was pushed" in capsys.readouterr().out
        return
    assert cli.main(["pipeline", "run", "--workdir", workdir, *FAST]) == 0
    out = capsys.readouterr().out
    assert "querying with the stock gRPC client" in out and "score" in out and "server stopped (exit 0)" in out
