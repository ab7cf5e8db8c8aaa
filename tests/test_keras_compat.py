"""The private Keras API we rely on is isolated in vreloc_tf.model.keras_compat, and these checks fail loudly if it moves."""
import inspect

import keras

from vreloc_tf.model.keras_compat import SYMBOLIC_BUILD_HOOK, PrebuiltFit


def test_keras_fit_still_calls_the_hook_prebuiltfit_overrides():
    hook = getattr(keras.Model, SYMBOLIC_BUILD_HOOK, None)
    assert callable(hook), (
        f"keras {keras.__version__} has no Model.{SYMBOLIC_BUILD_HOOK}: vreloc_tf.model.keras_compat.PrebuiltFit no longer "
        f"overrides anything, and multi-worker training may fail to start (see that module's docstring)")
    assert list(inspect.signature(hook).parameters) == list(inspect.signature(PrebuiltFit._maybe_symbolic_build)
                                                            .parameters), (
        f"keras {keras.__version__} changed the signature of Model.{SYMBOLIC_BUILD_HOOK}; update PrebuiltFit")
    assert SYMBOLIC_BUILD_HOOK in inspect.getsource(keras.Model.fit), (
        f"keras {keras.__version__}: Model.fit no longer calls {SYMBOLIC_BUILD_HOOK}; revisit "
        f"vreloc_tf.model.keras_compat (run `pytest -m slow tests/test_training.py` for the multi-worker check)")


def test_prebuilt_fit_builds_the_optimizer_without_looking_at_data():
    from vreloc_tf.config import load_config
    from vreloc_tf.model.functional import build_model
    from vreloc_tf.training.fit import RelocTrainer, make_optimizer

    cfg = load_config("tiny")
    trainer = RelocTrainer(cfg, build_model(cfg, 4))
    trainer.compile(optimizer=make_optimizer(cfg))
    assert not trainer.optimizer.built
    getattr(trainer, SYMBOLIC_BUILD_HOOK)(iterator=object())  # an iterator it must not touch
    assert trainer.optimizer.built and len(trainer.optimizer.variables) > 1


def test_seed_generators_are_found_through_public_attributes_only():
    """Every dropout seed state of the model (what exact resume restores) is reached by the public walk."""
    from vreloc_tf.config import load_config
    from vreloc_tf.model.functional import build_model
    from vreloc_tf.training.fit import RelocTrainer, seed_generators

    cfg = load_config("tiny")
    trainer = RelocTrainer(cfg, build_model(cfg, 4))
    found = [g.state.path for g in seed_generators(trainer)]
    states = [v.path for v in trainer.variables if v.path.endswith("seed_generator_state")]
    assert sorted(found) == sorted(states) and len(found) == 5  # 2 Dropouts, 3 LSTM cells (BiLSTM + LSTM)
