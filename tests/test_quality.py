"""vreloc quality: the rows' aggregation (cluster bootstrap, paired differences), the targets, the
tuning rule, and the one-command page: a second call resumes and writes the same page."""
import json
import os
import shutil

import numpy as np
import pytest

from vreloc import cli
from vreloc.orchestrator import FeatureSource
from vreloc.quality import (METHODS, SWAPPED, Study, pick_trial, summarize, summarize_family, targets, tuning_score, verdict)
from vreloc_tf.evaluation.bootstrap import cluster_bootstrap, paired_difference
from vreloc_tf.errors import InputError
from vreloc_tf.files import read_json, write_json_atomic
from vreloc_tf.evaluation.metrics import THRESHOLD_KEYS, THRESHOLDS


def _result(method, ious, **extra):
    ious = np.asarray(ious, dtype=float)
    per = {k: float(100.0 * np.mean(ious > t)) for k, t in zip(THRESHOLD_KEYS, THRESHOLDS)}
    return {"method": method, "pairs": len(ious), "map_at_1": per, "average": float(np.mean(list(per.values()))),
            "ious": ious.tolist(), **extra}


def test_summarize_gives_seed_mean_std_and_the_cluster_interval():
    rng = np.random.default_rng(3)
    classes = rng.integers(0, 6, 40)
    runs = [_result("full", rng.uniform(0, 1, 40), learning_rate=0.003, tuned=True) for _ in range(3)]
    got = summarize(runs, classes, samples=300, seed=7)
    averages = np.array([r["average"] for r in runs])
    assert got["mean"]["average"] == pytest.approx(averages.mean())
    assert got["std"]["average"] == pytest.approx(averages.std(ddof=1))
    ci = cluster_bootstrap(np.array([r["ious"] for r in runs]), classes, samples=300, seed=7)
    assert got["ci95_average"] == [ci["lo"], ci["hi"]] and ci["mean"] == pytest.approx(averages.mean())
    assert got["learning_rate"] == 0.003 and got["tuned"] is True
    one = summarize(runs[:1], classes, samples=50)
    assert one["seeds"] == 1 and one["std"]["average"] == 0.0


def test_family_summary_pairs_ours_with_each_rival_and_control():
    rng = np.random.default_rng(0)
    classes = np.repeat(np.arange(8), 5)
    truth = rng.uniform(0.5, 1, 40)
    rows = {"full": [_result("full", np.clip(truth + rng.normal(0, 0.05, 40), 0, 1)) for _ in range(2)],
            "full" + SWAPPED: [_result("swapped", rng.uniform(0, 0.3, 40))],
            "cgbm": [_result("cgbm", rng.uniform(0, 1, 40))],
            "query-free": [_result("qf", rng.uniform(0, 0.6, 40))]}
    fam = summarize_family(rows, classes, samples=200)
    d = fam["differences"]["full - cgbm"]
    ref = paired_difference(np.array([r["ious"] for r in rows["full"]]), np.array([rows["cgbm"][0]["ious"]]),
                            classes, samples=200, seed=0)
    assert d == ref
    assert set(fam["differences"]) == {"full - cgbm", "full - query-free"}
    checks = fam["checks"]
    assert checks["full >= cgbm (tuned)"]["interval"] == [ref["lo"], ref["hi"]]
    assert checks["full swapped <= 0.3 x true"]["met"]


def test_the_swapped_control_carries_the_seed_mean_score_auc_where_every_run_has_scores():
    rng = np.random.default_rng(4)
    classes = np.repeat(np.arange(8), 5)
    scores = {(s, w): rng.normal(1.0 - w, 1.0, 40) for s in (0, 1) for w in (0, 1)}  # (seed, swapped)
    rows = {"full": [_result("full", rng.uniform(0.6, 1, 40), seed=s, segment_scores=scores[s, 0].tolist())
                     for s in (0, 1)],
            "full" + SWAPPED: [_result("sw", rng.uniform(0, 0.2, 40), seed=s, segment_scores=scores[s, 1].tolist())
                               for s in (1, 0)],  # another order: matched by seed, not position
            "query-free": [_result("qf", rng.uniform(0, 0.5, 40))]}
    check = summarize_family(rows, classes, samples=50)["checks"]["full swapped <= 0.3 x true"]
    expect = np.mean([np.mean(scores[s, 0][:, None] > scores[s, 1][None, :]) for s in (0, 1)])  # no ties
    assert check["score_auc"] == pytest.approx(expect, abs=1e-12)
    del rows["full" + SWAPPED][0]["segment_scores"]  # a result from before segment_scores: no AUC, not a guess
    assert "score_auc" not in summarize_family(rows, classes, samples=50)["checks"]["full swapped <= 0.3 x true"]


def test_targets_use_seed_means_and_a_collapsed_model_cannot_pass_the_control():
    row = lambda v: {"mean": {"average": v}}  # noqa: E731
    diff = {"lo": 1.0, "hi": 2.0, "above_zero": True}
    rows = {"full": row(50.0), "full" + SWAPPED: row(10.0), "weak-ours": row(40.0), "weak-ours" + SWAPPED: row(0.0),
            "query-free": row(35.0), "cgbm": row(55.0), "weak-paper": row(20.0)}
    diffs = {k: diff for k in ("full - query-free", "full - cgbm", "weak-ours - query-free", "weak-ours - weak-paper")}
    checks = targets(rows, diffs)
    assert checks["full >= query-free + 10"]["met"] and not checks["weak-ours >= query-free + 10"]["met"]
    assert not checks["full >= cgbm (tuned)"]["met"] and checks["weak-ours >= weak-paper (tuned)"]["met"]
    assert checks["full swapped <= 0.3 x true"]["value"] == pytest.approx(0.2)
    assert checks["full swapped <= 0.3 x true"]["met"]
    assert not checks["weak-ours >= 0.85 x full"]["met"]
    assert checks["weak-ours >= 0.85 x full"]["value"] == pytest.approx(0.8)
    rows["weak-ours"] = row(30.0)  # below query-free: its swapped 0 is no collapse
    assert not targets(rows, diffs)["weak-ours swapped <= 0.3 x true"]["met"]


def test_a_margin_whose_paired_interval_reaches_the_line_is_met_but_not_established():
    row = lambda v: {"mean": {"average": v}}  # noqa: E731
    rows = {"full": row(67.2), "cgbm": row(64.4), "query-free": row(50.0)}
    diffs = {"full - cgbm": {"lo": -0.3, "hi": 5.9, "above_zero": False},
             "full - query-free": {"lo": 9.5, "hi": 25.0, "above_zero": True}}
    checks = targets(rows, diffs)
    assert [verdict(checks[k]) for k in ("full >= cgbm (tuned)", "full >= query-free + 10")] == \
        ["met, CI not above 0", "met, CI not above 10"]
    diffs["full - cgbm"]["lo"], diffs["full - query-free"]["lo"] = 0.4, 10.5
    assert {verdict(c) for c in targets(rows, diffs).values()} == {"met"}
    rows["full"] = row(59.0)  # below query-free + 10 and below CGBM: missed, whatever the interval
    assert {verdict(c) for c in targets(rows, diffs).values()} == {"MISSED"}


def _run_json(path, selection, history, best_step):
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "run.json"), "w") as fh:
        json.dump({"selection": selection, "best_step": best_step, "extra": {"validation_history": history}}, fh)
    return path


def test_tuning_reads_each_runs_own_selection_score_and_picks_the_best(tmp_path):
    hist = [{"step": 100, "average": 40.0, "objective": 0.9}, {"step": 200, "average": 55.0, "objective": 0.7}]
    full = tuning_score(_run_json(str(tmp_path / "f"), "val_map", hist, 200), 0.003)
    weak = tuning_score(_run_json(str(tmp_path / "w"), "label_free", hist, 100), 0.001)
    assert full == {"learning_rate": 0.003, "criterion": "val_map", "value": 55.0, "step": 200}
    assert weak == {"learning_rate": 0.001, "criterion": "label_free", "value": 0.9, "step": 100}
    trials = [dict(full, learning_rate=0.001, value=50.0), full]
    assert pick_trial(trials)["learning_rate"] == 0.003  # val mAP: highest
    trials = [dict(weak, learning_rate=0.003, value=0.5), weak]
    assert pick_trial(trials)["learning_rate"] == 0.003  # label-free objective: lowest
    assert pick_trial([dict(weak, learning_rate=0.01), weak])["learning_rate"] == 0.001  # tie: smaller rate
    with pytest.raises(RuntimeError, match="no validation at its selected step 300"):
        tuning_score(_run_json(str(tmp_path / "x"), "val_map", hist, 300), 0.003)


TINY = ["--families", "demo", "--seeds", "0", "--geometry", "smoke", "--set", "train.steps=10",
        "--set", "train.validate_every=5", "--set", "train.checkpoint_every=5", "--set", "train.validation_pairs=8"]
STUDY = ["quality", "--methods", "full", "--learning-rates", "0.01"] + TINY  # two runs: kept in the fast suite
BOTH = ["quality", "--methods", "full,weak-ours", "--learning-rates", "0.003,0.01"] + TINY


def _page_without_times(path):
    with open(path) as fh:
        return [line for line in fh if " min |" not in line]  # provenance rows end with the measured time


def test_one_command_writes_the_whole_page_and_a_second_call_reproduces_it(tmp_path, capsys):
    out, page = str(tmp_path / "study"), str(tmp_path / "QUALITY.md")
    assert cli.main(STUDY + ["--out", out, "--report", page]) == 0
    # each run shows Keras's progress (here, not a terminal: a line per validation, with its val average)
    assert capsys.readouterr().out.count("val_average") >= 2 * 2
    with open(page) as fh:
        first = fh.read()
    # every part of the page comes from the study: rows, controls, tuning, provenance
    for text in ("| ours full | ", "| ours full, swapped query |", "| Query-free |", "| Window matcher |",
                 "| demo | ours full | val_map | 0.01: ", "data seed 20261207", "| ours full − Query-free |",
                 "config digest", "* full >= query-free + 10: "):
        assert text in first, text
    assert os.listdir(os.path.join(out, "draw-0", "runs", "demo", "full")) == ["lr-0.01"]
    assert os.listdir(os.path.join(out, "draw-20261207", "runs", "demo")) == ["full"]
    # resumed: nothing is trained again and the page is the same, byte for byte
    stamp = {p: os.path.getmtime(p) for p in (os.path.join(r, "run.json") for r, _, f in os.walk(out) if "run.json" in f)}
    capsys.readouterr()
    assert cli.main(STUDY + ["--out", out, "--report", page]) == 0
    assert "[quality] demo: tuning" not in capsys.readouterr().out
    assert all(os.path.getmtime(p) == t for p, t in stamp.items())
    with open(page) as fh:
        assert fh.read() == first
    # the same study asked for with --finished-only (nothing trained) writes the same page
    assert cli.main(STUDY + ["--out", out, "--report", page, "--finished-only"]) == 0
    with open(page) as fh:
        assert fh.read() == first
    # a study asked for with more seeds than finished says which rows it left out
    assert cli.main(STUDY + ["--out", out, "--report", page, "--finished-only", "--seeds", "0,1"]) == 0
    with open(page) as fh:
        text = fh.read()
    assert "## Not finished yet" in text and "* demo: full seed 1, full+swapped seed 1" in text


@pytest.mark.slow
def test_a_family_remade_from_scratch_gives_the_same_page_but_its_times(tmp_path):
    # full and weak, each tuned over two rates; then the family's folders deleted and made again
    out, page = str(tmp_path / "study"), str(tmp_path / "QUALITY.md")
    assert cli.main(BOTH + ["--out", out, "--report", page]) == 0
    first = _page_without_times(page)
    assert any("| demo | ours weak (ours) | label_free | 0.003: " in line for line in first)
    assert sorted(os.listdir(os.path.join(out, "draw-0", "runs", "demo", "weak-ours"))) == ["lr-0.003", "lr-0.01"]
    shutil.rmtree(out)
    assert cli.main(BOTH + ["--out", out, "--report", page]) == 0
    assert _page_without_times(page) == first


def test_unknown_methods_and_bad_grids_are_refused_before_anything_runs(tmp_path, capsys):
    out = str(tmp_path / "s")
    assert cli.main(["quality", "--out", out, "--families", "demo", "--methods", "ful"]) == 2
    assert "--methods: unknown method 'ful'" in capsys.readouterr().err
    assert cli.main(["quality", "--out", out, "--families", "demo", "--learning-rates", "0,0.1"]) == 2
    assert "--learning-rates" in capsys.readouterr().err
    assert cli.main(["quality", "--out", out, "--families", "demo", "--dim", "0"]) == 2
    assert "--dim: give a positive feature dim, got 0" in capsys.readouterr().err
    assert not os.path.exists(out)


def test_finished_only_leaves_out_rows_whose_tuning_did_not_finish(tmp_path):
    study = Study(str(tmp_path), ["demo"], [0], ["full"], geometry="smoke", finished_only=True)
    with pytest.raises(FileNotFoundError):
        study.rate("demo", METHODS["full"], print)
    assert os.listdir(tmp_path) == []  # no tuning data was made
    assert Study(str(tmp_path), ["demo"], [0], ["full"], tune=False).rate("demo", METHODS["cgbm"], print) == (0.003, False)


def test_finished_only_on_an_empty_study_trains_nothing(tmp_path):
    study = Study(str(tmp_path), ["substates"], [0], ["full"], finished_only=True)
    lines = []
    assert study.run(progress=lines.append) == {}
    assert lines == ["[quality] substates: nothing finished, left out"]
    assert os.listdir(tmp_path) == []
    assert study.unfinished == {"substates": ["every row"]}


def test_the_study_draws_its_data_with_the_pipelines_feature_stage(tmp_path):
    """Study.prepare_data is orchestrator.featuregen on the study's own seed, dim and geometry."""
    study = Study(str(tmp_path), ["substates"], [0], ["full"], dim=48, benchmark_splits="/b")
    assert study.feature_source(20261207, "substates") == FeatureSource(
        family="substates", geometry="benchmark", seed=20261207, dim=48, splits="/b")
    assert study.feature_source(0, "benchmark") == FeatureSource(  # an older study's family: demo on the benchmark
        family="demo", geometry="benchmark", seed=0, dim=48, splits="/b")
    smoke = Study(str(tmp_path), ["shots"], [0], ["full"], geometry="smoke", benchmark_splits="/b")
    assert smoke.feature_source(3, "shots") == FeatureSource(family="shots", geometry="smoke", seed=3, dim=32)
    with pytest.raises(InputError, match="the benchmark geometry needs --benchmark-splits DIR"):
        Study(str(tmp_path), ["shots"], [0], ["full"]).prepare_data(0, "shots")
    assert os.listdir(tmp_path) == []  # refused before anything was made


def test_the_page_lists_the_tunings_its_rows_use_not_every_one_the_folder_holds(tmp_path):
    study = Study(str(tmp_path), ["demo"], [0], ["cgbm", "weak-ours-no-self-target", "full", "paper-size-full"])
    assert study.tuned_names() == [n for n in METHODS if n in {"full", "weak-ours", "cgbm", "paper-size-full"}]
    assert Study(str(tmp_path), ["demo"], [0], ["full"]).tuned_names() == ["full"]


def test_a_kept_result_says_tuned_when_this_study_picked_its_rate(tmp_path):
    """A row kept from an untuned study (its config's rate) is the same training the grid picks when
    it picks that rate: the page must call it tuned, and untuned again for an untuned study."""
    study = Study(str(tmp_path), ["demo"], [0], ["paper-size-full"], geometry="smoke")
    kept = _result("paper-size-full", np.linspace(0, 1, 8), learning_rate=0.001, tuned=False, seed=0)
    path = study.result_path(study.reporting_seed, "demo", "paper-size-full", 0.001, 0)
    write_json_atomic(path, kept)
    method = METHODS["paper-size-full"]
    assert study.score("demo", method, 0.001, True, 0, False) == dict(kept, tuned=True)
    assert study.score("demo", method, 0.001, False, 0, False) == kept
    assert read_json(path, "result") == kept  # the kept file itself is not rewritten
