"""Training: schedule, optimizer, loss wiring, 2 logical CPU replicas, and exact resume."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

from helpers import records as F
from helpers.records import TINY_DIM as DIM
from vreloc_tf.config import load_config
from vreloc_tf.errors import InputError
from vreloc_tf.training.fit import make_optimizer, schedule

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def data_dir(tiny_data_dir):
    return tiny_data_dir


def _run_script(body: str, *args) -> dict:
    """Run a training script in a fresh Python (device set-up and op determinism are per process)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(body), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stdout


def test_schedule_validates_at_every_validate_every_and_at_the_end():
    def sched(steps, every):
        return schedule(load_config("tiny", [f"train.steps={steps}", f"train.validate_every={every}"]))

    assert sched(600, 100) == (100, 6)
    assert sched(250, 100) == (50, 5)
    assert sched(5, 100) == (5, 1)
    with pytest.raises(ValueError, match="train.steps"):
        schedule(load_config("tiny"), steps=0)


def test_learning_rate_is_staircase_decay_and_clipping_is_global():
    cfg = load_config("paper_full")
    opt = make_optimizer(cfg)
    for step in (0, 1, 199, 200, 399, 400, 650):
        opt.iterations.assign(step)
        assert float(opt.learning_rate) == pytest.approx(1e-3 * 0.1 ** (step // 200), rel=1e-6)
    assert opt.global_clipnorm == 5.0


def test_trainer_loss_is_total_loss_at_the_optimizer_step(data_dir):
    from vreloc_tf.data.input_pipeline import load_training_index, training_dataset
    from vreloc_tf.model.losses import total_loss
    from vreloc_tf.model.functional import build_model
    from vreloc_tf.training.fit import RelocTrainer

    cfg = load_config("tiny", ["train.batch_size=4"])
    trainer = RelocTrainer(cfg, build_model(cfg, DIM))
    trainer.compile(optimizer=make_optimizer(cfg))
    assert trainer.student_average is None  # full supervision has no self target
    batch = next(iter(training_dataset(cfg, load_training_index(cfg, data_dir), DIM, 1, 0, 1)))
    out = trainer(batch, training=False)
    got = float(trainer.compute_loss(x=batch, y_pred=out))
    want = float(total_loss(cfg, batch, out["probabilities"], 0))
    assert got == pytest.approx(want, rel=1e-6)
    assert set(out) == {"probabilities", "attention", "self_attention"}


def test_weak_ours_trainer_targets_the_segments_of_its_running_average(data_dir):
    """compute_loss = total_loss with batch["self_target"] = the average's Eq. 20 segments."""
    from vreloc_tf.data.input_pipeline import load_training_index, training_dataset
    from vreloc_tf.model.losses import total_loss
    from vreloc_tf.model.functional import INPUT_NAMES, build_model
    from vreloc_tf.training.fit import RelocTrainer

    cfg = load_config("tiny", ["supervision=weak", "train.batch_size=4", "loss.self_target_start=0",
                               "loss.self_target_ramp_steps=0", "loss.self_target_weight=0.5"])
    trainer = RelocTrainer(cfg, build_model(cfg, DIM))
    trainer.compile(optimizer=make_optimizer(cfg))
    assert trainer.student_average is not None
    assert len(trainer.non_trainable_weights) == len(trainer.net.non_trainable_weights) + len(
        trainer.net.trainable_weights)  # the averages travel with the trainer's weights (backups), not the net's
    batch = next(iter(training_dataset(cfg, load_training_index(cfg, data_dir), DIM, 1, 0, 1)))
    out = trainer(batch, training=False)
    segments = trainer.student_average.segments(trainer.net, {k: batch[k] for k in INPUT_NAMES},
                                                cfg.decode.full_max_length)
    want = float(total_loss(cfg, dict(batch, self_target=segments), out["probabilities"], 0))
    assert float(trainer.compute_loss(x=batch, y_pred=out)) == pytest.approx(want, rel=1e-6)
    assert want != pytest.approx(float(total_loss(cfg, batch, out["probabilities"], 0)), rel=1e-4)


TWO_REPLICAS = """
import json, sys
from vreloc_tf.training.strategy import split_cpu
split_cpu(2)
import keras, numpy as np
from vreloc_tf.config import load_config
from vreloc_tf.data.artifacts import Dataset
from vreloc_tf.training.run import train

class Probe(keras.callbacks.Callback):
    losses, spread, devices, n = [], None, set(), 0
    def on_epoch_end(self, epoch, logs=None):
        self.losses.append(float(logs["loss"]))
    def on_train_end(self, logs=None):
        variables = list(self.model.net.trainable_variables) + list(self.model.optimizer.variables)
        spread = 0.0
        for v in variables:
            values = v.value.values
            self.n = len(values)
            self.devices |= {x.device for x in values}
            spread = max(spread, max(float(np.max(np.abs(x.numpy() - values[0].numpy()))) for x in values))
        self.spread = spread

cfg = load_config("tiny", ["data.feature_dim=null", "train.steps=12", "train.validate_every=4", "train.checkpoint_every=6",
                           "train.batch_size=8", "train.learning_rate=0.01", "train.validation_pairs=8"])
probe = Probe()
m = train(cfg, Dataset.open(sys.argv[1]), sys.argv[2], devices=2, callbacks=[probe], verbose=2).manifest

print(json.dumps({"losses": probe.losses, "spread": probe.spread, "replicas_in_values": probe.n,
                  "devices": sorted(probe.devices), "replicas": m.extra["replicas"], "steps": m.steps}))
"""


def test_two_logical_cpu_replicas_train_with_identical_weights(data_dir, tmp_path):
    from vreloc_tf.data.artifacts import Dataset, Run

    out = str(tmp_path / "run")
    report, stdout = _run_script(TWO_REPLICAS, data_dir, out)
    assert report["replicas"] == 2 and report["replicas_in_values"] == 2 and len(report["devices"]) == 2
    assert report["spread"] == 0.0  # every mirrored variable holds the same value on both replicas
    assert report["steps"] == 12
    losses = report["losses"]
    assert losses[-1] < losses[0], losses
    # the run folder
    run = Run.open(out)
    model, cfg, manifest = run.load_model(), run.config, run.manifest
    assert manifest.feature_dim == DIM and cfg.data.feature_dim is None  # null: the data decides
    assert manifest.supervision == "full" and manifest.steps == 12 and manifest.data_dir == data_dir
    assert manifest.data_source == Dataset.open(data_dir).training_source()
    assert manifest.best_step in (4, 8, 12) and manifest.best_val_average is not None
    assert sorted(os.listdir(os.path.join(out, "checkpoints"))) == ["step-000006.keras", "step-000012.keras"]
    assert any(f.startswith("events") for _, _, fs in os.walk(os.path.join(out, "logs")) for f in fs)
    assert model.input["query"].shape[-1] == DIM
    assert "trained 12 steps in" in stdout and f"model.keras = step {manifest.best_step}" in stdout


TWO_REPLICAS_WEAK = """
import json, sys
from vreloc_tf.training.strategy import split_cpu
split_cpu(2)
import keras, numpy as np
from vreloc_tf.config import load_config
from vreloc_tf.data.artifacts import Dataset
from vreloc_tf.training.run import train
# weak "ours": the student's running average is updated in the replica context; it must stay mirrored
weak = load_config("tiny", ["supervision=weak", "data.feature_dim=null", "train.steps=4", "train.validate_every=4",
                            "train.checkpoint_every=4", "train.batch_size=8", "train.validation_pairs=8",
                            "loss.self_target_start=0", "loss.self_target_ramp_steps=0"])

def spread(variables):
    return max(float(np.max(np.abs(x.numpy() - v.value.values[0].numpy()))) for v in variables for x in v.value.values)

class AverageProbe(keras.callbacks.Callback):
    def on_train_end(self, logs=None):
        averages, student = self.model.student_average.averages, self.model.net.trainable_variables
        # the student's weights went into the saved model and back (cross-replica assigns): still mirrored
        self.spread, self.student_spread = spread(averages), spread(student)
        self.average = [a.value.values[0].numpy() for a in averages]
        self.moved = max(float(np.max(np.abs(a - v.value.values[0].numpy()))) for a, v in zip(self.average, student))

average_probe = AverageProbe()
out = sys.argv[2] + "-weak"
train(weak, Dataset.open(sys.argv[1]), out, devices=2, callbacks=[average_probe], verbose=0)
saved = keras.saving.load_model(out + "/checkpoints/step-000004.keras").trainable_variables
print(json.dumps({"average_spread": average_probe.spread, "average_moved": average_probe.moved,
                  "student_spread": average_probe.student_spread,
                  "saved_diff": max(float(np.max(np.abs(s.numpy() - a))) for s, a in zip(saved, average_probe.average))}))
"""


@pytest.mark.slow  # one more two-replica training (~30 s on 2 cores)
def test_the_running_average_of_weak_ours_stays_mirrored_on_two_replicas(data_dir, tmp_path):
    report, _ = _run_script(TWO_REPLICAS_WEAK, data_dir, str(tmp_path / "run"))
    assert report["average_spread"] == 0.0  # updated in the replica context, the same on both replicas
    assert report["average_moved"] > 0.0  # and it lags behind the student
    assert report["student_spread"] == 0.0
    assert report["saved_diff"] == 0.0  # the saved model is the average (loss.self_target_as_model)


RESUME = """
import json, sys, shutil
import keras, numpy as np, tensorflow as tf
tf.config.experimental.enable_op_determinism()
from vreloc_tf.config import load_config
from vreloc_tf.data.artifacts import Dataset
from vreloc_tf.training.run import train

data, a, b = Dataset.open(sys.argv[1]), *sys.argv[2:4]
# weak "ours" holds the most state: the teacher in tf.data and the student's running average
cfg = load_config("tiny", ["supervision=weak", "data.feature_dim=8", "train.steps=6", "train.validate_every=2",
                           "train.checkpoint_every=6", "train.batch_size=8", "train.lr_decay_steps=4",
                           "loss.self_target_start=1", "loss.self_target_ramp_steps=2", "train.validation_pairs=8"])

class Kill(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) == 3:
            raise KeyboardInterrupt("killed at step 3")

ma = train(cfg, data, a, verbose=0).manifest
try:
    train(cfg, data, b, callbacks=[Kill()], verbose=0)
    raise SystemExit("the kill did not happen")
except KeyboardInterrupt:
    pass
mb = train(cfg, data, b, verbose=0).manifest
again = train(cfg, data, b, verbose=0).manifest  # a finished run is left as it is
wa = keras.saving.load_model(a + "/checkpoints/step-000006.keras").get_weights()
wb = keras.saving.load_model(b + "/checkpoints/step-000006.keras").get_weights()
ba = keras.saving.load_model(a + "/model.keras").get_weights()
bb = keras.saving.load_model(b + "/model.keras").get_weights()
print(json.dumps({"steps": [ma.steps, mb.steps, again.steps], "resumed_from": mb.extra["resumed_from_step"],
                  "best": [ma.best_step, mb.best_step, ma.best_val_average, mb.best_val_average],
                  "diff": max(float(np.max(np.abs(x - y))) for x, y in zip(wa, wb)),
                  "best_diff": max(float(np.max(np.abs(x - y))) for x, y in zip(ba, bb))}))
"""


def test_a_killed_run_resumes_to_the_same_weights(data_dir, tmp_path):
    """Tolerance: exact (0.0) with tf.config.experimental.enable_op_determinism()."""
    report, _ = _run_script(RESUME, data_dir, str(tmp_path / "a"), str(tmp_path / "b"))
    assert report["steps"] == [6, 6, 6]
    assert report["resumed_from"] == 2  # the last epoch boundary before the kill at step 3
    assert report["diff"] == 0.0 and report["best_diff"] == 0.0
    best_step_a, best_step_b, best_val_a, best_val_b = report["best"]
    assert best_step_a == best_step_b and best_val_a == best_val_b


def test_resuming_with_another_config_is_refused(data_dir, tmp_path):
    from vreloc_tf.data.artifacts import Dataset
    from vreloc_tf.training.run import prepare_run_folder

    out, dataset = str(tmp_path / "run"), Dataset.open(data_dir)
    prepare_run_folder(load_config("tiny"), out, dataset)
    with pytest.raises(InputError, match="different config.*--overwrite"):
        prepare_run_folder(load_config("tiny", ["seed=3"]), out, dataset)
    prepare_run_folder(load_config("tiny", ["seed=3"]), out, dataset, overwrite=True)
    assert load_config(os.path.join(out, "config.yaml")).seed == 3


def test_the_data_decides_the_feature_dim_and_the_config_checks_it(data_dir, tmp_path):
    from vreloc_tf.data.artifacts import Dataset
    from vreloc_tf.training.run import train

    with pytest.raises(InputError) as err:  # configs/tiny.yaml expects 32-d features
        train(load_config("tiny"), Dataset.open(data_dir), str(tmp_path / "run"))
    assert f"data.feature_dim is 32 but {data_dir} holds {DIM}-d features" in str(err.value)
    assert f"--set data.feature_dim={DIM}" in str(err.value)
    assert not os.path.exists(tmp_path / "run")  # refused before anything was written
    # (data.feature_dim=null, "take the data's", trains in the two-replica test below)


def test_a_finished_run_folder_refuses_data_of_another_dim_or_source(tiny_run, data_dir, tmp_path):
    """Re-running `vreloc train` on a finished run with other data: exit 2 unless --overwrite (a clean start)."""
    import shutil

    from vreloc import cli
    from vreloc_tf.data.artifacts import Dataset, Run

    run = str(tmp_path / "run")
    shutil.copytree(tiny_run, run)
    same_dim_other_source = F.make_data_dir(str(tmp_path / "other"), dim=DIM, seed=5,
                                            source={"job": "ingest-activitynet", "features": "other.hdf5"})
    other_dim = F.make_data_dir(str(tmp_path / "d6"), dim=6, train_classes=2, per_class=4)
    base = ["train", "--config", "tiny", "--out", run, "--steps", "4", "--set", "train.batch_size=4",
            "--set", "train.validate_every=2", "--set", "train.validation_pairs=6"]
    cases = [(same_dim_other_source, [f"data.feature_dim={DIM}"], "another source"),
             (other_dim, ["data.feature_dim=null"], f"trained on {DIM}-d features .* holds 6-d features")]
    for data, sets, message in cases:
        with pytest.raises(InputError, match=message):
            cli.main(["--debug", *base, "--data", data] + [a for s in sets for a in ("--set", s)])
    assert Run.open(run).manifest.data_dir == data_dir  # untouched
    assert cli.main([*base, "--data", other_dim, "--set", "data.feature_dim=null", "--overwrite"]) == 0
    run_after = Run.open(run)
    assert run_after.manifest.feature_dim == 6 and run_after.manifest.data_dir == other_dim
    assert run_after.manifest.data_source == Dataset.open(other_dim).training_source()
    assert run_after.load_model().input["query"].shape[-1] == 6


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_workers_train_under_multi_worker_mirrored_strategy(data_dir, tmp_path):
    """The documented launch: the same command twice with TF_CONFIG; worker 0 writes the run."""
    workers = [f"localhost:{_free_port()}", f"localhost:{_free_port()}"]
    procs = []
    for index in (0, 1):
        tf_config = json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})
        env = dict(os.environ, TF_CONFIG=tf_config, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "vreloc", "train", "--config", "tiny", "--data", data_dir,
             "--out", str(tmp_path / f"w{index}"), "--steps", "4", "--set", "train.batch_size=8",
             "--set", f"data.feature_dim={DIM}",
             "--set", "train.validate_every=2", "--set", "train.validation_pairs=8"],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=400)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    with open(tmp_path / "w0" / "run.json") as fh:
        manifest = json.load(fh)
    assert manifest["steps"] == 4 and manifest["extra"]["strategy"] in ("MultiWorkerMirroredStrategy", "CollectiveAllReduceStrategy")
    assert manifest["extra"]["replicas"] == 2
    assert not (tmp_path / "w1" / "run.json").exists()  # only the chief writes the run folder
    summaries = [line for out in outputs for line in out.splitlines() if line.startswith("trained 4 steps")]
    assert len(summaries) == 2


def test_label_free_selection_reads_no_reference_labels(tiny_run, data_dir):
    """The weak criterion is the objective on val pairs: garbage in the references' ground-truth
    columns of the plan (what scoring reads) leaves it unchanged, for both weak variants."""
    import numpy as np

    from vreloc_tf.data.artifacts import Run
    from vreloc_tf.data.entry_index import load_index
    from vreloc_tf.evaluation.scoring import inference_probabilities
    from vreloc_tf.data.input_pipeline import evaluation_plan
    from vreloc_tf.data.pairs import pairs_from_index
    from vreloc_tf.model.student_average import StudentAverage
    from vreloc_tf.training.fit import _average_segments, objective_on_plan

    model = Run.open(tiny_run).load_model()
    index = load_index(data_dir, "val")
    plan = evaluation_plan(index, pairs_from_index(index, 0)["pairs"])
    garbage = plan.copy()
    garbage[:, 6:8] = np.random.default_rng(0).integers(0, 3, size=(len(plan), 2))
    average = StudentAverage(model)  # weak "ours"' default blends in the running average's segments
    for variant, extra in (("ours", []), ("ours", ["loss.self_target_weight=0"]), ("paper", [])):
        cfg = load_config("tiny", ["supervision=weak", f"loss.weak_variant={variant}", *extra])
        clean = objective_on_plan(model, index, plan, DIM, cfg, step=1000, average=average)
        assert np.isfinite(clean) and clean > 0
        assert objective_on_plan(model, index, garbage, DIM, cfg, step=1000, average=average) == clean
    # its tf.functions are made once per model: another validation traces nothing new
    weak = load_config("tiny", ["supervision=weak"])
    functions = (inference_probabilities(model), _average_segments(average, model, weak.decode.full_max_length))
    traced = [f.experimental_get_tracing_count() for f in functions]
    objective_on_plan(model, index, plan, DIM, weak, step=1000, average=average)
    assert [f.experimental_get_tracing_count() for f in functions] == traced
    with pytest.raises(ValueError, match="weak"):
        objective_on_plan(model, index, plan, DIM, load_config("tiny"), step=0)
    with pytest.raises(ValueError, match="StudentAverage"):
        objective_on_plan(model, index, plan, DIM, load_config("tiny", ["supervision=weak"]), step=0)


WEAK_TINY = ["supervision=weak", "data.feature_dim=null", "train.steps=4", "train.batch_size=4",
             "train.validate_every=2", "train.validation_pairs=6", "train.checkpoint_every=2",
             "loss.self_target_momentum=0.5"]  # an average far enough from the student to tell them apart


def _end_weights_probe():
    """A callback that keeps the student's and its running average's weights when training ends."""
    import keras

    class EndWeights(keras.callbacks.Callback):
        def on_train_end(self, logs=None):
            self.student = [v.numpy() for v in self.model.net.trainable_variables]
            self.average = [a.numpy() for a in self.model.student_average.averages]

    return EndWeights()


@pytest.fixture(scope="module")
def weak_run(data_dir, tmp_path_factory):
    """A weak run folder trained for 4 steps (do not modify), and the weights at its end."""
    from vreloc_tf.data.artifacts import Dataset
    from vreloc_tf.training.run import train

    run, probe = str(tmp_path_factory.mktemp("weak") / "a"), _end_weights_probe()
    trained = train(load_config("tiny", WEAK_TINY), Dataset.open(data_dir), run, callbacks=[probe], verbose=0)
    assert trained.path == run and trained.config.digest() == load_config("tiny", WEAK_TINY).digest()
    return run, trained.manifest, probe


@pytest.mark.slow  # one more training (~20 s on 2 cores): `make test` keeps the resume test's bit-for-bit check
def test_weak_training_is_deterministic(weak_run, data_dir, tmp_path):
    """The same weak config trains the same weights twice (the teacher runs inside tf.data)."""
    import keras
    import numpy as np

    from vreloc_tf.data.artifacts import Dataset, Run
    from vreloc_tf.training.run import train

    run, _, _ = weak_run
    train(load_config("tiny", WEAK_TINY), Dataset.open(data_dir), str(tmp_path / "b"), verbose=0)
    weights = [keras.saving.load_model(Run.open(r).model_file).get_weights() for r in (run, str(tmp_path / "b"))]
    for x, y in zip(*weights):
        np.testing.assert_array_equal(x, y)


def test_weak_runs_are_selected_without_labels(weak_run, data_dir, capsys):
    """A weak run records its label-free selection; evaluation reports it and can take the last step instead."""
    from vreloc.commands.evaluate import print_results
    from vreloc_tf.data.artifacts import Dataset, Run
    from vreloc_tf.evaluation.scoring import evaluate_run

    run, manifest, _ = weak_run
    run, data = Run.open(run), Dataset.open(data_dir)
    assert manifest.selection == "label_free" and manifest.decode == "full"
    history = manifest.extra["validation_history"]
    assert [h["step"] for h in history] == [2, 4] and all("objective" in h for h in history)
    best = min(history, key=lambda h: h["objective"])["step"]
    assert manifest.best_step == best
    result = evaluate_run(run, data, "test")
    assert result["selection"] == "label_free" and result["selected_step"] == best
    assert result["method"] == "ours weak" and result["decode"] == "full"
    last = evaluate_run(run, data, "test", checkpoint="last")
    assert last["selection"] == "checkpoint last" and last["selected_step"] == 4
    # and says that the weights are the running average (loss.self_target_as_model), checkpoints too
    assert result["model_weights"] == last["model_weights"] == "student_average"
    print_results(result)
    assert f"checkpoint of step {best} (the student's running average), chosen by selection rule 'label_free'" \
        in capsys.readouterr().out


def test_weak_ours_saves_and_validates_its_running_average(weak_run):
    """With loss.self_target_as_model (the default) the saved model is the average, not the student."""
    import keras
    import numpy as np

    run, manifest, probe = weak_run
    saved = keras.saving.load_model(os.path.join(run, "checkpoints", "step-000004.keras"))
    for variable, average in zip(saved.trainable_variables, probe.average, strict=True):
        np.testing.assert_array_equal(variable.numpy(), average)
    assert max(float(np.max(np.abs(s - a))) for s, a in zip(probe.student, probe.average)) > 1e-4
    assert manifest.extra["model_weights"] == "student_average"
    assert all("student_val_average" in h for h in manifest.extra["validation_history"])


def test_saved_weights_is_the_average_only_for_weak_ours_with_self_target_as_model():
    import numpy as np

    from vreloc_tf.model.functional import build_model
    from vreloc_tf.training.fit import RelocTrainer, saved_weights

    for overrides, average_saved in (([], True), (["loss.self_target_as_model=false"], False)):
        cfg = load_config("tiny", ["supervision=weak", "loss.self_target_momentum=0.5", *overrides])
        trainer = RelocTrainer(cfg, build_model(cfg, DIM))
        own = [v.numpy() + 0.5 for v in trainer.net.trainable_variables]
        for variable, value in zip(trainer.net.trainable_variables, own):
            variable.assign(value)
        trainer.student_average.update(trainer.net)  # halfway between the initial and the moved weights
        with saved_weights(trainer) as net:
            assert net is trainer.net
            want = [a.numpy() for a in trainer.student_average.averages] if average_saved else own
            for variable, value in zip(net.trainable_variables, want, strict=True):
                np.testing.assert_array_equal(variable.numpy(), value)
        for variable, value in zip(trainer.net.trainable_variables, own, strict=True):
            np.testing.assert_array_equal(variable.numpy(), value)
    full = RelocTrainer(load_config("tiny"), build_model(load_config("tiny"), DIM))
    with saved_weights(full) as net:  # full supervision: no average, the student
        assert net is full.net
