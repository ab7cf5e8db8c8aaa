"""`vreloc train` / `vreloc evaluate` end to end on tiny data; scores re-derived pair by pair."""
import json
import os

import numpy as np
import pytest

from helpers import records as F
from vreloc.cli import main as cli_main
from vreloc_tf.evaluation import metrics
from vreloc_tf.data import schema
from vreloc_tf.data.artifacts import Dataset, Run
from vreloc_tf.model.decoding import decode_full_np, decode_weak_np
from vreloc_tf.errors import InputError
from vreloc_tf.evaluation.scoring import evaluate_run


@pytest.fixture(scope="module")
def data_dir(tiny_data_dir):
    return tiny_data_dir


@pytest.fixture(scope="module")
def run_dir(tiny_run):
    """A run trained by `vreloc train` (the CLI) on ``data_dir``."""
    return tiny_run


def _by_hand(run_dir, data_dir, pairs_file, mode):
    """Each pair alone (no padding, batch of one), decoded with the NumPy twin, IoU by hand."""
    run = Run.open(run_dir)
    model, cfg = run.load_model(), run.config
    recs = {r.entry_index: r for r in schema.read_records(data_dir, "test")}
    with open(pairs_file) as fh:
        pairs = json.load(fh)["pairs"]
    segments, ious = [], []
    for p in pairs:
        q, r = recs[p["query"]], recs[p["reference"]]
        qf = q.features[q.groundtruth[0]:q.groundtruth[1]]
        probs = model({"query": qf[None], "query_length": np.array([len(qf)], np.int32),
                       "reference": r.features[None], "reference_length": np.array([r.length], np.int32)},
                      training=False)["probabilities"].numpy()
        if mode == "full":
            s, e, _ = decode_full_np(probs, [r.length], cfg.decode.full_max_length)
        else:
            s, e, _ = decode_weak_np(probs, [r.length], cfg.decode.weak_max_length)
        segments.append((int(s[0]), int(e[0])))
        ious.append(metrics.temporal_iou(s[0], e[0], *r.groundtruth))
    return segments, metrics.map_at_1(ious)


@pytest.mark.parametrize("mode", ["full", "weak"])
def test_evaluate_equals_a_pair_by_pair_computation(run_dir, data_dir, tmp_path, mode):
    pairs = str(tmp_path / "pairs.json")
    result = evaluate_run(Run.open(run_dir), Dataset.open(data_dir), "test", pairs,
                          decode=None if mode == "full" else mode)
    _, want = _by_hand(run_dir, data_dir, pairs, mode)
    for k in metrics.THRESHOLD_KEYS:
        assert result["map_at_1"][k] == pytest.approx(want[k], abs=1e-9)
    assert result["decode"] == mode and result["split"] == "test"
    assert result["method"] == ("ours full" if mode == "full" else "ours full (weak decode)")
    assert result["model_weights"] == "student"  # full supervision saves the model it trains


def test_cli_prints_the_paper_row_and_writes_json(run_dir, data_dir, tmp_path, capsys):
    out = str(tmp_path / "res.json")
    pairs = str(tmp_path / "pairs.json")
    assert cli_main(["evaluate", "--model", run_dir, "--split", "test", "--pairs", pairs, "--json", out]) == 0
    printed = capsys.readouterr().out.splitlines()
    with open(out) as fh:
        result = json.load(fh)
    assert set(result) >= {"method", "split", "pairs", "map_at_1", "average"}
    assert list(result["map_at_1"]) == ["0.5", "0.6", "0.7", "0.8", "0.9"]
    row = next(line for line in printed if line.startswith("ours full"))
    assert row.split()[2:] == [f"{result['map_at_1'][k]:.1f}" for k in metrics.THRESHOLD_KEYS] + \
        [f"{result['average']:.1f}"]
    with open(pairs) as fh:
        assert json.load(fh)["count"] == result["pairs"]
    # report mode: several results as one table
    other = dict(result, method="copy")
    with open(tmp_path / "b.json", "w") as fh:
        json.dump(other, fh)
    assert cli_main(["evaluate", "--table", out, str(tmp_path / "b.json"), "--title", "Table 4 (synthetic)"]) == 0
    table = capsys.readouterr().out
    assert table.startswith("Table 4 (synthetic)") and "copy" in table and "ours full" in table
    # a file holding a list of results (what `baseline --method all --json` writes) joins the table too
    with open(tmp_path / "list.json", "w") as fh:
        json.dump([dict(result, method="first"), dict(result, method="second")], fh)
    assert cli_main(["evaluate", "--table", out, str(tmp_path / "list.json")]) == 0
    table = capsys.readouterr().out
    assert "first" in table and "second" in table
    with open(tmp_path / "bad.json", "w") as fh:
        json.dump([{"no": "metrics"}], fh)
    assert cli_main(["evaluate", "--table", str(tmp_path / "bad.json")]) != 0
    assert "bad.json" in capsys.readouterr().err


def test_evaluate_names_a_feature_dim_mismatch_and_missing_arguments(run_dir, tmp_path, capsys):
    other = F.make_data_dir(str(tmp_path / "d6"), dim=6, train_classes=2, per_class=3)
    with pytest.raises(InputError, match="6-d features but the run .* 8-d"):
        evaluate_run(Run.open(run_dir), Dataset.open(other), "test")
    assert cli_main(["evaluate", "--split", "test"]) == 2
    assert "--model" in capsys.readouterr().err
    with pytest.raises(InputError, match="not a finished training run folder .no run.json"):
        Run.open(str(tmp_path))  # the door: `vreloc evaluate` opens --model before it scores


def test_a_corrupt_pair_file_is_one_line_and_exit_2(run_dir, tmp_path, capsys):
    bad = tmp_path / "pairs.json"
    bad.write_text('{"split": "test", "pairs": [{"query": 1, "refer')
    assert cli_main(["evaluate", "--model", run_dir, "--split", "test", "--pairs", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"vreloc evaluate: error: {bad}: not a valid pair list")


def test_a_pair_list_of_a_relabelled_split_is_refused(run_dir, data_dir, tmp_path):
    """The same entries with other video ids (a relabelled split): the recorded video ids catch it."""
    pairs = str(tmp_path / "pairs.json")
    evaluate_run(Run.open(run_dir), Dataset.open(data_dir), "test", pairs)  # writes the pair list
    relabelled = str(tmp_path / "relabelled")
    for split in ("train", "val", "test"):
        records = schema.read_records(data_dir, split)
        for r in records:
            r.video_id = "x" + r.video_id if split == "test" else r.video_id
        F.write_split(relabelled, split, records)
    F.write_manifest(relabelled, F.TINY_DIM, {})
    with pytest.raises(InputError, match="pair 0 recorded query entry .* as video .* it is video 'x"):
        evaluate_run(Run.open(run_dir), Dataset.open(relabelled), "test", pairs)


def test_the_run_folder_defaults_evaluation_to_its_own_data(run_dir, data_dir):
    result = evaluate_run(Run.open(run_dir), split="val")
    assert result["split"] == "val" and result["pairs"] > 0
    assert os.path.exists(os.path.join(run_dir, "config.yaml"))


def test_the_swapped_query_control_scores_the_same_references_with_other_queries(run_dir, data_dir, tmp_path,
                                                                                 capsys):
    from vreloc_tf.data.entry_index import load_index
    from vreloc_tf.evaluation.scoring import predict_segments, resolve_pairs, score_plan
    from vreloc_tf.data.input_pipeline import evaluation_plan
    from vreloc_tf.data.pairs import SWAP_SEED_OFFSET, swap_queries

    pairs = str(tmp_path / "pairs.json")
    plain_json, swap_json = str(tmp_path / "plain.json"), str(tmp_path / "swap.json")
    assert cli_main(["evaluate", "--model", run_dir, "--pairs", pairs, "--json", plain_json]) == 0
    assert cli_main(["evaluate", "--model", run_dir, "--pairs", pairs, "--json", swap_json,
                     "--control", "swapped-query"]) == 0
    printed = capsys.readouterr().out
    with open(plain_json) as fh:
        plain = json.load(fh)
    with open(swap_json) as fh:
        swap = json.load(fh)
    # without --control: no new field, and bit-identical to the pipeline as it was (pairs -> plan -> score)
    assert not {"control", "control_seed", "control_swapped"} & set(plain)
    run = Run.open(run_dir)
    index, plist = resolve_pairs(data_dir, "test", pairs)
    plan = evaluation_plan(index, plist)
    start, end, score = predict_segments(run.load_model(), index, plan, F.TINY_DIM, "full",
                                         run.config.decode.full_max_length)
    before = score_plan(plan, start, end, "ours full", "test")
    # the decoder's score of each answer travels in pair order (Eq. 20's value: a probability product)
    np.testing.assert_allclose(plain["segment_scores"], score, atol=1e-6)
    assert len(plain["segment_scores"]) == plain["pairs"] and 0 < min(score) and max(score) <= 1
    assert plain["map_at_1"] == before["map_at_1"] and plain["average"] == before["average"]
    assert plain["method"] == "ours full" and plain["pairs"] == before["pairs"]
    # with it: named, seeded, every pair swapped, scored on the references' own ground truth
    assert swap["method"] == "ours full (swapped query)" and "ours full (swapped query)" in printed
    assert swap["control"] == "swapped-query" and swap["control_seed"] == SWAP_SEED_OFFSET
    assert swap["control_swapped"] == swap["pairs"] == plain["pairs"]
    swapped = swap_queries(plist, load_index(data_dir, "test"), SWAP_SEED_OFFSET)
    swapped_file = str(tmp_path / "swapped_pairs.json")
    with open(swapped_file, "w") as fh:
        json.dump({"pairs": swapped["pairs"]}, fh)
    _, want = _by_hand(run_dir, data_dir, swapped_file, "full")
    for k in metrics.THRESHOLD_KEYS:
        assert swap["map_at_1"][k] == pytest.approx(want[k], abs=1e-9)
    # another seed is recorded; an unknown control is refused
    other = evaluate_run(Run.open(run_dir), Dataset.open(data_dir), "test", pairs, control="swapped-query",
                         control_seed=7)
    assert other["control_seed"] == 7
    with pytest.raises(InputError, match="unknown control"):
        evaluate_run(Run.open(run_dir), Dataset.open(data_dir), "test", pairs, control="shuffled")
